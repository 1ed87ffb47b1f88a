//! The short path for the common request: a read or write of one data
//! buffer, served without the general path's bookkeeping (see
//! [`serve_simple`]); every other request takes [`crate::request::serve`].

use virtio_blk_mq::spec::{blk_status, req_type, BLK_REQ_HEADER_SIZE, SECTOR_SIZE};
use virtio_blk_mq::Features;

use crate::config::SimConfig;
use crate::mem::MemCheck;
use crate::request::{le32, le64, RawSeg, ReqCtx};

/// Longest data buffer [`serve_simple`] takes on a queue with `features`
/// negotiated; 0 when the limits leave it nothing (a hostile `seg_max` of 0
/// or `size_max` below a header) or faults are injected (every request
/// then takes [`serve`], which looks for them). Fixed while the queue
/// runs, as the configuration is, so it is worked out when the queue is
/// set up, and `serve_three` tests one number for limits and injections.
pub(crate) fn simple_max_data(config: &SimConfig, features: Features) -> u32 {
    if !config.inject.is_empty() {
        return 0;
    }
    let seg_max_ok = !features.contains(Features::BLK_SEG_MAX) || config.seg_max >= 1;
    let size_max = if features.contains(Features::BLK_SIZE_MAX) {
        config.size_max
    } else {
        u32::MAX
    };
    if seg_max_ok && size_max >= BLK_REQ_HEADER_SIZE as u32 {
        size_max
    } else {
        0
    }
}

/// Serves the common request on its own short path: a chain of exactly a
/// 16-byte device-readable header, one data buffer and a 1-byte writable
/// status, an IN into a writable buffer or an OUT from a readable one, inside
/// the disk and every negotiated limit, touching no injected fault. Returns
/// the used length, or `None`, having written nothing, for any other request:
/// [`serve`] then takes it and reports whatever is wrong with it. For the
/// requests it takes it does exactly what [`serve`] would: the same memory
/// checks, the same data moved, the same status byte and used length.
#[inline(always)]
pub(crate) fn serve_simple(ctx: &ReqCtx<'_>, mem: &mut MemCheck, segs: &[RawSeg]) -> Option<u32> {
    let segs: &[RawSeg; 3] = segs.try_into().ok()?;
    serve_three(ctx, mem, segs)
}

/// [`serve_simple`] for a chain already known to have three buffers.
#[inline(always)]
pub(crate) fn serve_three(
    ctx: &ReqCtx<'_>,
    mem: &mut MemCheck,
    &[header, data, status]: &[RawSeg; 3],
) -> Option<u32> {
    if header.write
        || header.len != BLK_REQ_HEADER_SIZE as u32
        || !status.write
        || status.len != 1
        || data.len == 0
        || data.len > ctx.simple_max_data
        || data.len & (SECTOR_SIZE as u32 - 1) != 0
    {
        return None;
    }
    let header_range = mem.check(header.addr, BLK_REQ_HEADER_SIZE as u64)?;
    let data_range = mem.check(data.addr, u64::from(data.len))?;
    let status_range = mem.check(status.addr, 1)?;
    let hdr: [u8; BLK_REQ_HEADER_SIZE] = header_range.read_array(0);
    let ty = le32(&hdr[0..4]);
    let sector = le64(&hdr[8..16]);
    let cfg = ctx.config;
    let count = u64::from(data.len) / SECTOR_SIZE;
    match sector.checked_add(count) {
        // No fault is injected: `simple_max_data` is 0 when one is.
        Some(end) if end <= cfg.capacity_sectors => {}
        _ => return None,
    }
    let bytes = data.len as usize;
    let used = match ty {
        req_type::IN if data.write => {
            ctx.disk.with_bytes(sector, bytes, |d| {
                if let Some(d) = d {
                    data_range.write(0, d);
                }
            });
            data.len + 1
        }
        req_type::OUT if !data.write && !cfg.features.contains(Features::BLK_RO) => {
            ctx.disk.with_bytes(sector, bytes, |d| {
                if let Some(d) = d {
                    data_range.read(0, d);
                }
            });
            1
        }
        _ => return None,
    };
    status_range.write_byte(0, blk_status::OK);
    Some(used)
}

#[cfg(test)]
mod tests {
    use virtio_blk_mq::{Hal, PAGE_SIZE};

    use super::*;
    use crate::config::{DiskKind, Injection};
    use crate::disk::Disk;
    use crate::request::{serve, Scratch, StatusWrite};
    use crate::SimHal;

    /// Sectors of the test disks.
    const CAPACITY: u64 = 64;

    /// One page of DMA memory: header at 0, status at 64, data from 512.
    struct Page {
        addr: u64,
        ptr: core::ptr::NonNull<u8>,
    }

    impl Page {
        fn new() -> Page {
            let (addr, ptr) = SimHal.dma_alloc(2).expect("DMA memory");
            Page { addr, ptr }
        }

