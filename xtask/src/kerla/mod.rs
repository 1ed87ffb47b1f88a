//! `cargo xtask kerla`: the kext inside the real Kerla.
//!
//! 1. Finds Debian's Rust 1.96, lld, llvm-nm, static BusyBox and QEMU,
//!    installing what is missing ([`toolchain`]).
//! 2. Unpacks Kerla's snapshot (`../shared/kerla/`, or `--kerla-src`) into
//!    `target/kerla/tree`, applies the project's patch series
//!    (`kext/kerla/patches/`) and places the kext in `exts/` ([`tree`]).
//! 3. Builds Kerla with the kext and an initramfs whose init script says
//!    it ran and halts ([`build`]).
//! 4. Boots it once per case (packed and split rings on virtio-pci,
//!    virtio-mmio) with `vblk.selftest=GENERATION` on a fresh raw file;
//!    reads the console: the kext loaded, took the disk with the ring
//!    asked for, the kernel registered its block driver, the self-test
//!    passed, init ran, Kerla halted ([`boot`]).
//! 5. Checks the raw file on the host: the stamp in every sector of the
//!    self-test's regions, zeros elsewhere ([`disk_check`]).
//!
//! Prints one line per boot and a PASS/FAIL verdict; exits 0 only on PASS.

mod boot;
mod build;
mod disk_check;
mod toolchain;
mod tree;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::qemu::{repo_root, Outcome};

pub use build::Profile;

/// Flags of `cargo xtask kerla`.
#[derive(Clone, Debug, clap::Args)]
pub struct KerlaArgs {
    /// Kerla's source: a `git archive` tarball or an unpacked folder
    /// (default: ../shared/kerla/kerla-d8b173a.tar.gz beside the repository).
    #[arg(long, env = "KERLA_SRC")]
    pub kerla_src: Option<PathBuf>,
    /// Cargo profile of the kernel.
    #[arg(long, value_enum, default_value_t = Profile::Release)]
    pub profile: Profile,
    /// Boots to run (default: all): pci-packed, pci-split, mmio-packed.
    #[arg(long, value_delimiter = ',')]
    pub boots: Vec<String>,
    /// A patch applied after the series (repeatable): for experiments, and
    /// for the test that a broken series fails.
    #[arg(long)]
    pub extra_patch: Vec<PathBuf>,
    /// Seconds before a boot that has not halted is killed.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    /// Fail instead of installing missing packages with apt.
    #[arg(long)]
    pub no_install: bool,
    /// Copy Kerla's console to stdout as it runs.
    #[arg(long)]
    pub console: bool,
}

/// The raw disk each boot gets (zeroed): 64 MiB.
const DISK_BYTES: u64 = 64 << 20;

/// How one boot went.
struct BootResult {
    name: &'static str,
    time: Duration,
    problems: Vec<String>,
    host_check: String,
}

/// The init script: proof that the kernel went on to user space after the
/// self-test, then a clean halt (reboot(2) → isa-debug-exit). The marker is
/// echoed in two words so that Kerla's "running init script" line, which
/// shows the script, does not contain it.
fn init_script() -> String {
    let (first, second) = boot::INIT_MARKER
        .rsplit_once(' ')
        .expect("the marker has two words");
    format!("echo '{first}' '{second}'; /bin/busybox poweroff -f")
}

/// Reads one boot's console and disk; every problem found is listed.
fn judge(case: &boot::BootCase, booted: &boot::Booted, disk: &std::path::Path) -> BootResult {
    let console = boot::read_console(&booted.lines);
    let mut problems = Vec::new();
    if !console.kext_loaded {
        problems.push("Kerla never loaded virtio_blk_mq_kext".to_string());
    }
    let ring = if case.packed {
        "Packed ring"
    } else {
        "Split ring"
    };
    match &console.disk_line {
        None => problems.push("the kext took no virtio-blk device".into()),
        Some(line) if !line.contains(ring) => {
            problems.push(format!("the disk is not on a {ring}: {line}"))
        }
        Some(_) => {}
    }
    if !console.registered {
        problems.push("Kerla's kernel registered no block driver".into());
    }
    if console.passed.is_empty() {
        problems.push("no `vblk-selftest: PASS` line".into());
    }
    problems.extend(console.failed.iter().cloned());
    if !console.init_reached {
        problems.push("the init script never ran".into());
    }
    if let Some(panic) = &console.panic {
        problems.push(format!("Kerla panicked: {panic}"));
    }
    match booted.code {
        Some(boot::HALTED) => {}
        Some(code) => problems.push(format!("QEMU exited with {code}, not Kerla's halt")),
        None => problems.push("Kerla did not halt (stopped at boot2dump, or the timeout)".into()),
    }
    let host_check = match std::fs::read(disk) {
        Ok(image) => match disk_check::check_self_test(&image, case.generation) {
            Ok(check) => format!(
                "{} stamped sectors ok, {} other sectors zero",
                check.stamped, check.zero
            ),
            Err(why) => {
                problems.push(format!("disk image: {why}"));
                "FAILED".into()
            }
        },
        Err(e) => {
            problems.push(format!("cannot read the disk image: {e}"));
            "FAILED".into()
        }
    };
    BootResult {
        name: case.name,
        time: booted.time,
        problems,
        host_check,
    }
}

