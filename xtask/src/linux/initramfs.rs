//! The Linux guest, assembled from Debian packages only: the kernel behind
//! `linux-image-amd64` (its bzImage and virtio modules), `busybox-static`,
//! and `fio` with every shared library it loads, found by following ELF
//! `DT_NEEDED` entries through fio's dependencies. Everything is cached
//! under `target/linux-guest/`; the initramfs is rebuilt only when what goes
//! into it changes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::debian::{depends_names, resolve_in, Cache, Package};
use super::elf::{module_depends, Elf};
use crate::cpio::Archive;
use crate::hash::fnv1a;

/// The guest's `/init`.
const INIT: &str = include_str!("init.sh");
/// Where shared libraries go in the guest (the init script sets
/// `LD_LIBRARY_PATH` to it).
const LIB_DIR: &str = "lib/x86_64-linux-gnu";
/// Modules the init script loads (with their dependencies first). No
/// virtio_mmio: Debian builds it without command-line devices, so on
/// microvm with acpi=off it would find nothing.
const WANTED_MODULES: [&str; 2] = ["virtio_pci", "virtio_blk"];
/// Bump when the layout changes, so cached images are rebuilt.
const LAYOUT_VERSION: u32 = 1;

/// A bootable Linux guest.
pub struct LinuxGuest {
    /// The bzImage.
    pub kernel: PathBuf,
    /// The initramfs (newc cpio).
    pub initrd: PathBuf,
    /// The kernel package's release, e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// `name version` of every package whose files are in the guest.
    pub packages: Vec<String>,
}

/// A file for the archive: its path in the guest and where its bytes are.
struct Entry {
    guest_path: String,
    host_path: PathBuf,
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A module's bytes, decompressed on the host when the package ships
/// `.ko.xz` or `.ko.zst` (BusyBox insmod may not decompress).
fn module_bytes(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        "xz"
    } else if name.ends_with(".ko.zst") {
        "zstd"
    } else if name.ends_with(".ko.gz") {
        "gzip"
    } else {
        return read(path);
    };
    let output = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run {tool} to decompress {name}: {e}"))?;
    if !output.status.success() {
        return Err(format!("{tool} -dc {name} failed"));
    }
    Ok(output.stdout)
}

/// The module name of a file: `virtio_blk.ko.xz` -> `virtio_blk`.
fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_string_lossy();
    let stem = file.split(".ko").next()?;
    (file.contains(".ko")).then(|| stem.replace('-', "_"))
}

/// Files under `dir`, recursively.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, out),
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
}

/// The kernel image and the virtio modules in load order.
struct Kernel {
    package: Package,
    bzimage: PathBuf,
    release: String,
    /// `(name, bytes)`, dependencies before their users.
    modules: Vec<(String, Vec<u8>)>,
}

fn kernel(cache: &Cache) -> Result<Kernel, String> {
    let meta = cache.package("linux-image-amd64")?;
    let depends = cache.field(&meta, "Depends")?;
    let name = depends_names(&depends)
        .into_iter()
        .find(|n| n.starts_with("linux-image-"))
        .ok_or_else(|| format!("linux-image-amd64 depends on no kernel image: {depends:?}"))?;
    let package = cache.package_members(
        &name,
        &[
            "./boot/vmlinuz-*",
            "*/kernel/drivers/virtio/virtio*",
            "*/kernel/drivers/block/virtio_blk.ko*",
        ],
    )?;
    let mut files = Vec::new();
    walk(&package.root, &mut files);
    let bzimage = files
        .iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("vmlinuz-"))
        })
        .cloned()
        .ok_or_else(|| format!("{name} has no /boot/vmlinuz-*"))?;
    let release =
        bzimage.file_name().unwrap_or_default().to_string_lossy()["vmlinuz-".len()..].to_string();
    let available: BTreeMap<String, PathBuf> = files
        .iter()
        .filter_map(|p| Some((module_name(p)?, p.clone())))
        .collect();
    // Depth-first over `depends=`: every module after what it needs.
    let mut order: Vec<String> = Vec::new();
    let mut bytes: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    fn visit(
        name: &str,
        available: &BTreeMap<String, PathBuf>,
        order: &mut Vec<String>,
        bytes: &mut BTreeMap<String, Vec<u8>>,
        depth: usize,
    ) -> Result<(), String> {
        if order.iter().any(|m| m == name) {
            return Ok(());
        }
        if depth > 16 {
            return Err(format!("module dependency cycle at {name}"));
        }
        let path = available.get(name).ok_or_else(|| {
            format!("module {name} is not in the kernel package (built in? renamed?)")
        })?;
        let data = module_bytes(path)?;
        let depends =
            module_depends(&data).map_err(|e| format!("module {}: {e}", path.display()))?;
        for dep in &depends {
            visit(dep, available, order, bytes, depth + 1)?;
        }
        order.push(name.to_string());
        bytes.insert(name.to_string(), data);
        Ok(())
    }
    for wanted in WANTED_MODULES {
        visit(wanted, &available, &mut order, &mut bytes, 0)?;
    }
    let modules = order
        .into_iter()
        .map(|name| {
            let data = bytes.remove(&name).unwrap_or_default();
            (name, data)
        })
        .collect();
    Ok(Kernel {
        package,
        bzimage,
        release,
        modules,
    })
}

