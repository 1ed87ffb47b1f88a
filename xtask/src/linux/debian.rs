//! Debian packages, fetched with `apt-get download` (no root needed; the
//! mirror is whatever apt is configured with) and unpacked with `dpkg-deb`,
//! cached under `target/linux-guest/`. A package once downloaded is reused
//! (offline) until `--refresh-packages`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The package cache: `debs/` holds the `.deb` files, `pkgs/NAME/` each
/// package's unpacked tree.
pub struct Cache {
    dir: PathBuf,
}

/// A cached package.
#[derive(Clone, Debug)]
pub struct Package {
    /// The package name.
    pub name: String,
    /// The `.deb` file (its name carries the version).
    pub deb: PathBuf,
    /// Where it is unpacked.
    pub root: PathBuf,
}

impl Package {
    /// `name version` from the `.deb` file name (`name_version_arch.deb`,
    /// the epoch's ':' written as `%3a`).
    pub fn label(&self) -> String {
        let file = self.deb.file_name().unwrap_or_default().to_string_lossy();
        let version = file.split('_').nth(1).unwrap_or("?").replace("%3a", ":");
        format!("{} {version}", self.name)
    }
}

fn run(command: &mut Command, what: &str) -> Result<Vec<u8>, String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot start it: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(output.stdout)
}

