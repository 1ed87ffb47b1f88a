//! Kerla's user space for the runs: BusyBox built static against musl with
//! Kerla's own BusyBox configuration (`testing/busybox/config` in the
//! snapshot, as Kerla's Dockerfile builds it) plus the applets the checks
//! use, and `blkcheck` (`kext/kerla/blkcheck.c`, ours), built the same way.
//!
//! Kerla runs musl's static binaries: their system calls are the ones it
//! implements (glibc's static BusyBox calls clone, openat, pipe2,
//! newfstatat and mprotect, which it does not). BusyBox's source is
//! Debian's (`apt-get source --download-only busybox`, its upstream
//! tarball), so the build needs only what apt reaches; if the machine has
//! no `deb-src` entries, matching ones are added first. Everything is
//! cached under `target/kerla/userland` and rebuilt when its inputs change.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::toolchain;

/// Options turned on (or set) over Kerla's configuration: the applets the
/// init script uses, BusyBox's own crypt (musl has none), and no cross
/// prefix (the compiler is named on make's command line).
const CONFIG_CHANGES: [(&str, &str); 12] = [
    ("CONFIG_CROSS_COMPILER_PREFIX", "\"\""),
    ("CONFIG_USE_BB_CRYPT", "y"),
    ("CONFIG_CMP", "y"),
    ("CONFIG_MD5SUM", "y"),
    ("CONFIG_POWEROFF", "y"),
    ("CONFIG_SEQ", "y"),
    ("CONFIG_STAT", "y"),
    ("CONFIG_FEATURE_STAT_FORMAT", "y"),
    ("CONFIG_SYNC", "y"),
    ("CONFIG_TEST", "y"),
    ("CONFIG_TEST1", "y"),
    ("CONFIG_ASH_TEST", "y"),
];

/// The built user-space programs.
pub struct Userland {
    /// Static musl BusyBox.
    pub busybox: PathBuf,
    /// Static musl `blkcheck`.
    pub blkcheck: PathBuf,
    /// `busybox_VERSION.orig.tar.bz2`, for the summary.
    pub busybox_source: String,
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let tail = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        Err(format!(
            "{what} failed ({}):\n{}\n{}",
            output.status,
            tail(&output.stdout),
            tail(&output.stderr)
        ))
    }
}

/// Kerla's BusyBox configuration with [`CONFIG_CHANGES`] applied.
pub fn busybox_config(kerla_config: &str) -> String {
    let mut lines: Vec<String> = kerla_config.lines().map(str::to_string).collect();
    for (name, value) in CONFIG_CHANGES {
        let set = format!("{name}={value}");
        let unset = format!("# {name} is not set");
        match lines
            .iter_mut()
            .find(|line| line.starts_with(&format!("{name}=")) || **line == unset)
        {
            Some(line) => *line = set,
            None => lines.push(set),
        }
    }
    let mut config = lines.join("\n");
    config.push('\n');
    config
}

/// The upstream tarball in `dir`, if one was downloaded.
fn cached_tarball(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with("busybox_") && n.ends_with(".orig.tar.bz2")
            })
        })
        .collect();
    found.sort();
    found.pop()
}