/// Directories the loader searches, as in Debian's multiarch layout.
const LIBRARY_DIRS: [&str; 5] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/lib",
    "/usr/lib",
];

/// A package whose name says it ships shared libraries.
fn library_package(name: &str) -> bool {
    name.starts_with("lib") || name == "zlib1g"
}

/// fio and everything it loads: `(guest path, host file)` entries, plus the
/// packages they came from.
struct Closure {
    entries: Vec<Entry>,
    packages: Vec<Package>,
}

/// Finds `soname` in the packages fetched so far: `(package index, file)`.
fn find_library(
    packages: &[Package],
    soname: &str,
    runpath: &[String],
) -> Option<(usize, PathBuf)> {
    let dirs = runpath
        .iter()
        .map(String::as_str)
        .filter(|d| d.starts_with('/'))
        .chain(LIBRARY_DIRS);
    for dir in dirs {
        for (index, package) in packages.iter().enumerate() {
            if let Some(path) = resolve_in(&package.root, &format!("{dir}/{soname}")) {
                if path.is_file() {
                    return Some((index, path));
                }
            }
        }
    }
    None
}

/// A library not found yet: who needs it, and their `RUNPATH`s.
#[derive(Default)]
struct Missing {
    owners: BTreeSet<usize>,
    runpath: Vec<String>,
}

/// Looks for every missing library in the packages fetched so far; what is
/// found becomes an entry and is queued to have its own needs read.
fn look_again(
    missing: &mut BTreeMap<String, Missing>,
    packages: &[Package],
    found: &mut BTreeSet<String>,
    entries: &mut Vec<Entry>,
    queue: &mut VecDeque<(PathBuf, usize)>,
) {
    missing.retain(|soname, need| {
        let Some((index, path)) = find_library(packages, soname, &need.runpath) else {
            return true;
        };
        found.insert(soname.clone());
        entries.push(Entry {
            guest_path: format!("{LIB_DIR}/{soname}"),
            host_path: path.clone(),
        });
        queue.push_back((path, index));
        false
    });
}

/// The library packages `of` depend on (`Depends`, `Pre-Depends`) that were
/// not tried yet.
fn library_depends<'a>(
    cache: &Cache,
    of: impl Iterator<Item = &'a Package>,
    tried: &BTreeSet<String>,
) -> Result<Vec<String>, String> {
    let mut next: Vec<String> = Vec::new();
    for package in of {
        let mut depends = depends_names(&cache.field(package, "Depends")?);
        depends.extend(depends_names(&cache.field(package, "Pre-Depends")?));
        for name in depends {
            if library_package(&name) && !tried.contains(&name) && !next.contains(&name) {
                next.push(name);
            }
        }
    }
    Ok(next)
}

