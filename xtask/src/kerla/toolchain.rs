//! What building and booting Kerla needs on the host, from Debian's
//! packages: Rust 1.96 as `rustc-web`/`cargo-web` with its library source
//! (`rust-web-src`, for `-Zbuild-std`), `lld-22` (the linker, reached as
//! `rust-lld`), `llvm-22`'s `llvm-nm` (the symbol table Kerla embeds),
//! BusyBox built static (Kerla's user space) and QEMU. Missing pieces are
//! installed with apt, the Rust packages pinned to the version Kerla's
//! build was established with; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian version of the Rust packages (bookworm-security). Bookworm's
/// main pocket has 1.85, which cannot build Kerla's dependencies.
pub const DEBIAN_RUST_VERSION: &str = "1.96.0+dfsg1-1~deb12u2";
/// `rustc --version` of that package.
const RUSTC_RELEASE: &str = "1.96.0";

/// The host's tools, found or installed.
pub struct Toolchain {
    /// Debian's `rustc` (not rustup's proxy).
    pub rustc: PathBuf,
    /// Debian's `cargo`.
    pub cargo: PathBuf,
    /// The standard library's source, for `-Zbuild-std`.
    pub library_src: PathBuf,
    /// `lld-22`, which Kerla's target file calls `rust-lld`.
    pub lld: PathBuf,
    /// `llvm-nm-22`.
    pub nm: PathBuf,
    /// The static BusyBox binary.
    pub busybox: PathBuf,
    /// What `rustc --version` says.
    pub rustc_version: String,
}

/// One piece: where it should be and which package brings it.
struct Piece {
    path: &'static str,
    package: String,
}

fn pieces() -> Vec<Piece> {
    let rust = |name: &str| format!("{name}={DEBIAN_RUST_VERSION}");
    vec![
        Piece {
            path: "/usr/bin/rustc",
            package: rust("rustc-web"),
        },
        Piece {
            path: "/usr/bin/cargo",
            package: rust("cargo-web"),
        },
        Piece {
            path: "/usr/src/rustc-1.96.0/library/core/src/lib.rs",
            package: rust("rust-web-src"),
        },
        Piece {
            path: "/usr/bin/lld-22",
            package: "lld-22".into(),
        },
        Piece {
            path: "/usr/bin/llvm-nm-22",
            package: "llvm-22".into(),
        },
        Piece {
            path: "/bin/busybox",
            package: "busybox-static".into(),
        },
        Piece {
            path: "/usr/bin/qemu-system-x86_64",
            package: "qemu-system-x86".into(),
        },
    ]
}

fn rustc_version(rustc: &Path) -> Option<String> {
    let output = Command::new(rustc).arg("--version").output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Whether `/bin/busybox` is the static build (the dynamic one would need
/// a C library in Kerla's initramfs).
fn busybox_is_static(path: &Path) -> bool {
    // No PT_INTERP program header: nothing to load it.
    std::fs::read(path).is_ok_and(|bytes| {
        crate::linux::elf::Elf::parse(&bytes)
            .and_then(|elf| elf.dynamic())
            .is_some_and(|dynamic| dynamic.interp.is_none())
    })
}

/// The packages whose pieces are missing (or, for Rust, of another version).
fn missing() -> Vec<String> {
    let mut packages: Vec<String> = pieces()
        .into_iter()
        .filter(|piece| !Path::new(piece.path).exists())
        .map(|piece| piece.package)
        .collect();
    let rust_ok = rustc_version(Path::new("/usr/bin/rustc"))
        .is_some_and(|v| v.starts_with(&format!("rustc {RUSTC_RELEASE}")));
    let rustc_package = format!("rustc-web={DEBIAN_RUST_VERSION}");
    if !rust_ok && !packages.contains(&rustc_package) {
        packages.push(rustc_package);
    }
    if Path::new("/bin/busybox").exists() && !busybox_is_static(Path::new("/bin/busybox")) {
        packages.push("busybox-static".into());
    }
    packages
}

fn apt(args: &[&str]) -> Result<(), String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let mut command = if root {
        Command::new("apt-get")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("apt-get");
        sudo
    };
    command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    let status = command
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("apt-get {} failed ({status})", args.join(" ")))
    }
}

/// Finds the tools, installing what is missing unless `install` is false.
pub fn prepare(install: bool) -> Result<Toolchain, String> {
    let packages = missing();
    if !packages.is_empty() {
        if !install {
            return Err(format!(
                "missing: {} (run without --no-install, or apt-get install them)",
                packages.join(" ")
            ));
        }
        eprintln!("xtask kerla: installing {}", packages.join(" "));
        let mut args = vec!["install", "-y", "--no-install-recommends"];
        args.extend(packages.iter().map(String::as_str));
        // The pinned version lives in bookworm-security: a stale package
        // list does not know it yet.
        if apt(&args).is_err() {
            apt(&["update"])?;
            apt(&args)?;
        }
        let still = missing();
        if !still.is_empty() {
            return Err(format!(
                "still missing after apt-get install: {}",
                still.join(" ")
            ));
        }
    }
    let rustc = PathBuf::from("/usr/bin/rustc");
    let rustc_version =
        rustc_version(&rustc).ok_or("/usr/bin/rustc --version failed after installing it")?;
    Ok(Toolchain {
        rustc,
        cargo: PathBuf::from("/usr/bin/cargo"),
        library_src: PathBuf::from("/usr/src/rustc-1.96.0/library"),
        lld: PathBuf::from("/usr/bin/lld-22"),
        nm: PathBuf::from("/usr/bin/llvm-nm-22"),
        busybox: PathBuf::from("/bin/busybox"),
        rustc_version,
    })
}
