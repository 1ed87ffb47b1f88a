//! The host's side of the proof: after Kerla halted, every byte of the disk
//! image is accounted for. The kext's self-test stamps must be in its
//! regions (sector number, generation, checksum, pattern), the init
//! script's dd writes must hold the pattern it wrote, the throughput copy
//! must equal what it copied, blkcheck's scratch areas are skipped (it
//! checks them itself, in the guest), and every other byte must be zero.
//! So a write that went to the wrong place, or never reached the disk,
//! fails here.

use std::ops::Range;

use vblk_report::verify::{self, SECTOR, SELF_TEST_MIN_SECTORS};

const MIB: u64 = 1 << 20;

/// What a region of the disk must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The self-test's stamp of this generation (sector-aligned regions).
    Stamp(u32),
    /// These bytes.
    Bytes(Vec<u8>),
    /// The same bytes as this other range of the disk.
    CopyOf(Range<u64>),
    /// Anything: a program checked it itself.
    Scratch,
}

/// A byte range of the disk and what it must hold.
#[derive(Clone, Debug)]
pub struct Region {
    /// Bytes of the disk.
    pub bytes: Range<u64>,
    /// What they must hold.
    pub expect: Expect,
    /// Who wrote it, for messages.
    pub what: String,
}

/// What the image held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DiskCheck {
    /// Bytes matched against a stamp, a pattern or a copy.
    pub checked: u64,
    /// Bytes checked to be zero.
    pub zero: u64,
    /// Bytes left to a program's own check.
    pub scratch: u64,
}

/// One of the init script's dd round trips: `len` bytes of the pattern from
/// `from`, written at byte `at` of the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserCase {
    /// Its name in the script.
    pub name: String,
    /// Offset in the pattern.
    pub from: u64,
    /// Offset on the disk.
    pub at: u64,
    /// Bytes.
    pub len: u64,
}

/// The `CASES` block of the init script: `name from at len` per line.
pub fn user_cases(script: &str) -> Result<Vec<UserCase>, String> {
    let start = script
        .find("CASES=\"")
        .ok_or("the init script has no CASES=\"...\" block")?
        + "CASES=\"".len();
    let block = &script[start..];
    let block = &block[..block.find('"').ok_or("the CASES block never ends")?];
    block
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let number = |i: usize| -> Result<u64, String> {
                fields
                    .get(i)
                    .and_then(|f| f.parse().ok())
                    .ok_or_else(|| format!("CASES line {line:?}: field {i} is not a number"))
            };
            if fields.len() != 4 {
                return Err(format!("CASES line {line:?}: want `name from at len`"));
            }
            Ok(UserCase {
                name: fields[0].to_string(),
                from: number(1)?,
                at: number(2)?,
                len: number(3)?,
            })
        })
        .collect()
}

/// Bytes of the init script's pattern.
pub const PATTERN_BYTES: usize = 262_144;

/// The pattern the init script writes: the first 256 KiB of BusyBox's
/// `seq 1 50000`.
pub fn pattern() -> Vec<u8> {
    let mut text: Vec<u8> = (1..=50_000u32)
        .flat_map(|n| format!("{n}\n").into_bytes())
        .collect();
    text.truncate(PATTERN_BYTES);
    text
}

/// Everything a boot of `cargo xtask kerla` writes on a disk of `size`
/// bytes: the self-test (stamped with `generation`), the init script's
/// `cases`, blkcheck's scratch areas (beside `write_error_sector`), and the
/// throughput copy of the first 16 MiB to 32 MiB.
pub fn boot_layout(
    size: u64,
    generation: u32,
    cases: &[UserCase],
    write_error_sector: u64,
) -> Result<Vec<Region>, String> {
    let sector = SECTOR as u64;
    let mut regions: Vec<Region> = verify::self_test_regions(size / sector)
        .into_iter()
        .map(|sectors| Region {
            bytes: sectors.start * sector..sectors.end * sector,
            expect: Expect::Stamp(generation),
            what: "the kext's self-test".into(),
        })
        .collect();
    let pattern = pattern();
    for case in cases {
        // Offsets run through the pattern repeated.
        let bytes: Vec<u8> = (case.from..case.from + case.len)
            .map(|i| pattern[i as usize % PATTERN_BYTES])
            .collect();
        regions.push(Region {
            bytes: case.at..case.at + case.len,
            expect: Expect::Bytes(bytes),
            what: format!("dd case {}", case.name),
        });
    }
    // kext/kerla/blkcheck.c's writes (its last-sector write puts back the
    // bytes already there, so the self-test's stamp stays).
    for bytes in [
        16 * MIB..16 * MIB + 8192,
        20 * MIB + 3..20 * MIB + 3 + 65536,
        (write_error_sector + 1) * sector..(write_error_sector + 2) * sector,
    ] {
        regions.push(Region {
            bytes,
            expect: Expect::Scratch,
            what: "blkcheck".into(),
        });
    }
    regions.push(Region {
        bytes: 32 * MIB..48 * MIB,
        expect: Expect::CopyOf(0..16 * MIB),
        what: "the throughput copy".into(),
    });
    Ok(regions)
}

