//! Byte counts as fio spells them: `512`, `4k`, `64K`, `1m`, `1g`, `2KiB`,
//! `1MB`, `1t` (binary multiples: k = 1024), read the same by the bench CLI,
//! the guest's command line and `cargo xtask`.

/// Why a byte count could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeError {
    /// No digits before the unit.
    NoNumber,
    /// A unit other than b, k, m, g or t (with an optional `b`/`ib`).
    UnknownUnit,
    /// More than `u64` holds.
    TooLarge,
}

/// Parses a byte count with an optional binary suffix.
pub fn parse_bytes(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(end);
    if number.is_empty() {
        return Err(SizeError::NoNumber);
    }
    let shift = match suffix.as_bytes() {
        [] | [b'b' | b'B'] => 0,
        [unit, rest @ ..] => {
            let shift = match unit.to_ascii_lowercase() {
                b'k' => 10,
                b'm' => 20,
                b'g' => 30,
                b't' => 40,
                _ => return Err(SizeError::UnknownUnit),
            };
            if !matches!(rest, [] | [b'b' | b'B'] | [b'i' | b'I', b'b' | b'B']) {
                return Err(SizeError::UnknownUnit);
            }
            shift
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or(SizeError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_fio_writes_them() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("512b"), Ok(512));
        assert_eq!(parse_bytes("4k"), Ok(4096));
        assert_eq!(parse_bytes("64K"), Ok(65536));
        assert_eq!(parse_bytes(" 1m "), Ok(1 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("2KB"), Ok(2048));
        assert_eq!(parse_bytes("1t"), Ok(1 << 40));
        assert_eq!(parse_bytes("k"), Err(SizeError::NoNumber));
        assert_eq!(parse_bytes(""), Err(SizeError::NoNumber));
        assert_eq!(parse_bytes("4x"), Err(SizeError::UnknownUnit));
        assert_eq!(parse_bytes("4kx"), Err(SizeError::UnknownUnit));
        assert_eq!(parse_bytes("4ki"), Err(SizeError::UnknownUnit));
        assert_eq!(
            parse_bytes("99999999999999999999"),
            Err(SizeError::TooLarge)
        );
        assert_eq!(parse_bytes("16777216t"), Err(SizeError::TooLarge));
    }
}