impl Cache {
    /// The cache at `dir`; `refresh` empties it first.
    pub fn open(dir: &Path, refresh: bool) -> Result<Cache, String> {
        if refresh && dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| format!("cannot empty {}: {e}", dir.display()))?;
        }
        for sub in ["debs", "pkgs"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| format!("cannot create {}: {e}", dir.join(sub).display()))?;
        }
        Ok(Cache { dir: dir.into() })
    }

    /// The cached `.deb` of `name`, if there is one.
    fn deb(&self, name: &str) -> Option<PathBuf> {
        let prefix = format!("{name}_");
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.dir.join("debs"))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let file = p.file_name().unwrap_or_default().to_string_lossy();
                file.starts_with(&prefix) && file.ends_with(".deb")
            })
            .collect();
        found.sort();
        found.pop()
    }

    /// Downloads every package of `names` not yet cached, in one `apt-get`
    /// call; when that fails (one name apt cannot resolve), one by one.
    /// Returns the names that could not be downloaded.
    pub fn download(&self, names: &[String]) -> Result<Vec<String>, String> {
        let missing: Vec<&String> = names.iter().filter(|n| self.deb(n).is_none()).collect();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        eprintln!(
            "xtask linux: downloading {} Debian package(s): {}",
            missing.len(),
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let apt = |names: &[&String]| {
            Command::new("apt-get")
                .args(["download", "-q"])
                .args(names)
                .current_dir(self.dir.join("debs"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .output()
        };
        let batch = apt(&missing)
            .map_err(|e| format!("cannot run apt-get (a Debian or Ubuntu host is needed): {e}"))?;
        if batch.status.success() {
            return Ok(Vec::new());
        }
        let mut failed = Vec::new();
        for name in missing {
            let one = apt(&[name]).map_err(|e| format!("apt-get: {e}"))?;
            if !one.status.success() || self.deb(name).is_none() {
                eprintln!(
                    "xtask linux: apt-get download {name}: {}",
                    String::from_utf8_lossy(&one.stderr).trim()
                );
                failed.push(name.clone());
            }
        }
        Ok(failed)
    }

    /// The package `name`, downloaded and unpacked (whole, with `dpkg-deb -x`).
    pub fn package(&self, name: &str) -> Result<Package, String> {
        self.package_with(name, |deb, dest| {
            run(
                Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest),
                &format!("dpkg-deb -x {}", deb.display()),
            )
            .map(drop)
        })
    }

    /// The package `name`, downloaded, with only the members matching
    /// `patterns` (tar wildcards) unpacked: a kernel package is ~400 MB whole.
    pub fn package_members(&self, name: &str, patterns: &[&str]) -> Result<Package, String> {
        self.package_with(name, |deb, dest| {
            // dpkg-deb --fsys-tarfile DEB | tar -x --wildcards PATTERNS
            let mut dpkg = Command::new("dpkg-deb")
                .arg("--fsys-tarfile")
                .arg(deb)
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
            let tar_input = dpkg.stdout.take().expect("piped");
            let tar = Command::new("tar")
                .args(["-x", "--wildcards", "-C"])
                .arg(dest)
                .args(patterns)
                .stdin(tar_input)
                .output()
                .map_err(|e| format!("cannot run tar: {e}"))?;
            let dpkg_status = dpkg.wait().map_err(|e| e.to_string())?;
            if !tar.status.success() || !dpkg_status.success() {
                return Err(format!(
                    "unpacking {} failed: {}",
                    deb.display(),
                    String::from_utf8_lossy(&tar.stderr).trim()
                ));
            }
            Ok(())
        })
    }

    fn package_with(
        &self,
        name: &str,
        unpack: impl FnOnce(&Path, &Path) -> Result<(), String>,
    ) -> Result<Package, String> {
        if self.deb(name).is_none() {
            let failed = self.download(&[name.to_string()])?;
            if !failed.is_empty() {
                return Err(format!("apt-get download {name} failed (see above)"));
            }
        }
        let deb = self
            .deb(name)
            .ok_or_else(|| format!("apt-get download {name} left no {name}_*.deb"))?;
        let root = self.dir.join("pkgs").join(name);
        // Unpacked trees are named for the .deb they came from: a newer
        // download (after --refresh-packages) unpacks afresh.
        let stamp = root.join(".vblk-unpacked-from");
        let source = deb.file_name().unwrap_or_default().to_string_lossy();
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(&*source) {
            if root.exists() {
                std::fs::remove_dir_all(&root)
                    .map_err(|e| format!("cannot remove {}: {e}", root.display()))?;
            }
            std::fs::create_dir_all(&root)
                .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
            unpack(&deb, &root)?;
            std::fs::write(&stamp, source.as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
        }
        Ok(Package {
            name: name.into(),
            deb,
            root,
        })
    }

    /// A control field of a cached package (`Depends`, `Pre-Depends`, ...);
    /// empty when the package has none.
    pub fn field(&self, package: &Package, field: &str) -> Result<String, String> {
        let out = run(
            Command::new("dpkg-deb")
                .arg("-f")
                .arg(&package.deb)
                .arg(field),
            &format!("dpkg-deb -f {}", package.deb.display()),
        )?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }
}

/// The package names a `Depends` field lists: of each group of
/// alternatives (`a | b`), the first; versions and architecture qualifiers
/// dropped.
pub fn depends_names(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter_map(|group| {
            let first = group.split('|').next()?.trim();
            let name = first.split([' ', '(']).next()?.split(':').next()?;
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// Follows symlinks inside an unpacked tree: `path` is absolute in the
/// package's terms (`/lib64/ld-linux-x86-64.so.2`), absolute link targets
/// resolve against `root`, not the host. `None` if it leads nowhere.
pub fn resolve_in(root: &Path, path: &str) -> Option<PathBuf> {
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(String::from)
        .collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(component) = pending.pop() {
        match component.as_str() {
            "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = resolved
            .iter()
            .chain(std::iter::once(&component))
            .fold(root.to_path_buf(), |p, c| p.join(c));
        let meta = std::fs::symlink_metadata(&candidate).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = std::fs::read_link(&candidate).ok()?;
            let target = target.to_string_lossy();
            if target.starts_with('/') {
                resolved.clear();
            }
            pending.extend(
                target
                    .split('/')
                    .filter(|c| !c.is_empty())
                    .rev()
                    .map(String::from),
            );
        } else {
            resolved.push(component);
        }
    }
    Some(resolved.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_fields_give_package_names() {
        assert_eq!(
            depends_names(
                "libaio1 (>= 0.3.93), libc6 (>= 2.34), python3:any, debconf (>= 0.5) | debconf-2.0"
            ),
            ["libaio1", "libc6", "python3", "debconf"]
        );
        assert!(depends_names("").is_empty());
    }

    #[test]
    fn symlinks_resolve_inside_the_tree_not_on_the_host() {
        let root = std::env::temp_dir().join(format!("vblk-resolve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("lib/x86_64-linux-gnu")).unwrap();
        std::fs::create_dir_all(root.join("lib64")).unwrap();
        std::fs::write(root.join("lib/x86_64-linux-gnu/ld-2.36.so"), b"ld").unwrap();
        std::os::unix::fs::symlink(
            "ld-2.36.so",
            root.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            root.join("lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        std::os::unix::fs::symlink("../../../etc", root.join("lib/x86_64-linux-gnu/up")).unwrap();
        assert_eq!(
            resolve_in(&root, "/lib64/ld-linux-x86-64.so.2"),
            Some(root.join("lib/x86_64-linux-gnu/ld-2.36.so"))
        );
        // ".." stops at the tree's root.
        assert_eq!(resolve_in(&root, "/lib/x86_64-linux-gnu/up/passwd"), None);
        assert_eq!(resolve_in(&root, "/lib/missing.so"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