/// The cases `--boots` names (all when empty).
fn chosen_cases(names: &[String]) -> Result<Vec<boot::BootCase>, String> {
    if names.is_empty() {
        return Ok(boot::CASES.to_vec());
    }
    names
        .iter()
        .map(|name| {
            boot::CASES
                .iter()
                .find(|case| case.name == name)
                .copied()
                .ok_or_else(|| {
                    let known: Vec<&str> = boot::CASES.iter().map(|c| c.name).collect();
                    format!("--boots {name}: unknown; known: {}", known.join(", "))
                })
        })
        .collect()
}

/// Runs the task; prints the summary.
pub fn run(args: &KerlaArgs) -> Result<Outcome, String> {
    let start = Instant::now();
    let repo = repo_root();
    let cases = chosen_cases(&args.boots)?;
    let source = tree::Source::locate(args.kerla_src.as_deref(), &repo)?;
    let tools = toolchain::prepare(!args.no_install)?;
    let work = repo.join("target/kerla");
    let tree_dir = work.join("tree");
    let mut patches = tree::series(&repo.join("kext/kerla/patches"))?;
    patches.extend(args.extra_patch.iter().cloned());
    let rebuilt = tree::prepare(&tree_dir, &source, &patches, &repo)?;
    eprintln!(
        "xtask kerla: {} the tree at {} ({} patches), {}",
        if rebuilt { "made" } else { "kept" },
        tree_dir.display(),
        patches.len(),
        tools.rustc_version
    );
    let kernel = build::build(&tree_dir, &work, &tools, args.profile, &init_script())?;
    let timeout = Duration::from_secs(args.timeout);
    let mut results = Vec::new();
    for case in &cases {
        let disk = work.join(format!("disk-{}.img", case.name));
        eprintln!("xtask kerla: booting {} ...", case.name);
        let booted = boot::boot(case, &kernel.elf, &disk, DISK_BYTES, timeout, args.console)?;
        let result = judge(case, &booted, &disk);
        if !result.problems.is_empty() && !args.console {
            // The console explains a failure: show it.
            for line in &booted.lines {
                println!("  | {}", boot::strip_ansi(line));
            }
        }
        results.push(result);
    }
    println!(
        "xtask kerla: Kerla from {} with {} patches; {}; {:?} build {:.1} s",
        match &source {
            tree::Source::Tarball(p) | tree::Source::Folder(p) => p.display().to_string(),
        },
        patches.len(),
        tools.rustc_version,
        args.profile,
        kernel.build_time.as_secs_f64()
    );
    println!(
        "{:<12} {:>7}  {:<6}  host-side check of the disk image",
        "boot", "time", "result"
    );
    for result in &results {
        println!(
            "{:<12} {:>6.1}s  {:<6}  {}",
            result.name,
            result.time.as_secs_f64(),
            if result.problems.is_empty() {
                "PASS"
            } else {
                "FAIL"
            },
            result.host_check
        );
        for problem in &result.problems {
            println!("    - {problem}");
        }
    }
    let passed = results.iter().filter(|r| r.problems.is_empty()).count();
    let verdict = if passed == results.len() {
        "PASS"
    } else {
        "FAIL"
    };
    println!(
        "xtask kerla: {verdict}: {passed} of {} boots passed ({:.0} s in all)",
        results.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(if passed == results.len() {
        Outcome::Passed
    } else {
        Outcome::Failed
    })
}
