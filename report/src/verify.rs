//! Data verification: every written block carries its sector number and a
//! generation in each 512-byte sector; every read is checked against the
//! generation last written there. A block this run has not written yet must
//! hold what [`Initial`] says: zeros, an earlier run's stamp, or either.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// Bytes per stamped unit: one sector.
pub const SECTOR: usize = 512;

/// What a block holds before this run writes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Initial {
    /// Zeros: a fresh disk (a RAM disk, a new sparse file).
    Zeros,
    /// A stamp for its own sectors, one generation over the whole block: a
    /// disk an earlier verifying run wrote all over (with the same block size).
    Stamped,
    /// Zeros or such a stamp: a fresh disk, or one an earlier run wrote to.
    #[default]
    Either,
}

impl Initial {
    /// Every policy, for parsers and messages.
    pub const ALL: [Initial; 3] = [Initial::Zeros, Initial::Stamped, Initial::Either];

    /// The name flags use.
    pub fn name(self) -> &'static str {
        match self {
            Initial::Zeros => "zeros",
            Initial::Stamped => "stamped",
            Initial::Either => "either",
        }
    }

    /// The policy called `name`.
    pub fn from_name(name: &str) -> Option<Initial> {
        Initial::ALL.into_iter().find(|i| i.name() == name)
    }
}

/// What one queue knows about the blocks of its region: the generation last
/// written to each (0 = not written by this run, so [`Initial`] applies).
pub struct Verifier {
    generations: Vec<u32>,
    next_generation: u32,
    initial: Initial,
    /// Blocks whose last write failed, with the generations those writes
    /// carried: the device may have stored one of them, or kept the old data.
    uncertain: BTreeMap<u64, Vec<u32>>,
}

impl Verifier {
    /// State for a region of `blocks` blocks, none written yet, holding what
    /// `initial` says.
    pub fn new(blocks: u64, initial: Initial) -> Verifier {
        Verifier {
            generations: vec![0; usize::try_from(blocks).expect("region fits in memory")],
            next_generation: 1,
            initial,
            uncertain: BTreeMap::new(),
        }
    }

    /// A fresh generation for a write (never 0).
    pub fn next_generation(&mut self) -> u32 {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.checked_add(1).unwrap_or(1);
        generation
    }

    /// Records that `block` (index within the region) now holds `generation`.
    /// Called when the write completed successfully.
    pub fn written(&mut self, block: u64, generation: u32) {
        self.generations[block as usize] = generation;
        self.uncertain.remove(&block);
    }

    /// Records that a write of `generation` to `block` failed: until a write
    /// succeeds there, the block may hold the old data or what any of the
    /// failed writes carried (each whole).
    pub fn write_failed(&mut self, block: u64, generation: u32) {
        self.uncertain.entry(block).or_default().push(generation);
    }

    /// The generation `block` should hold (0: not written by this run).
    pub fn expected(&self, block: u64) -> u32 {
        self.generations[block as usize]
    }

    /// Checks what a read of `block` (starting at `first_sector`) returned.
    /// On a mismatch, describes it against the generation last written.
    pub fn check(&self, block: u64, data: &[u8], first_sector: u64) -> Result<(), Mismatch> {
        let check_one = |generation: u32| match generation {
            0 => check_initial(data, first_sector, self.initial),
            generation => check(data, first_sector, generation),
        };
        let first = check_one(self.expected(block));
        match (&first, self.uncertain.get(&block)) {
            (Err(_), Some(candidates)) if candidates.iter().any(|&g| check_one(g).is_ok()) => {
                Ok(())
            }
            _ => first,
        }
    }
}

/// The byte pattern of a sector after its 16-byte header.
fn fill_byte(sector: u64, generation: u32, i: usize) -> u8 {
    (sector as u8) ^ (generation as u8).rotate_left(3) ^ (i as u8)
}

/// Fills `data` (whose first sector is `first_sector`) with the stamp of
/// `generation`: per sector its number, the generation, their checksum, then a
/// pattern derived from both.
pub fn stamp(data: &mut [u8], first_sector: u64, generation: u32) {
    for (i, sector_bytes) in data.chunks_exact_mut(SECTOR).enumerate() {
        let sector = first_sector + i as u64;
        sector_bytes[..8].copy_from_slice(&sector.to_le_bytes());
        sector_bytes[8..12].copy_from_slice(&generation.to_le_bytes());
        sector_bytes[12..16].copy_from_slice(&check_word(sector, generation).to_le_bytes());
        for (j, byte) in sector_bytes[16..].iter_mut().enumerate() {
            *byte = fill_byte(sector, generation, j);
        }
    }
}