/// Checks `image` against `regions`; every byte outside them must be zero.
pub fn check(image: &[u8], regions: &[Region]) -> Result<DiskCheck, String> {
    let size = image.len() as u64;
    if size < SELF_TEST_MIN_SECTORS * SECTOR as u64 {
        return Err(format!("the image is {size} bytes: too small"));
    }
    let mut sorted: Vec<&Region> = regions.iter().collect();
    sorted.sort_by_key(|r| r.bytes.start);
    for pair in sorted.windows(2) {
        if pair[0].bytes.end > pair[1].bytes.start {
            return Err(format!(
                "{} ({:?}) and {} ({:?}) overlap",
                pair[0].what, pair[0].bytes, pair[1].what, pair[1].bytes
            ));
        }
    }
    let slice = |range: &Range<u64>| -> Result<&[u8], String> {
        image
            .get(range.start as usize..range.end as usize)
            .ok_or_else(|| format!("{range:?} lies past the end of the {size}-byte image"))
    };
    let mut result = DiskCheck::default();
    let mut at = 0;
    for region in sorted {
        let gap = at..region.bytes.start;
        if let Some(offset) = slice(&gap)?.iter().position(|&b| b != 0) {
            return Err(format!(
                "byte {} is not zero, and nothing should have written it",
                gap.start + offset as u64
            ));
        }
        result.zero += gap.end - gap.start;
        let bytes = slice(&region.bytes)?;
        let len = region.bytes.end - region.bytes.start;
        let differs = |want: &[u8]| {
            bytes
                .iter()
                .zip(want)
                .position(|(a, b)| a != b)
                .map(|i| region.bytes.start + i as u64)
        };
        match &region.expect {
            Expect::Stamp(generation) => {
                let first = region.bytes.start / SECTOR as u64;
                verify::check(bytes, first, *generation).map_err(|mismatch| {
                    format!(
                        "{}: sector {} {}",
                        region.what, mismatch.sector, mismatch.what
                    )
                })?;
                result.checked += len;
            }
            Expect::Bytes(want) => {
                if let Some(byte) = differs(want) {
                    return Err(format!(
                        "{}: byte {byte} differs from what was written",
                        region.what
                    ));
                }
                result.checked += len;
            }
            Expect::CopyOf(source) => {
                if let Some(byte) = differs(slice(source)?) {
                    return Err(format!(
                        "{}: byte {byte} differs from its source {source:?}",
                        region.what
                    ));
                }
                result.checked += len;
            }
            Expect::Scratch => result.scratch += len,
        }
        at = region.bytes.end;
    }
    let tail = at..size;
    if let Some(offset) = slice(&tail)?.iter().position(|&b| b != 0) {
        return Err(format!(
            "byte {} is not zero, and nothing should have written it",
            tail.start + offset as u64
        ));
    }
    result.zero += tail.end - tail.start;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u64 = 64 * MIB;
    const SCRIPT: &str = "x\nCASES=\"4k 0 1048576 4096\nodd 1000 8389385 3001\"\n";

    fn layout() -> Vec<Region> {
        boot_layout(SIZE, 9, &user_cases(SCRIPT).unwrap(), 120_008).unwrap()
    }

    /// The image a correct boot leaves.
    fn good_image() -> Vec<u8> {
        let mut image = vec![0u8; SIZE as usize];
        for region in layout() {
            let range = region.bytes.start as usize..region.bytes.end as usize;
            match region.expect {
                Expect::Stamp(generation) => verify::stamp(
                    &mut image[range.clone()],
                    region.bytes.start / 512,
                    generation,
                ),
                Expect::Bytes(bytes) => image[range].copy_from_slice(&bytes),
                Expect::CopyOf(_) | Expect::Scratch => {}
            }
        }
        let first = image[..(16 * MIB) as usize].to_vec();
        image[(32 * MIB) as usize..(48 * MIB) as usize].copy_from_slice(&first);
        image[(16 * MIB) as usize] = 0x77; // blkcheck scribbled here
        image
    }

    #[test]
    fn the_cases_are_read_from_the_script() {
        let cases = user_cases(SCRIPT).unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(
            cases[1],
            UserCase {
                name: "odd".into(),
                from: 1000,
                at: 8_389_385,
                len: 3001
            }
        );
        assert!(user_cases("no cases").is_err());
        assert!(user_cases("CASES=\"a 1 2\"").is_err());
    }

    #[test]
    fn the_real_script_has_the_cases_the_issue_names() {
        let script = include_str!("../../../kext/kerla/init.sh");
        let lens: Vec<u64> = user_cases(script).unwrap().iter().map(|c| c.len).collect();
        for len in [4096, 65536, 1 << 20] {
            assert!(lens.contains(&len), "{lens:?}");
        }
        assert!(user_cases(script).unwrap().iter().any(|c| c.at % 512 != 0));
    }

    #[test]
    fn the_pattern_is_seqs_output() {
        let pattern = pattern();
        assert!(pattern.starts_with(b"1\n2\n3\n"));
        assert_eq!(pattern.len(), PATTERN_BYTES);
        let layout =
            boot_layout(SIZE, 9, &user_cases("CASES=\"x 262140 0 8\"").unwrap(), 9).unwrap();
        let Expect::Bytes(bytes) = &layout[3].expect else {
            panic!("{layout:?}")
        };
        assert_eq!(bytes[4..], *b"1\n2\n", "wraps to the pattern's start");
    }

    #[test]
    fn a_correct_image_passes_and_every_byte_is_accounted_for() {
        let check = check(&good_image(), &layout()).unwrap();
        assert_eq!(check.checked + check.zero + check.scratch, SIZE);
        assert_eq!(check.checked, (8 + 200 + 8) * 512 + 4096 + 3001 + 16 * MIB);
    }

    #[test]
    fn a_wrong_stamp_fails() {
        let image = good_image();
        let other = boot_layout(SIZE, 10, &user_cases(SCRIPT).unwrap(), 120_008).unwrap();
        let error = check(&image, &other).unwrap_err();
        assert!(error.contains("self-test: sector 0"), "{error}");
    }

    #[test]
    fn a_dd_write_that_never_arrived_fails() {
        let mut image = good_image();
        image[8_389_385 + 3000] = 0;
        let error = check(&image, &layout()).unwrap_err();
        assert!(error.contains("dd case odd: byte 8392385"), "{error}");
    }

    #[test]
    fn a_stray_byte_fails() {
        let mut image = good_image();
        image[8_389_385 - 1] = 1; // just before the unaligned write
        let error = check(&image, &layout()).unwrap_err();
        assert!(error.contains("byte 8389384 is not zero"), "{error}");
        let mut image = good_image();
        *image.last_mut().unwrap() ^= 1;
        assert!(check(&image, &layout()).is_err());
    }

    #[test]
    fn a_bad_copy_fails() {
        let mut image = good_image();
        image[(40 * MIB) as usize] ^= 1;
        let error = check(&image, &layout()).unwrap_err();
        assert!(error.contains("throughput copy"), "{error}");
    }

    #[test]
    fn overlapping_regions_and_small_images_are_refused() {
        let mut regions = layout();
        regions.push(Region {
            bytes: 0..10,
            expect: Expect::Scratch,
            what: "x".into(),
        });
        assert!(check(&good_image(), &regions)
            .unwrap_err()
            .contains("overlap"));
        assert!(check(&[0u8; 1000], &[]).is_err());
    }
}