        fn bytes(&self) -> Vec<u8> {
            // SAFETY: two pages from dma_alloc, nothing else writes them now.
            unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), 2 * PAGE_SIZE).to_vec() }
        }

        fn fill(&self, bytes: &[u8]) {
            assert_eq!(bytes.len(), 2 * PAGE_SIZE);
            // SAFETY: as in `bytes`.
            unsafe {
                core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr(), bytes.len())
            }
        }
    }

    impl Drop for Page {
        fn drop(&mut self) {
            // SAFETY: exactly what dma_alloc returned.
            unsafe { SimHal.dma_dealloc(self.addr, self.ptr, 2) }
        }
    }

    /// What one serve did: used length, every byte of the page, the disk, reports.
    type Effect = (u32, Vec<u8>, Vec<u8>, Vec<String>);

    fn disk_bytes(disk: &Disk) -> Vec<u8> {
        let mut all = vec![0; (CAPACITY * SECTOR_SIZE) as usize];
        disk.read(0, &mut all);
        all
    }

    /// `serve_simple` either declines and leaves everything untouched, or does
    /// exactly what `serve` does: same used length, same bytes in the page
    /// and on the disk, and `serve` finds nothing to report.
    #[test]
    fn serve_simple_does_what_serve_does_or_nothing() {
        let page = Page::new();
        let mut taken = 0;
        let mut declined = 0;
        for disk_kind in [DiskKind::Null, DiskKind::Ram] {
            for limits in 0..4 {
                let mut config = SimConfig {
                    capacity_sectors: CAPACITY,
                    disk: disk_kind,
                    ..SimConfig::default()
                };
                match limits {
                    1 => config.seg_max = 0,
                    2 => config.size_max = 1024,
                    3 => {
                        config.features.insert(Features::BLK_RO);
                        config.inject.push(Injection {
                            sectors: 40..41,
                            status: blk_status::IOERR,
                        });
                    }
                    _ => {}
                }
                let features = config.features.difference(Features::RING_PACKED);
                for ty in [req_type::IN, req_type::OUT, req_type::FLUSH, 99] {
                    for sector in [0, 32, 40, CAPACITY - 8, CAPACITY - 1, u64::MAX] {
                        for shape in 0..8 {
                            let (t, d) = check(&page, &config, features, ty, sector, shape);
                            taken += t;
                            declined += d;
                        }
                    }
                }
            }
        }
        // Both sides were exercised.
        assert!(
            taken > 20 && declined > 100,
            "taken {taken}, declined {declined}"
        );
    }

    /// Serves one request of `shape` both ways and compares; returns
    /// (1, 0) when `serve_simple` took it, (0, 1) when it declined.
    fn check(
        page: &Page,
        config: &SimConfig,
        features: Features,
        ty: u32,
        sector: u64,
        shape: u32,
    ) -> (u32, u32) {
        let base = page.addr;
        // (header len, data len, data writable, status len, data address)
        let (header_len, data_len, data_write, status_len, data_addr) = match shape {
            0 => (16, 4096, true, 1, base + 512),
            1 => (16, 4096, false, 1, base + 512),
            2 => (16, 512, true, 1, base + 512),
            3 => (16, 2048, true, 1, base + 512),
            4 => (17, 512, true, 1, base + 512),
            5 => (16, 500, true, 1, base + 512),
            6 => (16, 512, true, 2, base + 512),
            // Data outside DMA memory.
            _ => (16, 512, true, 1, 0x1000),
        };
        let data_write = if ty == req_type::OUT && shape == 0 {
            false
        } else {
            data_write
        };
        let segs = [
            RawSeg {
                addr: base,
                len: header_len,
                write: false,
            },
            RawSeg {
                addr: data_addr,
                len: data_len,
                write: data_write,
            },
            RawSeg {
                addr: base + 64,
                len: status_len,
                write: true,
            },
        ];
        let mut start = vec![0x5a; 2 * PAGE_SIZE];
        for (i, b) in start[512..].iter_mut().enumerate() {
            *b = i as u8;
        }
        start[0..4].copy_from_slice(&ty.to_le_bytes());
        start[8..16].copy_from_slice(&sector.to_le_bytes());
        let run = |fast: bool| -> Option<Effect> {
            let disk = Disk::new(config.disk, CAPACITY).expect("a small disk");
            if config.disk == DiskKind::Ram {
                disk.write(0, &vec![0xc3; (CAPACITY * SECTOR_SIZE) as usize]);
            }
            page.fill(&start);
            let ctx = ReqCtx::new(config, &disk, features, simple_max_data(config, features));
            let mut mem = MemCheck::new();
            let mut reports = Vec::new();
            let used = if fast {
                serve_simple(&ctx, &mut mem, &segs)?
            } else {
                serve(
                    &ctx,
                    &mut mem,
                    &mut Scratch::default(),
                    &segs,
                    None,
                    StatusWrite::Honest,
                    &mut |m| reports.push(m),
                )
            };
            Some((used, page.bytes(), disk_bytes(&disk), reports))
        };
        let what = format!("type {ty} sector {sector} shape {shape} config {config:?}");
        match run(true) {
            Some(fast) => {
                let slow = run(false).expect("serve always serves");
                assert!(slow.3.is_empty(), "{what}: serve reported {:?}", slow.3);
                assert_eq!(fast.0, slow.0, "{what}: used length");
                assert!(fast.1 == slow.1, "{what}: page bytes differ");
                assert!(fast.2 == slow.2, "{what}: disk bytes differ");
                (1, 0)
            }
            None => {
                assert!(page.bytes() == start, "{what}: declined but wrote the page");
                (0, 1)
            }
        }
    }
}
