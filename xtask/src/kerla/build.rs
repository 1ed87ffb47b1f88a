//! Building the patched Kerla with the kext: its initramfs (BusyBox and the
//! init script), cargo with Debian's Rust, then the two steps Kerla's
//! Makefile would do after linking: embed the symbol table (its
//! `tools/embed-symbol-table.py`, from the scratch tree) and mark the ELF
//! as i386 so QEMU's multiboot loader takes it. Kerla's Makefile itself is
//! not used: it wants docker, rustfilt and rust-nm.

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cpio::Archive;

use super::toolchain::Toolchain;

/// Where the initramfs goes, relative to the tree (Kerla includes it from
/// `kernel/fs/initramfs.rs` as `../../$INITRAMFS_PATH`).
const INITRAMFS: &str = "build/vblk-initramfs.cpio";

/// Cargo's profile for the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Kerla's release profile (LTO, opt-level 3): what the figures use.
    Release,
    /// Unoptimised, debug assertions on (Kerla's lock checks report deadlocks).
    Debug,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

/// A kernel ready to boot.
pub struct Kernel {
    /// The ELF, symbol table embedded, marked for multiboot.
    pub elf: PathBuf,
    /// How long cargo took.
    pub build_time: Duration,
}

/// The initramfs: BusyBox as `/bin/busybox` and `/bin/sh`, and the folders
/// Kerla mounts on (`/dev`, `/proc`, `/tmp`).
fn initramfs(busybox: &Path) -> Result<Vec<u8>, String> {
    let busybox =
        std::fs::read(busybox).map_err(|e| format!("cannot read {}: {e}", busybox.display()))?;
    let mut archive = Archive::new(BufWriter::new(Vec::new()));
    let io = |e: std::io::Error| format!("cannot build the initramfs: {e}");
    for dir in ["/bin", "/dev", "/proc", "/tmp"] {
        archive.dir(dir).map_err(io)?;
    }
    archive.file("/bin/busybox", 0o755, &busybox).map_err(io)?;
    archive.symlink("/bin/sh", "busybox").map_err(io)?;
    archive
        .finish()
        .map_err(io)?
        .into_inner()
        .map_err(|e| format!("cannot build the initramfs: {e}"))
}

/// Writes `bytes` to `path` unless it already holds them (cargo rebuilds
/// the kernel when its included initramfs changes).
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The environment of Debian's cargo: rustup's variables and the ones the
/// outer `cargo xtask` set are dropped, so neither rustup's proxies nor
/// our workspace's settings reach Kerla's build.
fn clean_environment(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let keep = key == "CARGO_HOME"
            || key.starts_with("CARGO_HTTP")
            || key.starts_with("CARGO_NET")
            || key.starts_with("CARGO_REGISTR");
        let drop = (key.starts_with("CARGO") && !keep)
            || key.starts_with("RUSTUP")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTDOC")
            || key == "RUSTFLAGS";
        if drop {
            command.env_remove(key.as_ref());
        }
    }
}

/// A folder holding `rust-lld`, which Kerla's target file names as its
/// linker: a link to Debian's `lld-22` (lld picks its flavour from the
/// `-flavor` rustc passes).
fn linker_shim(dir: &Path, lld: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let link = dir.join("rust-lld");
    if std::fs::read_link(&link).ok().as_deref() != Some(lld) {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lld, &link)
            .map_err(|e| format!("cannot link {}: {e}", link.display()))?;
    }
    Ok(())
}