/// `deb-src` twins of the machine's `deb` entries (deb822 `.sources`
/// stanzas and one-line `sources.list` entries), or `None` when there are
/// none to copy.
pub fn deb_src_entries(sources_files: &[(String, String)]) -> Option<String> {
    let mut out = String::new();
    for (name, text) in sources_files {
        if name.ends_with(".sources") {
            for stanza in text.split("\n\n") {
                let is_deb = stanza.lines().any(|l| {
                    l.strip_prefix("Types:")
                        .is_some_and(|types| types.split_whitespace().any(|t| t == "deb"))
                });
                if !is_deb {
                    continue;
                }
                for line in stanza.lines() {
                    if line.starts_with("Types:") {
                        out.push_str("Types: deb-src\n");
                    } else if !line.trim_start().starts_with('#') {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
                out.push('\n');
            }
        } else {
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("deb ") {
                    out.push_str(&format!("deb-src {rest}\n"));
                }
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The machine's apt source files: (name, contents).
fn apt_sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/etc/apt/sources.list") {
        files.push(("sources.list".to_string(), text));
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let name = path.to_string_lossy().into_owned();
            if (name.ends_with(".sources") || name.ends_with(".list"))
                && !name.contains("vblk-kerla")
            {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    files.push((name, text));
                }
            }
        }
    }
    files
}

/// Downloads BusyBox's Debian source into `dir` (once) and returns the
/// upstream tarball.
fn fetch_source(dir: &Path) -> Result<PathBuf, String> {
    if let Some(tarball) = cached_tarball(dir) {
        return Ok(tarball);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let download = || {
        let mut command = toolchain::as_root("apt-get");
        command
            .args(["source", "--download-only", "busybox"])
            .current_dir(dir);
        run(&mut command, "apt-get source --download-only busybox")
    };
    if download().is_err() {
        // No deb-src entries: add twins of the deb ones, then try again.
        let entries = deb_src_entries(&apt_sources())
            .ok_or("apt has no deb entries to derive deb-src entries from")?;
        let target = "/etc/apt/sources.list.d/vblk-kerla-deb-src.sources";
        eprintln!("xtask kerla: adding {target} for BusyBox's source");
        let staged = dir.join("vblk-kerla-deb-src.sources");
        std::fs::write(&staged, entries).map_err(|e| format!("cannot write: {e}"))?;
        run(
            toolchain::as_root("cp").arg(&staged).arg(target),
            &format!("writing {target}"),
        )?;
        run(
            toolchain::as_root("apt-get").arg("update"),
            "apt-get update",
        )?;
        download()?;
    }
    cached_tarball(dir).ok_or_else(|| {
        format!(
            "apt-get source left no busybox tarball in {}",
            dir.display()
        )
    })
}

/// Builds (or finds) BusyBox and blkcheck; `kerla_tree` has Kerla's
/// BusyBox configuration.
pub fn prepare(work: &Path, kerla_tree: &Path, repo: &Path) -> Result<Userland, String> {
    let dir = work.join("userland");
    let tarball = fetch_source(&dir.join("source"))?;
    let kerla_config = kerla_tree.join("testing/busybox/config");
    let config = busybox_config(
        &std::fs::read_to_string(&kerla_config)
            .map_err(|e| format!("cannot read {}: {e}", kerla_config.display()))?,
    );
    let stamp = format!(
        "{}\n{:016x}\n",
        tarball.display(),
        crate::hash::fnv1a(config.as_bytes())
    );
    let busybox = dir.join("busybox");
    let stamp_file = dir.join("busybox.stamp");
    if !busybox.exists() || std::fs::read_to_string(&stamp_file).ok().as_deref() != Some(&stamp) {
        build_busybox(&dir, &tarball, &config)?;
        std::fs::write(&stamp_file, &stamp).map_err(|e| format!("cannot write: {e}"))?;
    }
    let blkcheck = dir.join("blkcheck");
    run(
        Command::new("musl-gcc")
            .args(["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&blkcheck)
            .arg(repo.join("kext/kerla/blkcheck.c")),
        "building blkcheck with musl-gcc",
    )?;
    Ok(Userland {
        busybox,
        blkcheck,
        busybox_source: tarball
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    })
}

fn build_busybox(dir: &Path, tarball: &Path, config: &str) -> Result<(), String> {
    let src = dir.join("busybox-src");
    if src.exists() {
        std::fs::remove_dir_all(&src)
            .map_err(|e| format!("cannot clear {}: {e}", src.display()))?;
    }
    std::fs::create_dir_all(&src).map_err(|e| format!("cannot create {}: {e}", src.display()))?;
    eprintln!(
        "xtask kerla: building BusyBox (musl) from {}",
        tarball.display()
    );
    run(
        Command::new("tar")
            .arg("-xjf")
            .arg(tarball)
            .arg("-C")
            .arg(&src)
            .arg("--strip-components=1"),
        "unpacking BusyBox",
    )?;
    std::fs::write(src.join(".config"), config)
        .map_err(|e| format!("cannot write .config: {e}"))?;
    // New options take their defaults (an empty answer to each question).
    run(
        Command::new("sh")
            .args(["-c", "yes '' | make oldconfig"])
            .current_dir(&src),
        "make oldconfig (BusyBox)",
    )?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    run(
        Command::new("make")
            .arg(format!("-j{jobs}"))
            .arg("CC=musl-gcc")
            .current_dir(&src),
        "make (BusyBox with musl-gcc)",
    )?;
    std::fs::copy(src.join("busybox"), dir.join("busybox"))
        .map_err(|e| format!("cannot copy the built BusyBox: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_changes_replace_set_and_unset_lines_or_append() {
        let kerla =
            "CONFIG_CROSS_COMPILER_PREFIX=\"musl-\"\n# CONFIG_CMP is not set\nCONFIG_DD=y\n";
        let config = busybox_config(kerla);
        assert!(config.contains("CONFIG_CROSS_COMPILER_PREFIX=\"\"\n"));
        assert!(config.contains("CONFIG_CMP=y\n"));
        assert!(!config.contains("# CONFIG_CMP is not set"));
        assert!(config.contains("CONFIG_DD=y\n"));
        assert!(config.contains("CONFIG_SYNC=y\n"), "appended");
    }

    #[test]
    fn deb_src_twins_keep_uris_suites_and_keys() {
        let deb822 = "Types: deb\n# a comment\nURIs: http://deb.example/debian\nSuites: bookworm\n\
                      Components: main\nSigned-By: /usr/share/keyrings/k.gpg\n\n\
                      Types: deb-src\nURIs: http://x\nSuites: y\nComponents: main\n";
        let one_line = "deb http://deb.example/debian bookworm main\n# deb http://old x y\n";
        let entries = deb_src_entries(&[
            (
                "/etc/apt/sources.list.d/debian.sources".into(),
                deb822.into(),
            ),
            ("sources.list".into(), one_line.into()),
        ])
        .unwrap();
        assert!(entries.starts_with("Types: deb-src\nURIs: http://deb.example/debian\n"));
        assert!(entries.contains("Signed-By: /usr/share/keyrings/k.gpg\n"));
        assert!(!entries.contains("a comment"));
        assert_eq!(entries.matches("Types: deb-src").count(), 1, "{entries}");
        assert!(entries.contains("deb-src http://deb.example/debian bookworm main\n"));
        assert!(!entries.contains("http://old"));
        assert_eq!(deb_src_entries(&[]), None);
    }
}
