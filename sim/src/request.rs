//! Serving one virtio-blk request (VIRTIO 1.2 §5.2.6).
//!
//! The device does not assume any framing (§2.6.4): the device-readable
//! descriptors form one byte stream (16-byte header, then data-out) and the
//! device-writable ones another (data-in, then the status byte last).

use virtio_blk_mq::spec::{
    blk_status, req_type, BLK_ID_BYTES, BLK_RANGE_SIZE, BLK_REQ_HEADER_SIZE,
    BLK_WRITE_ZEROES_FLAG_UNMAP, SECTOR_SIZE,
};
use virtio_blk_mq::Features;

use crate::config::SimConfig;
use crate::disk::Disk;
use crate::mem::{GuestRange, MemCheck};

/// One buffer of a chain as the driver described it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RawSeg {
    pub(crate) addr: u64,
    pub(crate) len: u32,
    pub(crate) write: bool,
}

/// Buffers a chain keeps inline in [`Segs`] before it spills to the heap:
/// a request's header, data and status, and one more.
const INLINE_SEGS: usize = 4;

/// The buffers of one chain: the first [`INLINE_SEGS`] in place (every
/// common request), more in a `Vec` kept for reuse, so taking a chain from
/// the ring neither allocates nor pays a `Vec`'s bookkeeping per buffer.
#[derive(Default)]
pub(crate) struct Segs {
    inline: [RawSeg; INLINE_SEGS],
    len: usize,
    /// All of them once there are more than [`INLINE_SEGS`].
    spilled: Vec<RawSeg>,
}

impl Segs {
    /// Forgets every buffer (the spill `Vec` keeps its memory).
    #[inline]
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    #[inline]
    pub(crate) fn push(&mut self, seg: RawSeg) {
        if let Some(slot) = self.inline.get_mut(self.len) {
            *slot = seg;
        } else {
            self.spill(seg);
        }
        self.len += 1;
    }

    #[cold]
    fn spill(&mut self, seg: RawSeg) {
        if self.len == INLINE_SEGS {
            self.spilled.clear();
            self.spilled.extend_from_slice(&self.inline);
        }
        self.spilled.push(seg);
    }

    #[inline]
    pub(crate) fn as_slice(&self) -> &[RawSeg] {
        match self.inline.get(..self.len) {
            Some(inline) => inline,
            None => &self.spilled,
        }
    }
}

/// What `serve` does with the status byte: the honest one, or a hostile
/// act's (see [`crate::Hostile`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatusWrite {
    /// Write the status the request earned.
    Honest,
    /// Write this byte instead.
    Replace(u8),
    /// Write no status byte; the used length counts the data only.
    Skip,
}

/// What a request needs to know about the device.
pub(crate) struct ReqCtx<'a> {
    pub(crate) config: &'a SimConfig,
    pub(crate) disk: &'a Disk,
    /// Negotiated features.
    pub(crate) features: Features,
    /// Longest data buffer [`serve_simple`](crate::simple::serve_simple)
    /// takes (see [`simple_max_data`](crate::simple::simple_max_data)).
    pub(crate) simple_max_data: u32,
}

impl<'a> ReqCtx<'a> {
    /// The context of a queue running with `features`, whose
    /// [`simple_max_data`](crate::simple::simple_max_data) for them is
    /// `simple_max_data`.
    pub(crate) fn new(
        config: &'a SimConfig,
        disk: &'a Disk,
        features: Features,
        simple_max_data: u32,
    ) -> ReqCtx<'a> {
        ReqCtx {
            config,
            disk,
            features,
            simple_max_data,
        }
    }
}

/// Reusable per-queue buffers, so serving allocates nothing.
#[derive(Default)]
pub(crate) struct Scratch {
    readable: Vec<GuestRange>,
    writable: Vec<GuestRange>,
}

/// Copies from the stream `ranges` at `offset` into `dst`.
fn stream_read(ranges: &[GuestRange], mut offset: usize, mut dst: &mut [u8]) {
    for r in ranges {
        if dst.is_empty() {
            return;
        }
        if offset >= r.len() {
            offset -= r.len();
            continue;
        }
        let n = dst.len().min(r.len() - offset);
        let (now, rest) = dst.split_at_mut(n);
        r.read(offset, now);
        dst = rest;
        offset = 0;
    }
}