/// Follows `DT_NEEDED` from `/usr/bin/fio` until every library is found,
/// downloading, while one is missing, the library packages that the
/// packages needing it depend on (failing that, that any package fetched
/// depends on).
fn fio_closure(cache: &Cache) -> Result<Closure, String> {
    let mut packages = vec![cache.package("fio")?];
    let fio = resolve_in(&packages[0].root, "/usr/bin/fio")
        .filter(|p| p.is_file())
        .ok_or("the fio package has no /usr/bin/fio")?;
    let mut entries = vec![Entry {
        guest_path: "usr/bin/fio".into(),
        host_path: fio.clone(),
    }];
    let mut tried: BTreeSet<String> = BTreeSet::from(["fio".to_string()]);
    let mut found: BTreeSet<String> = BTreeSet::new();
    let mut missing: BTreeMap<String, Missing> = BTreeMap::new();
    // (file, index of its package)
    let mut queue: VecDeque<(PathBuf, usize)> = VecDeque::from([(fio, 0)]);
    let mut interp: Option<String> = None;
    loop {
        while let Some((file, owner)) = queue.pop_front() {
            let data = read(&file)?;
            let elf = Elf::parse(&data)
                .ok_or_else(|| format!("{} is not an ELF64 file", file.display()))?;
            let dynamic = elf
                .dynamic()
                .ok_or_else(|| format!("{}: malformed ELF headers", file.display()))?;
            if let Some(path) = dynamic.interp {
                interp.get_or_insert(path);
            }
            for soname in dynamic.needed {
                if !found.contains(&soname) {
                    let need = missing.entry(soname).or_default();
                    need.owners.insert(owner);
                    need.runpath.extend(dynamic.runpath.iter().cloned());
                }
            }
            look_again(
                &mut missing,
                &packages,
                &mut found,
                &mut entries,
                &mut queue,
            );
        }
        let interp_file = interp
            .as_deref()
            .and_then(|i| packages.iter().find_map(|p| resolve_in(&p.root, i)))
            .filter(|p| p.is_file());
        if missing.is_empty() && (interp.is_none() || interp_file.is_some()) {
            if let (Some(path), Some(file)) = (&interp, interp_file) {
                entries.push(Entry {
                    guest_path: path.trim_start_matches('/').to_string(),
                    host_path: file,
                });
            }
            break;
        }
        // The interpreter comes with libc6, a dependency of fio itself.
        let mut owners: BTreeSet<usize> = missing
            .values()
            .flat_map(|m| m.owners.iter().copied())
            .collect();
        if interp_file.is_none() {
            owners.insert(0);
        }
        let mut next = library_depends(cache, owners.iter().map(|&i| &packages[i]), &tried)?;
        if next.is_empty() {
            next = library_depends(cache, packages.iter(), &tried)?;
        }
        if next.is_empty() {
            let mut names: Vec<String> = missing.keys().cloned().collect();
            names.extend(interp.filter(|_| interp_file.is_none()));
            return Err(format!(
                "fio needs {} and no package among fio's dependencies has it",
                names.join(", ")
            ));
        }
        let failed = cache.download(&next)?;
        for name in next {
            tried.insert(name.clone());
            if !failed.contains(&name) {
                packages.push(cache.package(&name)?);
            }
        }
        look_again(
            &mut missing,
            &packages,
            &mut found,
            &mut entries,
            &mut queue,
        );
    }
    // Keep only the packages something came from.
    let used: Vec<Package> = packages
        .into_iter()
        .filter(|p| entries.iter().any(|e| e.host_path.starts_with(&p.root)))
        .collect();
    Ok(Closure {
        entries,
        packages: used,
    })
}

