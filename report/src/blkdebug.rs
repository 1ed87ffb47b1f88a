//! I/O errors to inject with QEMU's `blkdebug` block driver: as a flag
//! writes them (`read:2048`, `write:4096:once`) and as a `-blockdev` /
//! `--blockdev` option string takes them.
//!
//! A rule fails, with EIO, every request of its direction whose sectors
//! include its sector; with `once`, only the first such request. Rules hang
//! on blkdebug's `none` event, which fires when the node opens, so they are
//! armed from the first request on and no other event disarms them.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// EIO, the errno the rules inject.
pub const EIO: u32 = 5;

/// Which requests a rule fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Reads.
    Read,
    /// Writes.
    Write,
}

impl Op {
    /// The name in flags and in blkdebug's `iotype`.
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
        }
    }
}

/// One injected error: `OP:SECTOR[:once]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The direction it fails.
    pub op: Op,
    /// A 512-byte sector: requests that include it fail.
    pub sector: u64,
    /// Fail only the first such request.
    pub once: bool,
}

impl Rule {
    /// Parses `read:SECTOR`, `write:SECTOR`, optionally followed by `:once`.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let form = "expected read:SECTOR or write:SECTOR, optionally followed by :once";
        let mut parts = text.split(':');
        let op = match parts.next() {
            Some("read") => Op::Read,
            Some("write") => Op::Write,
            _ => return Err(format!("`{text}`: {form}")),
        };
        let sector = parts
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| format!("`{text}`: the sector is not a number; {form}"))?;
        let once = match parts.next() {
            None => false,
            Some("once") => true,
            Some(_) => return Err(format!("`{text}`: {form}")),
        };
        if parts.next().is_some() {
            return Err(format!("`{text}`: {form}"));
        }
        Ok(Rule { op, sector, once })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.op.name(), self.sector)?;
        if self.once {
            write!(f, ":once")?;
        }
        Ok(())
    }
}

/// The rules as blkdebug's options (`inject-error.N.*`, comma-separated),
/// to follow `driver=blkdebug,node-name=...,image=...,`.
pub fn inject_error_options(rules: &[Rule]) -> String {
    let options: Vec<String> = rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            format!(
                "inject-error.{i}.event=none,inject-error.{i}.iotype={},\
                 inject-error.{i}.sector={},inject-error.{i}.once={},\
                 inject-error.{i}.errno={EIO}",
                rule.op.name(),
                rule.sector,
                if rule.once { "on" } else { "off" },
            )
        })
        .collect();
    options.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn rules_parse_and_print_the_same() {
        for text in ["read:0", "write:4096", "read:2048:once"] {
            assert_eq!(Rule::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            Rule::parse("write:8:once"),
            Ok(Rule {
                op: Op::Write,
                sector: 8,
                once: true
            })
        );
    }

    #[test]
    fn bad_rules_say_what_is_expected() {
        for text in [
            "",
            "read",
            "read:",
            "flush:8",
            "read:-1",
            "read:8:twice",
            "read:8:once:x",
        ] {
            let error = Rule::parse(text).unwrap_err();
            assert!(error.contains("read:SECTOR"), "{text}: {error}");
        }
    }

    #[test]
    fn options_number_each_rule_on_the_none_event() {
        let rules = [
            Rule::parse("read:16").unwrap(),
            Rule::parse("write:24:once").unwrap(),
        ];
        assert_eq!(
            inject_error_options(&rules),
            "inject-error.0.event=none,inject-error.0.iotype=read,inject-error.0.sector=16,\
             inject-error.0.once=off,inject-error.0.errno=5,\
             inject-error.1.event=none,inject-error.1.iotype=write,inject-error.1.sector=24,\
             inject-error.1.once=on,inject-error.1.errno=5"
        );
        assert_eq!(inject_error_options(&[]), "");
    }
}
