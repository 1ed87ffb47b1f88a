//! The driver's layers point one way (DESIGN.md §1): every module of `src/`
//! uses only modules of lower layers, or of its own unit. The check reads the
//! source: each `crate::`, `$crate::` and `super::` path outside comments,
//! strings and test-only code counts as an edge. A path to an item of the
//! crate root (a re-export) counts as a violation too, since it would hide
//! which module it reaches.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every top-level module of the crate: its layer (0 at the bottom) and its
/// unit. A module may use the modules of lower layers and those of its own
/// unit; modules of one layer but different units stay apart.
const MODULES: &[(&str, u8, &str)] = &[
    ("sync", 0, "sync"),
    ("spec", 1, "spec"),
    ("barrier", 1, "barrier"),
    ("error", 1, "error"),
    ("hal", 1, "hal"),
    ("shared", 2, "shared"),
    ("snapshot", 2, "snapshot"),
    ("ring", 3, "rings"),
    ("split_ring", 3, "rings"),
    ("packed_ring", 3, "rings"),
    ("transport", 4, "transport"),
    ("blk", 5, "blk"),
    ("mq", 6, "mq"),
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    Punct(char),
    /// `::`
    Path,
}

/// The tokens of `source` that paths are made of; comments, string and
/// character literals and lifetimes are dropped.
fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r'
            && matches!(next, Some('"') | Some('#'))
            && raw_string_end(&chars, i).is_some()
        {
            i = raw_string_end(&chars, i).unwrap_or(chars.len());
        } else if c == 'b' && next == Some('"') {
            i = string_end(&chars, i + 1);
        } else if c == '"' {
            i = string_end(&chars, i);
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_alphabetic() || c == '_' || c == '$' {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c == ':' && next == Some(':') {
            out.push(Token::Path);
            i += 2;
        } else if c.is_whitespace() || c.is_ascii_digit() {
            i += 1;
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

/// Index just past the string literal whose opening quote is at `i`.
fn string_end(chars: &[char], mut i: usize) -> usize {
    i += 1;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// Index just past the raw string literal `r#*"..."#*` starting at `i`, if
/// one starts there.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i + 1;
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(j)
}

fn ident(token: Option<&Token>) -> Option<&str> {
    match token {
        Some(Token::Ident(name)) => Some(name),
        _ => None,
    }
}

/// Whether the attribute whose `#` is at `at` is `#[cfg(test)]` or
/// `#[cfg(all(.., test, ..))]`: code compiled for tests only. Returns the
/// index just past the attribute too.
fn attribute(tokens: &[Token], at: usize) -> (bool, usize) {
    let mut depth = 0;
    let mut end = at + 1;
    while end < tokens.len() {
        match tokens[end] {
            Token::Punct('[') | Token::Punct('(') => depth += 1,
            Token::Punct(']') | Token::Punct(')') => {
                depth -= 1;
                if depth == 0 {
                    end += 1;
                    break;
                }
            }
            _ => {}
        }
        end += 1;
    }
    let inner: Vec<&str> = tokens[at + 1..end]
        .iter()
        .filter_map(|t| ident(Some(t)))
        .collect();
    let test_only = match inner.as_slice() {
        ["cfg", "test"] => true,
        ["cfg", "all", rest @ ..] => rest.contains(&"test"),
        _ => false,
    };
    (test_only, end)
}

/// Index just past the item starting at `at`: its `;` or its `{ .. }` block,
/// whichever comes first outside brackets.
fn item_end(tokens: &[Token], mut at: usize) -> usize {
    let mut depth = 0;
    while at < tokens.len() {
        match tokens[at] {
            Token::Punct('(') | Token::Punct('[') => depth += 1,
            Token::Punct(')') | Token::Punct(']') => depth -= 1,
            Token::Punct(';') if depth == 0 => return at + 1,
            Token::Punct('{') if depth == 0 => return block_end(tokens, at),
            _ => {}
        }
        at += 1;
    }
    at
}

/// Index just past the `}` matching the `{` at `open`.
fn block_end(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0;
    for (i, token) in tokens.iter().enumerate().skip(open) {
        match token {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    tokens.len()
}

/// What one source file references.
#[derive(Debug, Default, PartialEq, Eq)]
struct Refs {
    /// Top-level modules reached by a path (`crate::blk::..` gives `blk`).
    modules: BTreeSet<String>,
    /// Items named straight off the crate root (`crate::BlkQueue`).
    root_items: BTreeSet<String>,
    /// Out-of-line modules declared test-only here (`#[cfg(test)] mod x;`),
    /// as module paths.
    test_modules: BTreeSet<Vec<String>>,
}

/// The references of the file holding module `path` (empty: the crate root).
fn references(source: &str, path: &[String]) -> Refs {
    let tokens = tokens(source);
    let mut refs = Refs::default();
    // Inline modules around the current token: name and the token index
    // where each one's block ends.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        while inline.last().is_some_and(|&(_, end)| i >= end) {
            inline.pop();
        }
        let here = || -> Vec<String> {
            let mut p = path.to_vec();
            p.extend(inline.iter().map(|(name, _)| name.clone()));
            p
        };
        match &tokens[i] {
            Token::Punct('#') if tokens.get(i + 1) == Some(&Token::Punct('[')) => {
                let (test_only, end) = attribute(&tokens, i);
                if !test_only {
                    i = end;
                    continue;
                }
                // Skip further attributes, then the item they guard.
                let mut at = end;
                while tokens.get(at) == Some(&Token::Punct('#')) {
                    at = attribute(&tokens, at).1;
                }
                let mut name_at = at;
                while ident(tokens.get(name_at)).is_some_and(|w| w == "pub")
                    || tokens.get(name_at) == Some(&Token::Punct('('))
                    || ident(tokens.get(name_at)).is_some_and(|w| w == "crate" || w == "super")
                    || tokens.get(name_at) == Some(&Token::Punct(')'))
                {
                    name_at += 1;
                }
                if ident(tokens.get(name_at)) == Some("mod")
                    && tokens.get(name_at + 2) == Some(&Token::Punct(';'))
                {
                    if let Some(name) = ident(tokens.get(name_at + 1)) {
                        let mut module = here();
                        module.push(name.to_string());
                        refs.test_modules.insert(module);
                    }
                }
                i = item_end(&tokens, at);
                continue;
            }
            Token::Ident(word) if word == "mod" => {
                if let (Some(name), Some(Token::Punct('{'))) =
                    (ident(tokens.get(i + 1)), tokens.get(i + 2))
                {
                    inline.push((name.to_string(), block_end(&tokens, i + 2)));
                    i += 3;
                    continue;
                }
            }
            Token::Ident(word)
                if (word == "crate" || word == "$crate" || word == "super")
                    && tokens.get(i + 1) == Some(&Token::Path)
                    // `pub(crate)`, `pub(super)` are visibility, not paths.
                    && !(i > 0 && tokens[i - 1] == Token::Punct('(')) =>
            {
                let mut target = if word == "super" {
                    let mut p = here();
                    p.pop();
                    p
                } else {
                    Vec::new()
                };
                let mut j = i + 2;
                while ident(tokens.get(j)) == Some("super")
                    && tokens.get(j + 1) == Some(&Token::Path)
                {
                    target.pop();
                    j += 2;
                }
                let names: Vec<String> = if target.is_empty() {
                    match tokens.get(j) {
                        Some(Token::Punct('{')) => group_heads(&tokens[j..block_end(&tokens, j)]),
                        Some(Token::Ident(name)) => vec![name.clone()],
                        _ => Vec::new(),
                    }
                } else {
                    vec![target[0].clone()]
                };
                for name in names {
                    if MODULES.iter().any(|&(m, _, _)| m == name) {
                        refs.modules.insert(name);
                    } else if name != "self" {
                        refs.root_items.insert(name);
                    }
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    refs
}

/// The first name of each element of a `{a::b, c, d::{e, f}}` group.
fn group_heads(group: &[Token]) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect = true;
    for token in group {
        match token {
            Token::Punct('{') => {
                depth += 1;
                if depth == 1 {
                    expect = true;
                    continue;
                }
            }
            Token::Punct('}') => depth -= 1,
            Token::Punct(',') if depth == 1 => {
                expect = true;
                continue;
            }
            Token::Ident(name) if depth == 1 && expect => heads.push(name.clone()),
            _ => {}
        }
        expect = false;
    }
    heads
}

/// Module path of a file under `src/`: `transport/pci.rs` is
/// `[transport, pci]`, `transport/mod.rs` is `[transport]`, `lib.rs` is `[]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap_or_default();
    let stem = file.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every arrow that runs the wrong way in `files` (module path, source).
fn violations(files: &[(Vec<String>, String)]) -> Vec<String> {
    let parsed: Vec<(&Vec<String>, Refs)> = files
        .iter()
        .map(|(path, source)| (path, references(source, path)))
        .collect();
    let test_only: BTreeSet<&Vec<String>> =
        parsed.iter().flat_map(|(_, r)| &r.test_modules).collect();
    let mut found = Vec::new();
    for (path, refs) in &parsed {
        let Some(top) = path.first() else {
            continue; // the crate root re-exports everything
        };
        if (1..=path.len()).any(|n| test_only.contains(&path[..n].to_vec())) {
            continue;
        }
        let name = path.join("::");
        let Some(&(_, layer, unit)) = MODULES.iter().find(|&&(m, _, _)| m == top) else {
            found.push(format!("{name}: module `{top}` has no layer in MODULES"));
            continue;
        };
        for used in &refs.modules {
            let &(_, used_layer, used_unit) = MODULES
                .iter()
                .find(|&&(m, _, _)| m == used)
                .expect("only known modules are collected");
            if used_unit != unit && used_layer >= layer {
                found.push(format!(
                    "{name} (layer {layer}) uses {used} (layer {used_layer})"
                ));
            }
        }
        for item in &refs.root_items {
            found.push(format!(
                "{name} names crate::{item}: use the defining module's path"
            ));
        }
    }
    found
}

fn sources() -> Vec<(Vec<String>, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .iter()
        .map(|file| {
            let relative = file.strip_prefix(&src).expect("under src/");
            let source = std::fs::read_to_string(file).expect("a readable source file");
            (module_path(relative), source)
        })
        .collect()
}

#[test]
fn every_module_uses_only_lower_layers() {
    let files = sources();
    assert!(files.len() > 20, "found the crate's sources");
    let found = violations(&files);
    assert!(
        found.is_empty(),
        "arrows that run the wrong way:\n{}",
        found.join("\n")
    );
}

/// Sources for the checker's own tests.
fn fake(files: &[(&str, &str)]) -> Vec<(Vec<String>, String)> {
    files
        .iter()
        .map(|&(path, source)| (module_path(Path::new(path)), source.to_string()))
        .collect()
}

#[test]
fn the_check_sees_an_upward_arrow() {
    for (file, source) in [
        ("blk.rs", "use crate::mq::QueueSet;"),
        (
            "blk/queue.rs",
            "fn f() -> crate::mq::SharedQueue<H, N> { todo!() }",
        ),
        ("ring.rs", "use crate::transport::QueueAddresses;"),
        (
            "split_ring.rs",
            "use crate::{hal::Hal, transport::QueueAddresses};",
        ),
        (
            "error.rs",
            "impl From<crate::transport::TransportError> for Error {}",
        ),
        ("transport/vhost_user.rs", "use super::super::mq::IrqWait;"),
        ("spec.rs", "use crate::hal::PhysAddr;"),
        ("hal.rs", "mod inner { use super::super::blk::BlkQueue; }"),
    ] {
        let found = violations(&fake(&[(file, source)]));
        assert_eq!(found.len(), 1, "{file}: {source}: {found:?}");
    }
}

#[test]
fn the_check_lets_downward_arrows_and_test_code_pass() {
    let files = fake(&[
        (
            "lib.rs",
            "#[cfg(all(test, loom))]\nmod loom_model;\npub use mq::QueueSet;",
        ),
        ("loom_model.rs", "use crate::mq::X;"),
        (
            "mq.rs",
            "use crate::blk::BlkQueue;\nmod std_support { use super::IrqWait; }",
        ),
        (
            "blk.rs",
            "pub(crate) fn f() {}\nuse crate::transport::Transport; // crate::mq::QueueSet\n\
             const S: &str = \"crate::mq::X\";\n\
             #[cfg(test)]\nmod tests { use crate::mq::QueueSet; }\n\
             #[cfg(test)]\nmod more;",
        ),
        ("blk/more.rs", "use crate::mq::QueueSet;"),
        (
            "transport/pci.rs",
            "use super::QueueNotifier; use crate::ring::QueueAddresses;",
        ),
        (
            "ring.rs",
            "use crate::split_ring::SplitRing; fn f<'a>(c: char) -> bool { c == '{' }",
        ),
        ("split_ring.rs", "use crate::ring::Segment;"),
    ]);
    assert_eq!(violations(&files), Vec::<String>::new());
}

#[test]
fn the_check_refuses_a_root_path_and_an_unplaced_module() {
    let found = violations(&fake(&[("blk.rs", "use crate::QueueSet;")]));
    assert_eq!(found.len(), 1, "{found:?}");
    let found = violations(&fake(&[("cache.rs", "")]));
    assert_eq!(found.len(), 1, "{found:?}");
}