fn check_word(sector: u64, generation: u32) -> u32 {
    !((sector as u32) ^ ((sector >> 32) as u32) ^ generation.rotate_left(16))
}

/// A mismatch, described for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The sector whose contents were wrong.
    pub sector: u64,
    /// What was wrong.
    pub what: String,
}

fn word(sector_bytes: &[u8], range: core::ops::Range<usize>) -> u64 {
    let mut bytes = [0u8; 8];
    bytes[..range.len()].copy_from_slice(&sector_bytes[range]);
    u64::from_le_bytes(bytes)
}

/// Checks one stamped sector: header for `sector` and `generation`, checksum, pattern.
fn check_sector(sector_bytes: &[u8], sector: u64, generation: u32) -> Result<(), Mismatch> {
    let (found_sector, found_generation) =
        (word(sector_bytes, 0..8), word(sector_bytes, 8..12) as u32);
    if found_sector != sector || found_generation != generation {
        return Err(Mismatch {
            sector,
            what: format!(
                "holds sector {found_sector} generation {found_generation}, \
                 expected generation {generation}"
            ),
        });
    }
    if word(sector_bytes, 12..16) as u32 != check_word(sector, generation) {
        return Err(Mismatch {
            sector,
            what: "header checksum is wrong".into(),
        });
    }
    let body = sector_bytes[16..]
        .iter()
        .enumerate()
        .position(|(j, &b)| b != fill_byte(sector, generation, j));
    if let Some(j) = body {
        return Err(Mismatch {
            sector,
            what: format!("byte {} differs from the pattern", j + 16),
        });
    }
    Ok(())
}

/// Checks that `data` (starting at `first_sector`) holds the stamp of
/// `generation`, or zeros when `generation` is 0. Returns the first mismatch.
pub fn check(data: &[u8], first_sector: u64, generation: u32) -> Result<(), Mismatch> {
    for (i, sector_bytes) in data.chunks_exact(SECTOR).enumerate() {
        let sector = first_sector + i as u64;
        if generation == 0 {
            if let Some(at) = sector_bytes.iter().position(|&b| b != 0) {
                return Err(Mismatch {
                    sector,
                    what: format!("never written, but byte {at} is {:#04x}", sector_bytes[at]),
                });
            }
            continue;
        }
        check_sector(sector_bytes, sector, generation)?;
    }
    Ok(())
}

/// Checks a block this run has not written: it must hold what `initial` says.
pub fn check_initial(data: &[u8], first_sector: u64, initial: Initial) -> Result<(), Mismatch> {
    match initial {
        Initial::Zeros => check(data, first_sector, 0),
        Initial::Stamped => check_stamped(data, first_sector).map(drop),
        Initial::Either if data.iter().all(|&b| b == 0) => Ok(()),
        Initial::Either => check_stamped(data, first_sector)
            .map(drop)
            .map_err(|mismatch| Mismatch {
                what: format!("neither zeros nor a stamp: {}", mismatch.what),
                ..mismatch
            }),
    }
}

/// Checks a block read back without knowing what was written last (e.g. a
/// disk image after the run): every sector must carry a valid stamp for its
/// own sector number, all with one generation, which is returned.
pub fn check_stamped(data: &[u8], first_sector: u64) -> Result<u32, Mismatch> {
    let generation = data
        .get(8..12)
        .map(|bytes| word(bytes, 0..4) as u32)
        .unwrap_or(0);
    if generation == 0 {
        return Err(Mismatch {
            sector: first_sector,
            what: "carries no stamp (never written?)".into(),
        });
    }
    for (i, sector_bytes) in data.chunks_exact(SECTOR).enumerate() {
        check_sector(sector_bytes, first_sector + i as u64, generation)?;
    }
    Ok(generation)
}

/// Sectors the Kerla kext's boot self-test stamps on a disk of
/// `capacity_sectors` (at least [`SELF_TEST_MIN_SECTORS`]): the first 4 KiB;
/// 100 KiB crossing the 128 KiB mark (more than one 64 KiB bounce piece);
/// the last 4 KiB. The kext writes them and the host checks the disk image
/// against the same list, with the sectors around each left zero.
pub fn self_test_regions(capacity_sectors: u64) -> [core::ops::Range<u64>; 3] {
    [0..8, 200..400, capacity_sectors - 8..capacity_sectors]
}

