//! The scratch Kerla tree under `target/kerla/tree`: the snapshot unpacked
//! (or a source folder copied), the project's patch series applied, and the
//! kext placed in `exts/virtio_blk_mq_kext` (its manifest with Kerla-side
//! paths, its `src` a link to `kext/src`). Kerla's files stay there; none
//! enters the repository.
//!
//! The tree is rebuilt only when its inputs change (the snapshot, the
//! patches), so unchanged files keep their times and cargo rebuilds only
//! what the kext's sources touch.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The snapshot `../shared/kerla/` holds (relative to the repository root).
pub const DEFAULT_SNAPSHOT: &str = "../shared/kerla/kerla-d8b173a.tar.gz";
/// Where the kext goes inside Kerla's workspace (`exts/*` are members).
const KEXT_DIR: &str = "exts/virtio_blk_mq_kext";
/// Records what the tree was made from.
const STAMP: &str = ".vblk-tree-stamp";

/// Where Kerla's source comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A `git archive --prefix=kerla/` tarball.
    Tarball(PathBuf),
    /// An unpacked tree (copied, never modified).
    Folder(PathBuf),
}

impl Source {
    /// `--kerla-src` / `KERLA_SRC` if given (a tarball or a folder), else
    /// the snapshot in `../shared/kerla/`. A missing source is an error
    /// that says where it looked.
    pub fn locate(given: Option<&Path>, repo: &Path) -> Result<Source, String> {
        let path = match given {
            Some(path) => path.to_path_buf(),
            None => repo.join(DEFAULT_SNAPSHOT),
        };
        if path.is_dir() {
            Ok(Source::Folder(path))
        } else if path.is_file() {
            Ok(Source::Tarball(path))
        } else {
            Err(format!(
                "no Kerla source at {} (the snapshot lives in ../shared/kerla/ beside the \
                 repository; or pass --kerla-src DIR|TARBALL, or set KERLA_SRC)",
                path.display()
            ))
        }
    }

    fn describe(&self) -> String {
        let (kind, path) = match self {
            Source::Tarball(path) => ("tarball", path),
            Source::Folder(path) => ("folder", path),
        };
        let stamp = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        format!("{kind} {} {stamp}", path.display())
    }
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The patch files of the series, in order (`*.patch`, by name).
pub fn series(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut patches: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the patch series {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "patch"))
        .collect();
    patches.sort();
    if patches.is_empty() {
        return Err(format!("no patches in {}", dir.display()));
    }
    Ok(patches)
}

/// What the tree is made from, as text: changes when any input does.
fn stamp(source: &Source, patches: &[PathBuf]) -> Result<String, String> {
    let mut text = format!("{}\n", source.describe());
    for patch in patches {
        let bytes =
            std::fs::read(patch).map_err(|e| format!("cannot read {}: {e}", patch.display()))?;
        text.push_str(&format!(
            "{} {:016x}\n",
            patch.display(),
            crate::hash::fnv1a(&bytes)
        ));
    }
    Ok(text)
}

/// Makes `tree` Kerla's source with `patches` applied (unless it already
/// is), then places the kext. Returns whether the tree was rebuilt.
pub fn prepare(
    tree: &Path,
    source: &Source,
    patches: &[PathBuf],
    repo: &Path,
) -> Result<bool, String> {
    let wanted = stamp(source, patches)?;
    let rebuilt = std::fs::read_to_string(tree.join(STAMP)).ok().as_deref() != Some(&wanted);
    if rebuilt {
        if tree.exists() {
            std::fs::remove_dir_all(tree)
                .map_err(|e| format!("cannot clear {}: {e}", tree.display()))?;
        }
        unpack(source, tree)?;
        for patch in patches {
            apply(tree, patch)?;
        }
        std::fs::write(tree.join(STAMP), &wanted)
            .map_err(|e| format!("cannot write the tree's stamp: {e}"))?;
    }
    place_kext(tree, repo)?;
    Ok(rebuilt)
}

fn unpack(source: &Source, tree: &Path) -> Result<(), String> {
    let parent = tree.parent().ok_or("the tree has no parent folder")?;
    std::fs::create_dir_all(tree).map_err(|e| format!("cannot create {}: {e}", tree.display()))?;
    match source {
        Source::Tarball(tarball) => run(
            Command::new("tar")
                .arg("-xzf")
                .arg(tarball)
                .arg("-C")
                .arg(tree)
                .arg("--strip-components=1"),
            &format!("unpacking {}", tarball.display()),
        ),
        Source::Folder(folder) => run(
            Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", folder.display()))
                .arg(tree),
            &format!("copying {}", folder.display()),
        ),
    }
    .map_err(|e| format!("{e} (into {})", parent.display()))
}