/// Builds (or finds cached) the Linux guest under `dir`.
pub fn prepare(dir: &Path, refresh: bool) -> Result<LinuxGuest, String> {
    let cache = Cache::open(dir, refresh)?;
    let kernel = kernel(&cache)?;
    let busybox = cache.package("busybox-static")?;
    let busybox_bin = resolve_in(&busybox.root, "/bin/busybox")
        .filter(|p| p.is_file())
        .ok_or("busybox-static has no /bin/busybox")?;
    let fio = fio_closure(&cache)?;

    let mut packages = vec![kernel.package.label(), busybox.label()];
    packages.extend(fio.packages.iter().map(Package::label));
    let module_order: Vec<&str> = kernel.modules.iter().map(|(n, _)| n.as_str()).collect();
    let mut manifest = format!("layout {LAYOUT_VERSION}\n");
    manifest.push_str(&packages.join("\n"));
    manifest.push_str(&format!("\nmodules {}\n", module_order.join(" ")));
    for entry in &fio.entries {
        manifest.push_str(&format!(
            "{} <- {}\n",
            entry.guest_path,
            entry.host_path.display()
        ));
    }
    manifest.push_str(INIT);
    let initrd = dir.join(format!(
        "initramfs-{:016x}.cpio",
        fnv1a(manifest.as_bytes())
    ));
    if !initrd.exists() {
        eprintln!(
            "xtask linux: writing {} ({} libraries for fio)",
            initrd.display(),
            fio.entries.len() - 1
        );
        write_initramfs(&initrd, &kernel, &busybox_bin, &fio.entries)?;
        std::fs::write(initrd.with_extension("manifest"), &manifest)
            .map_err(|e| format!("cannot write the manifest: {e}"))?;
        remove_stale_images(dir, &initrd);
    }
    Ok(LinuxGuest {
        kernel: kernel.bzimage,
        initrd,
        release: kernel.release,
        packages,
    })
}

/// Removes images (and their manifests) other than `keep`: each is 88 MB.
fn remove_stale_images(dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()) {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let image = name.starts_with("initramfs-")
            && (name.ends_with(".cpio") || name.ends_with(".manifest"));
        if image && path.file_stem() != keep.file_stem() {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn write_initramfs(
    path: &Path,
    kernel: &Kernel,
    busybox: &Path,
    entries: &[Entry],
) -> Result<(), String> {
    let partial = path.with_extension("partial");
    let file = std::fs::File::create(&partial)
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let mut archive = Archive::new(BufWriter::new(file));
    let io = |e: std::io::Error| format!("writing {}: {e}", partial.display());
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for dir in ["bin", "dev", "etc", "proc", "sys", "tmp", "lib/modules"] {
        dirs.insert(dir.into());
    }
    for entry in entries {
        let mut parent = Path::new(&entry.guest_path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
    }
    for parent in ["lib", "usr", "usr/bin"] {
        dirs.insert(parent.into());
    }
    // BTreeSet order puts every parent before its children.
    for dir in &dirs {
        archive.dir(dir).map_err(io)?;
    }
    // The kernel opens /dev/console for init before anything is mounted.
    archive.char_device("dev/console", 5, 1).map_err(io)?;
    archive.file("init", 0o755, INIT.as_bytes()).map_err(io)?;
    archive
        .file("bin/busybox", 0o755, &read(busybox)?)
        .map_err(io)?;
    archive.symlink("bin/sh", "busybox").map_err(io)?;
    let order: String = kernel
        .modules
        .iter()
        .map(|(name, _)| format!("{name}\n"))
        .collect();
    archive
        .file("etc/vblk-modules", 0o644, order.as_bytes())
        .map_err(io)?;
    for (name, data) in &kernel.modules {
        archive
            .file(&format!("lib/modules/{name}.ko"), 0o644, data)
            .map_err(io)?;
    }
    for entry in entries {
        archive
            .file(&entry.guest_path, 0o755, &read(&entry.host_path)?)
            .map_err(io)?;
    }
    archive.finish().map_err(io)?;
    std::fs::rename(&partial, path).map_err(|e| format!("cannot rename {}: {e}", partial.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_drop_the_compression_suffix() {
        assert_eq!(
            module_name(Path::new("/x/virtio_blk.ko.xz")).as_deref(),
            Some("virtio_blk")
        );
        assert_eq!(
            module_name(Path::new("virtio_pci.ko")).as_deref(),
            Some("virtio_pci")
        );
        assert_eq!(module_name(Path::new("vmlinuz-6.1")), None);
    }

    #[test]
    fn library_packages_are_recognised_by_name() {
        assert!(library_package("libaio1"));
        assert!(library_package("zlib1g"));
        assert!(!library_package("python3"));
        assert!(!library_package("init-system-helpers"));
    }
}
