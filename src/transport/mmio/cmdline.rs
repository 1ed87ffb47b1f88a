//! Finding virtio-mmio devices on the kernel command line.
//!
//! Linux's `virtio_mmio` driver takes devices as
//! `virtio_mmio.device=<size>@<base>:<irq>[:<id>]`, and QEMU's `microvm`
//! machine appends one such parameter per device, e.g.
//! `virtio_mmio.device=512@0xfeb00e00:12`. `<size>` is a number with an
//! optional `K`, `M` or `G` suffix (binary multiples); `<base>` is hex with a
//! `0x` prefix or decimal; `<irq>` and the optional platform-device `<id>`
//! are decimal. As in Linux, `-` and `_` are interchangeable in the name.
//!
//! Parsing allocates nothing and never panics: malformed values come back
//! as [`CmdlineError`]s.

use core::fmt;
use core::str::SplitAsciiWhitespace;

use crate::hal::PhysAddr;

/// The parameter names accepted (Linux treats `-` and `_` alike).
const KEYS: [&str; 2] = ["virtio_mmio.device=", "virtio-mmio.device="];

/// One device from the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDeviceSpec {
    /// Physical address of the register window.
    pub base: PhysAddr,
    /// Window size in bytes.
    pub size: u64,
    /// Interrupt line (GSI).
    pub irq: u32,
    /// Platform device id, when given.
    pub id: Option<u32>,
}

/// Why a `virtio_mmio.device=` value could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError {
    /// The size is missing or not a number (with an optional K/M/G suffix).
    BadSize,
    /// The size is zero.
    ZeroSize,
    /// No `@<base>` follows the size.
    MissingBase,
    /// The base address is not a number.
    BadBase,
    /// No `:<irq>` follows the base address.
    MissingIrq,
    /// The interrupt is not a decimal number that fits 32 bits.
    BadIrq,
    /// The `:<id>` after the interrupt is not a decimal number.
    BadId,
    /// Characters follow the last field.
    TrailingGarbage,
    /// A number, or base + size, does not fit 64 bits.
    Overflow,
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmdlineError::BadSize => "virtio_mmio.device: size is not a number[K|M|G]",
            CmdlineError::ZeroSize => "virtio_mmio.device: size is zero",
            CmdlineError::MissingBase => "virtio_mmio.device: expected @<base> after the size",
            CmdlineError::BadBase => "virtio_mmio.device: base is not a 0x-hex or decimal number",
            CmdlineError::MissingIrq => "virtio_mmio.device: expected :<irq> after the base",
            CmdlineError::BadIrq => "virtio_mmio.device: irq is not a decimal number",
            CmdlineError::BadId => "virtio_mmio.device: id is not a decimal number",
            CmdlineError::TrailingGarbage => "virtio_mmio.device: unexpected text after the irq",
            CmdlineError::Overflow => "virtio_mmio.device: a number is too large",
        })
    }
}

/// Splits a leading number off `s`: `0x` followed by hex digits, or decimal
/// digits. Returns the value and the rest; `Err(Overflow)` when it does not
/// fit, `Ok(None)` when there is no number.
fn number(s: &str) -> Result<Option<(u64, &str)>, CmdlineError> {
    let (digits_from, radix) = match s.as_bytes() {
        [b'0', b'x' | b'X', ..] => (2, 16),
        _ => (0, 10),
    };
    let body = &s[digits_from..];
    let end = body
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(body.len());
    if end == 0 {
        return Ok(None);
    }
    let value = u64::from_str_radix(&body[..end], radix).map_err(|_| CmdlineError::Overflow)?;
    Ok(Some((value, &body[end..])))
}

/// Parses one value, the part after `virtio_mmio.device=`:
/// `<size>[K|M|G]@<base>:<irq>[:<id>]`.
pub fn parse_device(value: &str) -> Result<MmioDeviceSpec, CmdlineError> {
    let (size, rest) = number(value)?.ok_or(CmdlineError::BadSize)?;
    let (shift, rest) = match rest.as_bytes().first() {
        Some(b'k' | b'K') => (10, &rest[1..]),
        Some(b'm' | b'M') => (20, &rest[1..]),
        Some(b'g' | b'G') => (30, &rest[1..]),
        _ => (0, rest),
    };
    let size = size.checked_mul(1 << shift).ok_or(CmdlineError::Overflow)?;
    if size == 0 {
        return Err(CmdlineError::ZeroSize);
    }
    let rest = match rest.strip_prefix('@') {
        Some(rest) => rest,
        None if rest.is_empty() => return Err(CmdlineError::MissingBase),
        None => return Err(CmdlineError::BadSize),
    };

    let (base, rest) = number(rest)?.ok_or(CmdlineError::BadBase)?;
    if base.checked_add(size).is_none() {
        return Err(CmdlineError::Overflow);
    }
    let rest = match rest.strip_prefix(':') {
        Some(rest) => rest,
        None if rest.is_empty() => return Err(CmdlineError::MissingIrq),
        None => return Err(CmdlineError::BadBase),
    };

    let decimal = |s: &str, error| -> Result<(u32, usize), CmdlineError> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let value = s[..end].parse::<u32>().map_err(|_| error)?;
        Ok((value, end))
    };
    let (irq, end) = decimal(rest, CmdlineError::BadIrq)?;
    let rest = &rest[end..];
    let id = match rest.strip_prefix(':') {
        None if rest.is_empty() => None,
        None => return Err(CmdlineError::TrailingGarbage),
        Some(id) => {
            let (id, end) = decimal(id, CmdlineError::BadId)?;
            if end != rest.len() - 1 {
                return Err(CmdlineError::TrailingGarbage);
            }
            Some(id)
        }
    };
    Ok(MmioDeviceSpec {
        base,
        size,
        irq,
        id,
    })
}