/// Builds the kernel in `tree`; its init runs `sh -c init_script` (Kerla's
/// `INIT_SCRIPT`, compiled in).
pub fn build(
    tree: &Path,
    work: &Path,
    tools: &Toolchain,
    profile: Profile,
    init_script: &str,
) -> Result<Kernel, String> {
    write_if_changed(&tree.join(INITRAMFS), &initramfs(&tools.busybox)?)?;
    let shim = work.join("bin");
    linker_shim(&shim, &tools.lld)?;
    let target_dir = work.join("cargo-target");
    let mut cargo = Command::new(&tools.cargo);
    clean_environment(&mut cargo);
    cargo
        .current_dir(tree)
        .args(["build", "-Zjson-target-spec"])
        .args(["-Zbuild-std=core,alloc,compiler_builtins"])
        .args(["-Zbuild-std-features=compiler-builtins-mem"])
        .args(["--target", "kernel/arch/x64/x64.json"])
        .args(["--manifest-path", "kernel/Cargo.toml"])
        .env("PATH", format!("{}:/usr/bin:/bin", shim.display()))
        .env("RUSTC", &tools.rustc)
        // Kerla uses nightly features; Debian ships a stable compiler.
        .env("RUSTC_BOOTSTRAP", "1")
        // Debian's rustlib src folder is empty: point build-std at its source.
        .env("__CARGO_TESTS_ONLY_SRC_ROOT", &tools.library_src)
        .env("RUSTFLAGS", "-Z emit-stack-sizes")
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("INITRAMFS_PATH", INITRAMFS)
        .env("INIT_SCRIPT", init_script)
        .env("ARCH", "x64")
        .env("CARGO_FROM_MAKE", "1");
    if profile == Profile::Release {
        cargo.arg("--release");
    }
    let start = Instant::now();
    let status = cargo
        .status()
        .map_err(|e| format!("cannot run {}: {e}", tools.cargo.display()))?;
    let build_time = start.elapsed();
    if !status.success() {
        return Err(format!(
            "building Kerla failed ({status}); the scratch tree is {}",
            tree.display()
        ));
    }
    let built = target_dir
        .join("x64")
        .join(profile.dir())
        .join("kerla_kernel");
    let elf = work.join("kerla.elf");
    std::fs::copy(&built, &elf).map_err(|e| format!("cannot copy {}: {e}", built.display()))?;
    embed_symbols(tree, tools, &elf, work)?;
    mark_for_multiboot(&elf)?;
    Ok(Kernel { elf, build_time })
}

/// `nm --demangle` lines as Kerla's table wants them: address and name,
/// undefined symbols (no address) left out.
pub fn symbol_lines(nm_output: &str) -> String {
    let mut out = String::new();
    for line in nm_output.lines() {
        let mut fields = line.splitn(3, ' ');
        let (Some(address), Some(_kind), Some(name)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if address.is_empty() || u64::from_str_radix(address, 16).is_err() {
            continue;
        }
        out.push_str(address);
        out.push(' ');
        out.push_str(name);
        out.push('\n');
    }
    out
}

fn embed_symbols(tree: &Path, tools: &Toolchain, elf: &Path, work: &Path) -> Result<(), String> {
    let output = Command::new(&tools.nm)
        .arg("--demangle")
        .arg(elf)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", tools.nm.display()))?;
    if !output.status.success() {
        return Err(format!("{} failed on the kernel", tools.nm.display()));
    }
    let symbols = work.join("kerla.symbols");
    std::fs::write(
        &symbols,
        symbol_lines(&String::from_utf8_lossy(&output.stdout)),
    )
    .map_err(|e| format!("cannot write {}: {e}", symbols.display()))?;
    let status = Command::new("python3")
        .arg(tree.join("tools/embed-symbol-table.py"))
        .arg(&symbols)
        .arg(elf)
        .status()
        .map_err(|e| format!("cannot run python3 for Kerla's embed-symbol-table.py: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("Kerla's embed-symbol-table.py failed".into())
    }
}

/// Sets the ELF's `e_machine` to 3 (i386): QEMU's multiboot loader only
/// takes 32-bit ELF files, and Kerla's image starts in 32-bit code.
fn mark_for_multiboot(elf: &Path) -> Result<(), String> {
    let mut bytes =
        std::fs::read(elf).map_err(|e| format!("cannot read {}: {e}", elf.display()))?;
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return Err(format!("{} is not an ELF file", elf.display()));
    }
    bytes[18..20].copy_from_slice(&3u16.to_le_bytes());
    std::fs::write(elf, bytes).map_err(|e| format!("cannot write {}: {e}", elf.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_lines_keep_addresses_and_demangled_names() {
        let nm = "ffff800000100000 T boot\n                 U undefined\n\
                  ffff800000200010 t <kerla::Foo as core::fmt::Debug>::fmt\n";
        assert_eq!(
            symbol_lines(nm),
            "ffff800000100000 boot\nffff800000200010 <kerla::Foo as core::fmt::Debug>::fmt\n"
        );
    }

    #[test]
    fn the_initramfs_has_busybox_and_the_mount_points() {
        let fake = std::env::temp_dir().join(format!("vblk-fake-busybox-{}", std::process::id()));
        std::fs::write(&fake, b"\x7fELF-busybox").unwrap();
        let archive = initramfs(&fake).unwrap();
        let _ = std::fs::remove_file(&fake);
        let text = String::from_utf8_lossy(&archive);
        for name in ["bin/busybox", "bin/sh", "dev", "proc", "tmp"] {
            assert!(text.contains(name), "{name} missing");
        }
        assert!(text.contains("ELF-busybox"));
    }
}