/// Copies `src` into the stream `ranges` at `offset`.
fn stream_write(ranges: &[GuestRange], mut offset: usize, mut src: &[u8]) {
    for r in ranges {
        if src.is_empty() {
            return;
        }
        if offset >= r.len() {
            offset -= r.len();
            continue;
        }
        let n = src.len().min(r.len() - offset);
        r.write(offset, &src[..n]);
        src = &src[n..];
        offset = 0;
    }
}

/// Outcome of a request before the status byte is written.
enum Outcome {
    /// Status byte and bytes of data-in written.
    Done(u8, usize),
    /// A driver protocol violation: reported, completed with the status byte given.
    Violation(String, u8),
}
use Outcome::Done;

/// A driver protocol violation that completes with IOERR.
fn violation(msg: String) -> Outcome {
    Outcome::Violation(msg, blk_status::IOERR)
}

pub(crate) fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

pub(crate) fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Serves the request made of `segs` and writes its status byte as
/// `status_write` says; returns the used length (bytes written into
/// device-writable buffers). A chain the ring layer already found malformed
/// arrives with `fault`. Every violation goes to `report` and completes the
/// request with IOERR when a status byte can be found, with used length 0
/// otherwise.
pub(crate) fn serve(
    ctx: &ReqCtx<'_>,
    mem: &mut MemCheck,
    scratch: &mut Scratch,
    segs: &[RawSeg],
    fault: Option<String>,
    status_write: StatusWrite,
    report: &mut dyn FnMut(String),
) -> u32 {
    scratch.readable.clear();
    scratch.writable.clear();
    let mut bad = fault;
    // The last device-writable descriptor, if it is usable: where the status
    // byte goes when other buffers of the chain are not.
    let mut last_writable = None;
    for s in segs {
        if s.write {
            last_writable = None;
        }
        match mem.range(s.addr, u64::from(s.len)) {
            Ok(r) if s.write => {
                last_writable = Some(r).filter(|r| r.len() > 0);
                scratch.writable.push(r);
            }
            Ok(r) => {
                if !scratch.writable.is_empty() && bad.is_none() {
                    bad = Some("a device-readable descriptor follows a device-writable one (§2.7.4, §2.8.6)".into());
                }
                scratch.readable.push(r);
            }
            Err(e) => {
                bad.get_or_insert(e);
            }
        }
    }
    let r_total: usize = scratch.readable.iter().map(GuestRange::len).sum();
    let w_total: usize = scratch.writable.iter().map(GuestRange::len).sum();
    if bad.is_none() && w_total == 0 {
        bad =
            Some("request has no device-writable status byte; completed with used length 0".into());
    }
    let chain_ok = bad.is_none();
    let outcome = match bad {
        Some(msg) => violation(msg),
        None => execute(
            ctx,
            segs,
            &scratch.readable,
            &scratch.writable,
            r_total,
            w_total,
        ),
    };
    let (status, written) = match outcome {
        Done(status, written) => (status, written),
        Outcome::Violation(msg, status) => {
            report(msg);
            (status, 0)
        }
    };
    let status = match status_write {
        StatusWrite::Honest => status,
        StatusWrite::Replace(byte) => byte,
        StatusWrite::Skip => return u32::try_from(written).unwrap_or(u32::MAX),
    };
    if chain_ok {
        // Every buffer is usable: the status byte is the last byte of the writable stream.
        stream_write(&scratch.writable, w_total - 1, &[status]);
        return u32::try_from(written + 1).unwrap_or(u32::MAX);
    }
    match last_writable {
        Some(r) => {
            r.write(r.len() - 1, &[status]);
            1
        }
        None => 0,
    }
}

/// Bytes the chain `segs` offers the device to write (data-in and status).
pub(crate) fn writable_bytes(segs: &[RawSeg]) -> u32 {
    segs.iter()
        .filter(|s| s.write)
        .map(|s| s.len)
        .fold(0, u32::saturating_add)
}

