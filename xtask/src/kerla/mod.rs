//! `cargo xtask kerla`: the kext inside the real Kerla.
//!
//! 1. Finds Debian's Rust 1.96, lld, llvm-nm, static BusyBox and QEMU,
//!    installing what is missing ([`toolchain`]).
//! 2. Unpacks Kerla's snapshot (`../shared/kerla/`, or `--kerla-src`) into
//!    `target/kerla/tree`, applies the project's patch series
//!    (`kext/kerla/patches/`) and places the kext in `exts/` ([`tree`]).
//! 3. Builds musl BusyBox and blkcheck ([`userland`]), then Kerla with the
//!    kext and an initramfs whose init script (`kext/kerla/init.sh`) runs
//!    the user-space checks through `/dev/vda` and halts ([`build`]).
//! 4. Boots it once per case (packed and split rings on virtio-pci,
//!    virtio-mmio) with `vblk.selftest=GENERATION` on a fresh raw file;
//!    reads the console: the kext loaded, took the disk with the ring
//!    asked for, the kernel registered its block driver, the self-test
//!    passed, the init script's dd round trips and blkcheck passed, Kerla
//!    halted ([`boot`]).
//! 5. Checks the raw file on the host: every byte accounted for, the
//!    self-test's stamps, the dd cases' pattern, the throughput copy,
//!    zeros elsewhere ([`disk_check`]).
//!
//! Prints one line per boot and a PASS/FAIL verdict; exits 0 only on PASS.

mod bench;
mod boot;
mod build;
mod disk_check;
mod toolchain;
mod tree;
mod userland;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::linux::fio::Figures;
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
    /// Instead of the boots: the in-kernel job in Kerla beside the
    /// bare-metal guest on the same QEMU line (see the --bench-* flags).
    #[arg(long)]
    pub bench: bool,
    /// The comparison's settings.
    #[command(flatten)]
    pub bench_args: bench::BenchArgs,
}

/// The raw disk each boot gets (zeroed): 64 MiB.
const DISK_BYTES: u64 = 64 << 20;

/// How one boot went.
struct BootResult {
    name: &'static str,
    time: Duration,
    problems: Vec<String>,
    host_check: String,
    /// (step, bytes, host seconds) of the throughput steps.
    throughput: Vec<(String, u64, f64)>,
    /// The in-kernel job's figures, when the boot ran one.
    job: Option<Figures>,
}

/// The init script (`kext/kerla/init.sh`) with the blkdebug sectors set.
fn init_script(repo: &std::path::Path) -> Result<String, String> {
    let path = repo.join("kext/kerla/init.sh");
    let script = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(format!(
        "VBLK_READ_ERROR={}\nVBLK_WRITE_ERROR={}\n{script}",
        boot::READ_ERROR_SECTOR,
        boot::WRITE_ERROR_SECTOR
    ))
}

/// The figures of a job's JSON report, if it ran cleanly.
pub(super) fn job_figures(json: &str) -> Result<Figures, String> {
    let json: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("its JSON report does not parse: {e}"))?;
    let figures = Figures::from_json(&json).ok_or("its JSON report lacks the figures")?;
    let errors = json["vblk"]["errors"].as_u64().unwrap_or(u64::MAX);
    if errors != 0 || figures.ios == 0 {
        return Err(format!("{errors} errors, {}", figures.summary()));
    }
    Ok(figures)
}

/// Reads one boot's console and disk; every problem found is listed.
fn judge(
    case: &boot::BootCase,
    booted: &boot::Booted,
    disk: &std::path::Path,
    user_cases: &[disk_check::UserCase],
) -> BootResult {
    let console = boot::read_console(&booted.lines, &booted.arrived);
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
    problems.extend(
        console
            .user
            .iter()
            .filter(|line| line.starts_with("FAIL"))
            .map(|line| format!("user space: {line}")),
    );
    if !console.user.iter().any(|line| line == "PASS") {
        problems.push("no `vblk-user: PASS` line".into());
    }
    problems.extend(console.blkcheck_failed.iter().cloned());
    problems.extend(console.job_failed.iter().cloned());
    let job = match (case.job, &console.job_json) {
        (None, _) => None,
        (Some(_), None) => {
            problems.push("the in-kernel job printed no JSON report".into());
            None
        }
        (Some(_), Some(json)) => match job_figures(json) {
            Ok(figures) => Some(figures),
            Err(why) => {
                problems.push(format!("the in-kernel job: {why}"));
                None
            }
        },
    };
    if !console.blkcheck_passed {
        problems.push("no `blkcheck: PASS` line".into());
    }
    if let Some(panic) = &console.panic {
        problems.push(format!("Kerla panicked: {panic}"));
    }
    match booted.code {
        Some(boot::HALTED) => {}
        Some(code) => problems.push(format!("QEMU exited with {code}, not Kerla's halt")),
        None => problems.push("Kerla did not halt (stopped at boot2dump, or the timeout)".into()),
    }
    let host_check = std::fs::read(disk)
        .map_err(|e| format!("cannot read the disk image: {e}"))
        .and_then(|image| {
            let layout = disk_check::boot_layout(
                image.len() as u64,
                case.generation,
                user_cases,
                boot::WRITE_ERROR_SECTOR,
            )?;
            disk_check::check(&image, &layout).map_err(|why| format!("disk image: {why}"))
        });
    let host_check = match host_check {
        Ok(check) => format!(
            "{} KiB as written, {} KiB zero, {} KiB blkcheck's",
            check.checked / 1024,
            check.zero / 1024,
            check.scratch / 1024
        ),
        Err(why) => {
            problems.push(why);
            "FAILED".into()
        }
    };
    BootResult {
        name: case.name,
        time: booted.time,
        problems,
        host_check,
        throughput: console.throughput,
        job,
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
    let userland = userland::prepare(&work, &tree_dir, &repo)?;
    let script = init_script(&repo)?;
    let user_cases = disk_check::user_cases(&script)?;
    let kernel = build::build(&tree_dir, &work, &tools, &userland, args.profile, &script)?;
    if args.bench {
        return bench::run(&args.bench_args, &kernel.elf);
    }
    let timeout = Duration::from_secs(args.timeout);
    let mut results = Vec::new();
    for case in &cases {
        let disk = work.join(format!("disk-{}.img", case.name));
        eprintln!("xtask kerla: booting {} ...", case.name);
        let booted = boot::boot(case, &kernel.elf, &disk, DISK_BYTES, timeout, args.console)?;
        let result = judge(case, &booted, &disk, &user_cases);
        if !result.problems.is_empty() && !args.console {
            // The console explains a failure: show it.
            for line in &booted.lines {
                println!("  | {}", boot::strip_ansi(line));
            }
        }
        results.push(result);
    }
    println!(
        "xtask kerla: Kerla from {} with {} patches; {}; {:?} build {:.1} s; user space: \
         BusyBox from {} (musl)",
        match &source {
            tree::Source::Tarball(p) | tree::Source::Folder(p) => p.display().to_string(),
        },
        patches.len(),
        tools.rustc_version,
        args.profile,
        kernel.build_time.as_secs_f64(),
        userland.busybox_source
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
        if let Some(job) = &result.job {
            println!(
                "    in-kernel job on the kext's own queue: {}",
                job.summary()
            );
        }
        for (step, bytes, seconds) in &result.throughput {
            println!(
                "    /dev/vda sequential {step} (BusyBox dd, 1 MiB blocks): {} MiB in {seconds:.2} s = {:.1} MiB/s",
                bytes >> 20,
                *bytes as f64 / f64::from(1 << 20) / seconds.max(1e-9)
            );
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
