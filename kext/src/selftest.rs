//! The boot self-test: proof, inside the kernel, that writes through the
//! kext reach the disk. Off by default; a kernel runs it when its command
//! line says `vblk.selftest=GENERATION` (see [`crate::boot`]).
//!
//! On each disk it stamps the regions of
//! `vblk_report::verify::self_test_regions` with `GENERATION` (every
//! 512-byte sector carries its number, the generation and a pattern),
//! writes the first through PR #108's `write_block` and the others through
//! [`Disk::write`], flushes, reads all back and compares. Then it checks
//! that bad requests come back as errors (a write and a read past the end,
//! a 100-byte read, a 700-byte write) and that PR #108's error-less
//! `read_block` survives one. The host then reads the disk image and checks
//! the same regions, and that the sectors around them stayed zero.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use kerla_api::driver::block::BlockDriver;
use vblk_report::verify::{self, SELF_TEST_MIN_SECTORS};

use crate::block::VirtioBlkDriver;
use crate::disk::Disk;
use crate::error::{BlockError, SECTOR_SIZE};

/// Runs the self-test on `disk`: `Ok` with a line saying what was
/// checked, or the first thing that went wrong.
pub fn run(disk: &'static Disk, generation: u32) -> Result<String, String> {
    let capacity = disk.info().capacity_sectors;
    if capacity < SELF_TEST_MIN_SECTORS {
        return Err(format!(
            "the disk has {capacity} sectors; the self-test needs {SELF_TEST_MIN_SECTORS}"
        ));
    }
    if generation == 0 {
        return Err("generation 0 means \"never written\"; pick another".into());
    }
    let driver = VirtioBlkDriver::new(disk);
    let regions = verify::self_test_regions(capacity);
    for (i, region) in regions.iter().enumerate() {
        let mut data = vec![0u8; region_bytes(region)];
        verify::stamp(&mut data, region.start, generation);
        if i == 0 {
            // PR #108's path: errors would only be logged, so the read-back
            // below is what proves it.
            driver.write_block(region.start, &data);
        } else {
            disk.write(region.start, &data)
                .map_err(|e| format!("write of sectors {region:?}: {e}"))?;
        }
    }
    disk.flush().map_err(|e| format!("flush: {e}"))?;
    for (i, region) in regions.iter().enumerate() {
        let mut back = vec![0xeeu8; region_bytes(region)];
        if i == 0 {
            driver.read_block(region.start, &mut back);
        } else {
            disk.read(region.start, &mut back)
                .map_err(|e| format!("read of sectors {region:?}: {e}"))?;
        }
        match verify::check_stamped(&back, region.start) {
            Ok(found) if found == generation => {}
            Ok(found) => {
                return Err(format!(
                    "sectors {region:?} read back generation {found}, {generation} was written"
                ))
            }
            Err(mismatch) => {
                return Err(format!(
                    "sectors {region:?} read back wrong: sector {} {}",
                    mismatch.sector, mismatch.what
                ))
            }
        }
    }
    refusals(disk, &driver, capacity)?;
    let listed: Vec<String> = regions
        .iter()
        .map(|r| format!("{}+{}", r.start, r.end - r.start))
        .collect();
    Ok(format!(
        "sectors {} stamped with generation {generation}, flushed, read back: ok; \
         refused: write and read past the end (OutOfRange), 100-byte read and \
         700-byte write (Misaligned)",
        listed.join(", ")
    ))
}

fn region_bytes(region: &core::ops::Range<u64>) -> usize {
    (region.end - region.start) as usize * SECTOR_SIZE
}

/// Bad requests: each must come back as the error named, and nothing
/// reaches the device.
fn refusals(disk: &Disk, driver: &VirtioBlkDriver, capacity: u64) -> Result<(), String> {
    let expect = |what: &str, got: Result<(), BlockError>, want: BlockError| {
        if got == Err(want) {
            Ok(())
        } else {
            Err(format!("{what}: {got:?}, expected Err({want:?})"))
        }
    };
    expect(
        "write of 2 sectors from the last",
        disk.write(capacity - 1, &[0u8; 2 * SECTOR_SIZE]),
        BlockError::OutOfRange,
    )?;
    expect(
        "read of the sector after the last",
        disk.read(capacity, &mut [0u8; SECTOR_SIZE]),
        BlockError::OutOfRange,
    )?;
    expect(
        "read of 100 bytes",
        disk.read(0, &mut [0u8; 100]),
        BlockError::Misaligned,
    )?;
    expect(
        "write of 700 bytes",
        disk.write(0, &[0u8; 700]),
        BlockError::Misaligned,
    )?;
    // PR #108's form of a bad request: logged, no panic, the buffer untouched.
    let mut odd = [0x5au8; 100];
    driver.read_block(0, &mut odd);
    if odd != [0x5a; 100] {
        return Err("a refused read_block changed its buffer".into());
    }
    Ok(())
}