/// Checks the chain's shape against the negotiated limits and dispatches on the request type.
fn execute(
    ctx: &ReqCtx<'_>,
    segs: &[RawSeg],
    r: &[GuestRange],
    w: &[GuestRange],
    r_total: usize,
    w_total: usize,
) -> Outcome {
    let cfg = ctx.config;
    if r_total < BLK_REQ_HEADER_SIZE {
        return violation(format!(
            "request header is {r_total} device-readable bytes, needs 16"
        ));
    }
    if w_total == 0 {
        return violation("request has no device-writable status byte".into());
    }
    if ctx.features.contains(Features::BLK_SEG_MAX) && segs.len() > cfg.seg_max as usize + 2 {
        return violation(format!(
            "request has {} data segments, seg_max is {}",
            segs.len().saturating_sub(2),
            cfg.seg_max
        ));
    }
    if ctx.features.contains(Features::BLK_SIZE_MAX) {
        if let Some(s) = segs.iter().find(|s| s.len > cfg.size_max) {
            return violation(format!(
                "a segment of {} bytes exceeds size_max {}",
                s.len, cfg.size_max
            ));
        }
    }
    let mut hdr = [0u8; BLK_REQ_HEADER_SIZE];
    stream_read(r, 0, &mut hdr);
    let ty = le32(&hdr[0..4]);
    let sector = le64(&hdr[8..16]);
    let data_out = r_total - BLK_REQ_HEADER_SIZE;
    let data_in = w_total - 1;
    let read_only = cfg.features.contains(Features::BLK_RO);
    match ty {
        req_type::IN => {
            if data_in & (SECTOR_SIZE as usize - 1) != 0 {
                return violation(format!(
                    "IN data of {data_in} bytes is not a multiple of 512"
                ));
            }
            let count = (data_in / SECTOR_SIZE as usize) as u64;
            if let Some(status) = check_range(cfg, sector, count) {
                return Done(status, 0);
            }
            ctx.disk.with_bytes(sector, data_in, |d| {
                if let Some(d) = d {
                    stream_write(w, 0, d);
                }
            });
            Done(blk_status::OK, data_in)
        }
        req_type::OUT => {
            if data_out & (SECTOR_SIZE as usize - 1) != 0 {
                return violation(format!(
                    "OUT data of {data_out} bytes is not a multiple of 512"
                ));
            }
            if read_only {
                return Done(blk_status::IOERR, 0);
            }
            let count = (data_out / SECTOR_SIZE as usize) as u64;
            if let Some(status) = check_range(cfg, sector, count) {
                return Done(status, 0);
            }
            ctx.disk.with_bytes(sector, data_out, |d| {
                if let Some(d) = d {
                    stream_read(r, BLK_REQ_HEADER_SIZE, d);
                }
            });
            Done(blk_status::OK, 0)
        }
        req_type::FLUSH => {
            if !ctx.features.contains(Features::BLK_FLUSH) {
                return Done(blk_status::UNSUPP, 0);
            }
            if sector != 0 {
                return violation(format!("FLUSH with sector {sector}, must be 0 (§5.2.6.1)"));
            }
            Done(blk_status::OK, 0)
        }
        req_type::GET_ID => {
            if data_in != BLK_ID_BYTES {
                return violation(format!("GET_ID data of {data_in} bytes, must be 20"));
            }
            stream_write(w, 0, &cfg.device_id);
            Done(blk_status::OK, BLK_ID_BYTES)
        }
        req_type::GET_LIFETIME => {
            if !ctx.features.contains(Features::BLK_LIFETIME) {
                return Done(blk_status::UNSUPP, 0);
            }
            if data_in != 6 {
                return violation(format!("GET_LIFETIME data of {data_in} bytes, must be 6"));
            }
            // pre_eol_info NORMAL, both wear estimates "up to 10% used".
            stream_write(w, 0, &[1, 0, 1, 0, 1, 0]);
            Done(blk_status::OK, 6)
        }
        req_type::DISCARD | req_type::WRITE_ZEROES | req_type::SECURE_ERASE => {
            ranges(ctx, ty, r, data_out, read_only)
        }
        _ => Done(blk_status::UNSUPP, 0),
    }
}