/// Every `virtio_mmio.device=` parameter of `cmdline`, in order, each parsed
/// (see [`parse_device`]). Other parameters are skipped.
pub fn cmdline_devices(cmdline: &str) -> CmdlineDevices<'_> {
    CmdlineDevices {
        words: cmdline.split_ascii_whitespace(),
    }
}

/// Iterator returned by [`cmdline_devices`].
#[derive(Clone, Debug)]
pub struct CmdlineDevices<'a> {
    words: SplitAsciiWhitespace<'a>,
}

impl Iterator for CmdlineDevices<'_> {
    type Item = Result<MmioDeviceSpec, CmdlineError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.words.find_map(|word| {
            KEYS.iter()
                .find_map(|key| word.strip_prefix(key))
                .map(parse_device)
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec::Vec;

    fn spec(base: u64, size: u64, irq: u32, id: Option<u32>) -> MmioDeviceSpec {
        MmioDeviceSpec {
            base,
            size,
            irq,
            id,
        }
    }

    #[test]
    fn parses_what_microvm_appends() {
        assert_eq!(
            parse_device("512@0xfeb00e00:12"),
            Ok(spec(0xfeb0_0e00, 512, 12, None))
        );
    }

    #[test]
    fn size_suffixes_are_binary_multiples() {
        assert_eq!(parse_device("4K@0x1000:5").unwrap().size, 4096);
        assert_eq!(parse_device("4k@0x1000:5").unwrap().size, 4096);
        assert_eq!(parse_device("2M@0x1000:5").unwrap().size, 2 << 20);
        assert_eq!(parse_device("1G@0x1000:5").unwrap().size, 1 << 30);
        assert_eq!(parse_device("0x200@0x1000:5").unwrap().size, 0x200);
    }

    #[test]
    fn base_may_be_decimal_and_an_id_may_follow() {
        assert_eq!(
            parse_device("512@4096:7:3"),
            Ok(spec(4096, 512, 7, Some(3)))
        );
        assert_eq!(
            parse_device("0x200@0XFEB00000:33").unwrap().base,
            0xfeb0_0000
        );
    }

    #[test]
    fn garbage_is_rejected_with_its_cause() {
        let cases = [
            ("", CmdlineError::BadSize),
            ("@0x1000:5", CmdlineError::BadSize),
            ("512", CmdlineError::MissingBase),
            ("512Q@0x1000:5", CmdlineError::BadSize),
            ("0@0x1000:5", CmdlineError::ZeroSize),
            ("512@", CmdlineError::BadBase),
            ("512@0x:5", CmdlineError::BadBase),
            ("512@zz:5", CmdlineError::BadBase),
            ("512@0x1000", CmdlineError::MissingIrq),
            ("512@0x1000;5", CmdlineError::BadBase),
            ("512@0x1000:", CmdlineError::BadIrq),
            ("512@0x1000:x", CmdlineError::BadIrq),
            ("512@0x1000:99999999999", CmdlineError::BadIrq),
            ("512@0x1000:5x", CmdlineError::TrailingGarbage),
            ("512@0x1000:5:", CmdlineError::BadId),
            ("512@0x1000:5:1:2", CmdlineError::TrailingGarbage),
            ("99999999999999999999@0x1000:5", CmdlineError::Overflow),
            ("16G@0xffffffffffffffff:5", CmdlineError::Overflow),
            ("17179869184G@0:5", CmdlineError::Overflow),
            ("512@0x1000:5\u{e9}", CmdlineError::TrailingGarbage),
        ];
        for (value, error) in cases {
            assert_eq!(parse_device(value), Err(error), "{value:?}");
        }
    }

    #[test]
    fn finds_every_device_and_skips_other_parameters() {
        let line = "console=ttyS0 virtio_mmio.device=512@0xfeb00e00:12 root=/dev/vda \
                    virtio_mmio.device=4K@0xfeb01000:13:1  virtio-mmio.device=1M@0x10000000:40 \
                    virtio_mmio.device=junk virtio_mmio.devices=512@0x0:1 quiet";
        let found: Vec<_> = cmdline_devices(line).collect();
        assert_eq!(
            found,
            [
                Ok(spec(0xfeb0_0e00, 512, 12, None)),
                Ok(spec(0xfeb0_1000, 4096, 13, Some(1))),
                Ok(spec(0x1000_0000, 1 << 20, 40, None)),
                Err(CmdlineError::BadSize),
            ]
        );
        assert_eq!(cmdline_devices("quiet console=hvc0").count(), 0);
    }
}
