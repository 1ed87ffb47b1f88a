//! The host's side of the proof: after Kerla halted, the disk image must
//! hold the self-test's stamp in every sector of its regions (sector
//! number, generation, checksum, pattern) and zeros everywhere else, so a
//! write that went to the wrong place or never reached the disk fails here.

use vblk_report::verify::{self, SECTOR, SELF_TEST_MIN_SECTORS};

/// What the image held.
#[derive(Debug, PartialEq, Eq)]
pub struct DiskCheck {
    /// Sectors carrying the expected stamp.
    pub stamped: u64,
    /// Sectors checked to be zero.
    pub zero: u64,
}

/// Checks `image` (the whole raw disk) for the stamp of `generation` in
/// the self-test's regions and zeros elsewhere.
pub fn check_self_test(image: &[u8], generation: u32) -> Result<DiskCheck, String> {
    if !image.len().is_multiple_of(SECTOR) {
        return Err(format!(
            "the image is {} bytes, not whole sectors",
            image.len()
        ));
    }
    let capacity = (image.len() / SECTOR) as u64;
    if capacity < SELF_TEST_MIN_SECTORS {
        return Err(format!(
            "the image has {capacity} sectors, fewer than the self-test's {SELF_TEST_MIN_SECTORS}"
        ));
    }
    let regions = verify::self_test_regions(capacity);
    let bytes = |range: &core::ops::Range<u64>| {
        &image[range.start as usize * SECTOR..range.end as usize * SECTOR]
    };
    let mut stamped = 0;
    for region in &regions {
        verify::check(bytes(region), region.start, generation).map_err(|mismatch| {
            format!(
                "sector {} (in {region:?}) {}",
                mismatch.sector, mismatch.what
            )
        })?;
        stamped += region.end - region.start;
    }
    let mut zero = 0;
    let mut at = 0;
    for gap_end in regions.iter().map(|r| r.start).chain([capacity]) {
        let gap = at..gap_end;
        verify::check(bytes(&gap), gap.start, 0).map_err(|mismatch| {
            format!(
                "sector {} lies outside the self-test's regions and {}",
                mismatch.sector, mismatch.what
            )
        })?;
        zero += gap.end - gap.start;
        at = regions
            .iter()
            .find(|r| r.start == gap_end)
            .map_or(capacity, |r| r.end);
    }
    Ok(DiskCheck { stamped, zero })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECTORS: u64 = 2048;

    fn self_tested_image(generation: u32) -> Vec<u8> {
        let mut image = vec![0u8; SECTORS as usize * SECTOR];
        for region in verify::self_test_regions(SECTORS) {
            let bytes = &mut image[region.start as usize * SECTOR..region.end as usize * SECTOR];
            verify::stamp(bytes, region.start, generation);
        }
        image
    }

    #[test]
    fn a_self_tested_image_passes() {
        let check = check_self_test(&self_tested_image(9), 9).unwrap();
        assert_eq!(check.stamped, 8 + 200 + 8);
        assert_eq!(check.stamped + check.zero, SECTORS);
    }

    #[test]
    fn another_generation_fails() {
        let error = check_self_test(&self_tested_image(9), 10).unwrap_err();
        assert!(error.contains("sector 0"), "{error}");
    }

    #[test]
    fn a_missing_write_fails() {
        let mut image = self_tested_image(9);
        let last = SECTORS as usize - 1;
        image[last * SECTOR..].fill(0);
        let error = check_self_test(&image, 9).unwrap_err();
        assert!(error.contains(&format!("sector {last}")), "{error}");
    }

    #[test]
    fn a_flipped_byte_in_a_region_fails() {
        let mut image = self_tested_image(9);
        image[300 * SECTOR + 100] ^= 1;
        let error = check_self_test(&image, 9).unwrap_err();
        assert!(error.contains("sector 300"), "{error}");
    }

    #[test]
    fn a_stray_write_outside_the_regions_fails() {
        let mut image = self_tested_image(9);
        image[400 * SECTOR] = 1;
        let error = check_self_test(&image, 9).unwrap_err();
        assert!(error.contains("sector 400 lies outside"), "{error}");
    }

    #[test]
    fn a_small_or_ragged_image_is_refused() {
        assert!(check_self_test(&[0u8; 512 * 100], 1).is_err());
        assert!(check_self_test(&[0u8; 1000], 1).is_err());
    }
}