/// Capacity and injection check for `count` sectors at `sector`; `Some(status)` to fail with.
fn check_range(cfg: &SimConfig, sector: u64, count: u64) -> Option<u8> {
    match sector.checked_add(count) {
        Some(end) if end <= cfg.capacity_sectors => cfg.injected(sector, count),
        _ => Some(blk_status::IOERR),
    }
}

/// DISCARD, WRITE_ZEROES and SECURE_ERASE: an array of 16-byte ranges (§5.2.6).
/// Every range is validated before any is applied.
fn ranges(
    ctx: &ReqCtx<'_>,
    ty: u32,
    r: &[GuestRange],
    data_out: usize,
    read_only: bool,
) -> Outcome {
    let cfg = ctx.config;
    let (name, feature, max_sectors, max_seg) = match ty {
        req_type::DISCARD => (
            "DISCARD",
            Features::BLK_DISCARD,
            cfg.max_discard_sectors,
            cfg.max_discard_seg,
        ),
        req_type::WRITE_ZEROES => (
            "WRITE_ZEROES",
            Features::BLK_WRITE_ZEROES,
            cfg.max_write_zeroes_sectors,
            cfg.max_write_zeroes_seg,
        ),
        _ => (
            "SECURE_ERASE",
            Features::BLK_SECURE_ERASE,
            cfg.max_secure_erase_sectors,
            cfg.max_secure_erase_seg,
        ),
    };
    if !ctx.features.contains(feature) {
        return Done(blk_status::UNSUPP, 0);
    }
    if data_out == 0 || data_out & (BLK_RANGE_SIZE - 1) != 0 {
        return violation(format!(
            "{name} data of {data_out} bytes is not a non-empty array of 16-byte ranges"
        ));
    }
    let n = data_out / BLK_RANGE_SIZE;
    if n > max_seg as usize {
        return violation(format!(
            "{name} with {n} ranges, the device allows {max_seg}"
        ));
    }
    if read_only {
        return Done(blk_status::IOERR, 0);
    }
    let read_range = |i: usize| {
        let mut b = [0u8; BLK_RANGE_SIZE];
        stream_read(r, BLK_REQ_HEADER_SIZE + i * BLK_RANGE_SIZE, &mut b);
        (le64(&b[0..8]), le32(&b[8..12]), le32(&b[12..16]))
    };
    for i in 0..n {
        let (sector, num, flags) = read_range(i);
        if flags & !BLK_WRITE_ZEROES_FLAG_UNMAP != 0 {
            // §5.2.6.2: unknown flags make the device answer UNSUPP.
            return Done(blk_status::UNSUPP, 0);
        }
        if flags & BLK_WRITE_ZEROES_FLAG_UNMAP != 0 && ty != req_type::WRITE_ZEROES {
            // §5.2.6.1: unmap must be zero for discard; §5.2.6.2: the device answers UNSUPP.
            return Outcome::Violation(
                format!("{name} range {i} sets the unmap flag"),
                blk_status::UNSUPP,
            );
        }
        if num > max_sectors {
            return violation(format!(
                "{name} range {i} of {num} sectors exceeds the limit {max_sectors}"
            ));
        }
        if let Some(status) = check_range(cfg, sector, u64::from(num)) {
            return Done(status, 0);
        }
    }
    for i in 0..n {
        let (sector, num, _) = read_range(i);
        let bytes = usize::try_from(u64::from(num) * SECTOR_SIZE).unwrap_or(usize::MAX);
        ctx.disk.with_bytes(sector, bytes, |d| {
            if let Some(d) = d {
                d.fill(0);
            }
        });
    }
    Done(blk_status::OK, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segs_keep_every_buffer_in_order_inline_or_spilled() {
        let seg = |i: u64| RawSeg {
            addr: i,
            len: i as u32,
            write: i & 1 == 0,
        };
        let addrs = |s: &Segs| s.as_slice().iter().map(|s| s.addr).collect::<Vec<_>>();
        let mut segs = Segs::default();
        for n in [0u64, 3, 4, 5, 11, 2, 4, 9] {
            segs.clear();
            for i in 0..n {
                segs.push(seg(i));
            }
            assert_eq!(addrs(&segs), (0..n).collect::<Vec<_>>(), "{n} buffers");
            assert!(segs.as_slice().iter().all(|s| s.len == s.addr as u32));
        }
    }
}
