//! Data verification: every written block carries its sector number and a
//! generation in each 512-byte sector; every read is checked against the
//! generation last written there (zeros for a block never written).

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// Bytes per stamped unit: one sector.
pub const SECTOR: usize = 512;

/// What one queue knows about the blocks of its region: the generation last
/// written to each (0 = never written, so the disk still holds zeros).
pub struct Verifier {
    generations: Vec<u32>,
    next_generation: u32,
}

impl Verifier {
    /// State for a region of `blocks` blocks, all never written.
    pub fn new(blocks: u64) -> Verifier {
        Verifier {
            generations: vec![0; usize::try_from(blocks).expect("region fits in memory")],
            next_generation: 1,
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
    }

    /// The generation `block` should hold.
    pub fn expected(&self, block: u64) -> u32 {
        self.generations[block as usize]
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
#[derive(Debug, PartialEq, Eq)]
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
    fn generations_skip_zero_when_they_wrap() {
        let mut verifier = Verifier::new(4);
        verifier.next_generation = u32::MAX;
        assert_eq!(verifier.next_generation(), u32::MAX);
        assert_eq!(verifier.next_generation(), 1);
        verifier.written(3, 9);
        assert_eq!(verifier.expected(3), 9);
        assert_eq!(verifier.expected(0), 0);
    }
}