/// `git apply`, kept from looking for a repository above the tree (ours:
/// it would then apply paths relative to our root, or skip them).
fn apply(tree: &Path, patch: &Path) -> Result<(), String> {
    let ceiling = tree.parent().unwrap_or(tree);
    run(
        Command::new("git")
            .arg("apply")
            .arg("--whitespace=nowarn")
            .arg(patch)
            .current_dir(tree)
            .env("GIT_CEILING_DIRECTORIES", ceiling),
        &format!("applying {}", patch.display()),
    )
}

/// The kext's manifest with Kerla-side paths: `kerla_api` becomes Kerla's
/// own, the project's crates absolute paths into the repository. Every
/// path dependency must be one of those, or this fails (a new one would
/// otherwise point nowhere).
pub fn kext_manifest(manifest: &str, repo: &Path) -> Result<String, String> {
    let mut out = String::new();
    for line in manifest.lines() {
        let rewritten = match line.split_once("= { path = \"") {
            Some((name, rest)) => {
                let name = name.trim();
                let (path, tail) = rest
                    .split_once('"')
                    .ok_or_else(|| format!("kext/Cargo.toml: cannot read the line {line:?}"))?;
                let target = if name == "kerla_api" {
                    "../../libs/kerla_api".to_string()
                } else {
                    let resolved = repo.join("kext").join(path);
                    let resolved = resolved
                        .canonicalize()
                        .map_err(|e| format!("kext/Cargo.toml: {name}: {e}"))?;
                    resolved.to_string_lossy().into_owned()
                };
                format!("{name} = {{ path = \"{target}\"{tail}")
            }
            None => line.to_string(),
        };
        out.push_str(&rewritten);
        out.push('\n');
    }
    if !out.contains("kerla_api = { path = \"../../libs/kerla_api\"") {
        return Err("kext/Cargo.toml has no kerla_api path dependency to point at Kerla's".into());
    }
    Ok(out)
}

fn place_kext(tree: &Path, repo: &Path) -> Result<(), String> {
    let dir = tree.join(KEXT_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let source = repo.join("kext/Cargo.toml");
    let manifest = std::fs::read_to_string(&source)
        .map_err(|e| format!("cannot read {}: {e}", source.display()))?;
    let manifest = kext_manifest(&manifest, repo)?;
    let target = dir.join("Cargo.toml");
    // Written only when it changes, so cargo sees no change otherwise.
    if std::fs::read_to_string(&target).ok().as_deref() != Some(manifest.as_str()) {
        std::fs::write(&target, manifest)
            .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
    }
    let link = dir.join("src");
    let wanted = repo.join("kext/src");
    if std::fs::read_link(&link).ok().as_deref() != Some(wanted.as_path()) {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&wanted, &link)
            .map_err(|e| format!("cannot link {}: {e}", link.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_points_at_kerlas_api_and_the_repository() {
        let repo = crate::qemu::repo_root();
        let manifest = std::fs::read_to_string(repo.join("kext/Cargo.toml")).unwrap();
        let rewritten = kext_manifest(&manifest, &repo).unwrap();
        assert!(rewritten.contains("kerla_api = { path = \"../../libs/kerla_api\" }"));
        let root = repo.canonicalize().unwrap();
        assert!(
            rewritten.contains(&format!(
                "virtio-blk-mq = {{ path = \"{}\" }}",
                root.display()
            )),
            "{rewritten}"
        );
        assert!(!rewritten.contains("path = \"..\""), "{rewritten}");
        // Kerla's workspace has no [workspace.package] to inherit from.
        assert!(!rewritten.contains(".workspace"), "{rewritten}");
    }

    #[test]
    fn a_manifest_without_kerla_api_is_refused() {
        let error = kext_manifest("[dependencies]\nlog = \"0.4\"\n", Path::new("/")).unwrap_err();
        assert!(error.contains("kerla_api"), "{error}");
    }

    #[test]
    fn the_series_is_in_name_order_and_not_empty() {
        let dir = crate::qemu::repo_root().join("kext/kerla/patches");
        let patches = series(&dir).unwrap();
        assert!(patches.len() >= 2);
        assert!(patches.windows(2).all(|w| w[0] < w[1]));
        assert!(series(Path::new("/nonexistent")).is_err());
    }
}