/// The smallest disk the self-test runs on: its regions apart, with room
/// for an untouched sector between them.
pub const SELF_TEST_MIN_SECTORS: u64 = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_test_regions_are_apart_and_inside_the_disk() {
        let regions = self_test_regions(SELF_TEST_MIN_SECTORS);
        assert!(regions[1].contains(&256), "crosses 128 KiB");
        assert!(regions[1].end - regions[1].start > 128, "more than 64 KiB");
        for pair in regions.windows(2) {
            assert!(pair[0].end < pair[1].start, "{pair:?}");
        }
        assert_eq!(regions[2].end, SELF_TEST_MIN_SECTORS);
    }

    #[test]
    fn a_stamped_block_checks_clean() {
        let mut data = vec![0u8; 4096];
        stamp(&mut data, 800, 7);
        assert_eq!(check(&data, 800, 7), Ok(()));
        assert_eq!(check_stamped(&data, 800), Ok(7));
    }

    #[test]
    fn zeros_check_clean_for_a_block_never_written() {
        assert_eq!(check(&[0u8; 1024], 8, 0), Ok(()));
        let mut data = vec![0u8; 1024];
        data[700] = 1;
        assert_eq!(check(&data, 8, 0).unwrap_err().sector, 9);
        assert!(check_stamped(&[0u8; 1024], 8).is_err());
    }

    #[test]
    fn stale_misplaced_and_torn_data_are_caught() {
        let mut data = vec![0u8; 4096];
        stamp(&mut data, 800, 7);
        assert!(check(&data, 800, 8).is_err(), "stale generation");
        assert!(check(&data, 808, 7).is_err(), "another block's data");
        assert!(check_stamped(&data, 808).is_err(), "another block's data");
        data[3000] ^= 0xff;
        assert_eq!(check(&data, 800, 7).unwrap_err().sector, 805);
        assert_eq!(check_stamped(&data, 800).unwrap_err().sector, 805);
    }

    #[test]
    fn a_torn_block_of_two_generations_is_caught() {
        let mut data = vec![0u8; 4096];
        stamp(&mut data, 800, 7);
        stamp(&mut data[2048..], 804, 8);
        assert_eq!(check_stamped(&data, 800).unwrap_err().sector, 804);
    }

    #[test]
    fn a_block_not_written_yet_holds_what_the_initial_policy_says() {
        let zeros = vec![0u8; 1024];
        let mut stamped = vec![0u8; 1024];
        stamp(&mut stamped, 8, 3);
        let mut torn = stamped.clone();
        torn[600] ^= 1;
        for (initial, zeros_ok, stamped_ok) in [
            (Initial::Zeros, true, false),
            (Initial::Stamped, false, true),
            (Initial::Either, true, true),
        ] {
            let verifier = Verifier::new(2, initial);
            assert_eq!(
                verifier.check(1, &zeros, 8).is_ok(),
                zeros_ok,
                "{initial:?}"
            );
            assert_eq!(
                verifier.check(1, &stamped, 8).is_ok(),
                stamped_ok,
                "{initial:?}"
            );
            let torn_at = verifier.check(1, &torn, 8).unwrap_err();
            let expected = if initial == Initial::Zeros { 8 } else { 9 };
            assert_eq!(torn_at.sector, expected, "{initial:?}");
            // Another block's stamp is never right.
            assert!(verifier.check(0, &stamped, 0).is_err(), "{initial:?}");
        }
        assert_eq!(Initial::from_name("stamped"), Some(Initial::Stamped));
        assert_eq!(Initial::from_name("random"), None);
    }

    #[test]
    fn a_failed_write_leaves_the_old_or_the_new_data_until_a_write_succeeds() {
        let mut verifier = Verifier::new(2, Initial::Zeros);
        let (mut old, mut new, mut other) = (vec![0u8; 512], vec![0u8; 512], vec![0u8; 512]);
        stamp(&mut old, 1, 1);
        stamp(&mut new, 1, 2);
        stamp(&mut other, 1, 3);
        verifier.written(1, 1);
        verifier.write_failed(1, 2);
        assert_eq!(verifier.check(1, &old, 1), Ok(()));
        assert_eq!(verifier.check(1, &new, 1), Ok(()));
        let mismatch = verifier.check(1, &other, 1).unwrap_err();
        assert!(
            mismatch.what.contains("expected generation 1"),
            "{mismatch:?}"
        );
        verifier.written(1, 3);
        assert_eq!(verifier.check(1, &other, 1), Ok(()));
        assert!(verifier.check(1, &new, 1).is_err(), "certain again");
    }

    #[test]
    fn generations_skip_zero_when_they_wrap() {
        let mut verifier = Verifier::new(4, Initial::Zeros);
        verifier.next_generation = u32::MAX;
        assert_eq!(verifier.next_generation(), u32::MAX);
        assert_eq!(verifier.next_generation(), 1);
        verifier.written(3, 9);
        assert_eq!(verifier.expected(3), 9);
        assert_eq!(verifier.expected(0), 0);
    }
}
