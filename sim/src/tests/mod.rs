//! A tiny mock DRIVER written straight against the spec structures, to drive
//! the device side the way a driver would, step by step.

mod hostile;
mod hostile_control;
mod misc;
mod packed;
mod split;
mod take_three;

use core::ptr::NonNull;
use core::sync::atomic::{fence, AtomicU32, Ordering};
use std::collections::HashMap;

use virtio_blk_mq::spec::{
    need_event, packed_event, EventSuppress, PackedDesc, PackedDescFlags, PackedLayout, SplitDesc,
    SplitDescFlags, SplitLayout, UsedElem, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY,
};
use virtio_blk_mq::{
    DeviceStatus, Features, Hal, QueueAddresses, QueueNotifier, Transport, PAGE_SIZE,
};

use crate::{SimConfig, SimDevice, SimHal, SimNotifier, SimTransport};

/// One buffer: address, length, device-writable.
pub(crate) type Seg = (u64, u32, bool);

/// DMA memory for the mock driver, freed on drop.
pub(crate) struct Dma {
    paddr: u64,
    vaddr: NonNull<u8>,
    pages: usize,
}

impl Dma {
    pub(crate) fn new(bytes: usize) -> Dma {
        let pages = bytes.div_ceil(PAGE_SIZE).max(1);
        let (paddr, vaddr) = SimHal.dma_alloc(pages).expect("DMA allocation");
        Dma {
            paddr,
            vaddr,
            pages,
        }
    }

    pub(crate) fn addr(&self) -> u64 {
        self.paddr
    }

    fn check(&self, offset: usize, len: usize) {
        assert!(
            offset + len <= self.pages * PAGE_SIZE,
            "mock access out of bounds"
        );
    }

    pub(crate) fn write(&self, offset: usize, data: &[u8]) {
        self.check(offset, data.len());
        // SAFETY: in bounds of our allocation (checked); the device only
        // touches buffers the mock has made available, which tests do not write.
        unsafe {
            core::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.vaddr.as_ptr().add(offset),
                data.len(),
            )
        }
    }

    pub(crate) fn read(&self, offset: usize, out: &mut [u8]) {
        self.check(offset, out.len());
        // SAFETY: in bounds of our allocation (checked).
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.vaddr.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        }
    }

    /// A shared-memory structure made of atomics at `offset`.
    pub(crate) fn at<T>(&self, offset: usize) -> &T {
        self.check(offset, core::mem::size_of::<T>());
        let p = self.vaddr.as_ptr().wrapping_add(offset);
        assert_eq!(
            p as usize % core::mem::align_of::<T>(),
            0,
            "misaligned mock access"
        );
        // SAFETY: in bounds and aligned (checked); only used with the spec's
        // atomic structures, which are valid for any bytes and shared with the device.
        unsafe { &*p.cast::<T>() }
    }
}

impl Drop for Dma {
    fn drop(&mut self) {
        // SAFETY: exactly what dma_alloc returned; tests drop buffers after the
        // device has used them.
        unsafe { SimHal.dma_dealloc(self.paddr, self.vaddr, self.pages) }
    }
}

/// Negotiates `accept` (must get FEATURES_OK) without setting DRIVER_OK.
pub(crate) fn negotiate(config: SimConfig, accept: Features) -> (SimDevice, SimTransport) {
    let dev = SimDevice::new(config);
    let mut t = dev.transport();
    t.reset();
    t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    assert!(Features::from_bits_retain(t.device_features()).contains(accept));
    t.set_driver_features(accept.bits());
    t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
    assert!(t.status().contains(DeviceStatus::FEATURES_OK));
    (dev, t)
}

/// Sets DRIVER_OK.
pub(crate) fn driver_ok(t: &mut SimTransport) {
    t.set_status(
        DeviceStatus::ACKNOWLEDGE
            | DeviceStatus::DRIVER
            | DeviceStatus::FEATURES_OK
            | DeviceStatus::DRIVER_OK,
    );
}

/// A virtio-blk request's buffers: header at 0, status at 16, data at 4096.
pub(crate) struct Req {
    pub(crate) mem: Dma,
    pub(crate) data_len: u32,
    ty: u32,
}

impl Req {
    pub(crate) fn new(ty: u32, sector: u64, data_len: u32) -> Req {
        let mem = Dma::new(PAGE_SIZE + data_len as usize);
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&ty.to_le_bytes());
        hdr[8..16].copy_from_slice(&sector.to_le_bytes());
        mem.write(0, &hdr);
        mem.write(16, &[0xff]);
        Req { mem, data_len, ty }
    }

    pub(crate) fn status(&self) -> u8 {
        let mut b = [0u8];
        self.mem.read(16, &mut b);
        b[0]
    }

    pub(crate) fn data(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.data_len as usize];
        self.mem.read(PAGE_SIZE, &mut v);
        v
    }

    pub(crate) fn set_data(&self, data: &[u8]) {
        self.mem.write(PAGE_SIZE, data);
    }

    /// header (readable), data (writable for IN / GET_ID / GET_LIFETIME), status (writable).
    pub(crate) fn segs(&self) -> Vec<Seg> {
        let base = self.mem.addr();
        let data_writable = matches!(self.ty, 0 | 8 | 10);
        let mut v = vec![(base, 16, false)];
        if self.data_len > 0 {
            v.push((base + PAGE_SIZE as u64, self.data_len, data_writable));
        }
        v.push((base + 16, 1, true));
        v
    }
}

/// The driver side of one split ring (VIRTIO 1.2 §2.7), by hand.
pub(crate) struct MockSplit {
    pub(crate) ring: Dma,
    pub(crate) layout: SplitLayout,
    event_idx: bool,
    free: Vec<u16>,
    chains: HashMap<u16, Vec<u16>>,
    tables: HashMap<u16, Dma>,
    pub(crate) avail_idx: u16,
    published: u16,
    last_used: u16,
    notifier: SimNotifier,
}

impl MockSplit {
    pub(crate) fn new(
        t: &mut SimTransport,
        queue: u16,
        size: u16,
        features: Features,
    ) -> MockSplit {
        let layout = SplitLayout::new(size);
        let ring = Dma::new(layout.total);
        let base = ring.addr();
        let addrs = QueueAddresses {
            desc: base + layout.desc as u64,
            driver: base + layout.avail as u64,
            device: base + layout.used as u64,
        };
        t.setup_queue(queue, size, addrs).expect("setup_queue");
        MockSplit {
            ring,
            layout,
            event_idx: features.contains(Features::EVENT_IDX),
            free: (0..size).rev().collect(),
            chains: HashMap::new(),
            tables: HashMap::new(),
            avail_idx: 0,
            published: 0,
            last_used: 0,
            notifier: t.notifier(queue),
        }
    }

    pub(crate) fn desc(&self, i: u16) -> &SplitDesc {
        self.ring.at(self.layout.desc + 16 * usize::from(i))
    }

    fn avail_word(&self, w: usize) -> &core::sync::atomic::AtomicU16 {
        self.ring.at(self.layout.avail + 2 * w)
    }

    fn used_word(&self, w: usize) -> &core::sync::atomic::AtomicU16 {
        self.ring.at(self.layout.used + 2 * w)
    }

    pub(crate) fn used_flags(&self) -> u16 {
        u16::from_le(self.used_word(0).load(Ordering::Relaxed))
    }

    pub(crate) fn avail_event(&self) -> u16 {
        u16::from_le(
            self.used_word(2 + 4 * usize::from(self.layout.size))
                .load(Ordering::Relaxed),
        )
    }

    pub(crate) fn set_used_event(&self, v: u16) {
        self.avail_word(2 + usize::from(self.layout.size))
            .store(v.to_le(), Ordering::Relaxed);
    }

    pub(crate) fn set_no_interrupt(&self, on: bool) {
        let f = if on { VIRTQ_AVAIL_F_NO_INTERRUPT } else { 0 };
        self.avail_word(0).store(f.to_le(), Ordering::Relaxed);
    }

    fn write_desc(&self, i: u16, addr: u64, len: u32, flags: SplitDescFlags, next: u16) {
        let d = self.desc(i);
        d.addr.store(addr.to_le(), Ordering::Relaxed);
        d.len.store(len.to_le(), Ordering::Relaxed);
        d.flags.store(flags.bits().to_le(), Ordering::Relaxed);
        d.next.store(next.to_le(), Ordering::Relaxed);
    }

    fn put_avail(&mut self, head: u16) {
        let slot = 2 + usize::from(self.avail_idx % self.layout.size);
        self.avail_word(slot).store(head.to_le(), Ordering::Relaxed);
        self.avail_idx = self.avail_idx.wrapping_add(1);
    }

    /// Writes a NEXT-linked chain and its avail entry (not yet published).
    pub(crate) fn add(&mut self, segs: &[Seg]) -> u16 {
        let ids: Vec<u16> = (0..segs.len())
            .map(|_| self.free.pop().expect("free descriptor"))
            .collect();
        for (k, &(addr, len, write)) in segs.iter().enumerate() {
            let mut flags = if write {
                SplitDescFlags::WRITE
            } else {
                SplitDescFlags::empty()
            };
            let next = ids.get(k + 1).copied().unwrap_or(0);
            if k + 1 < segs.len() {
                flags |= SplitDescFlags::NEXT;
            }
            self.write_desc(ids[k], addr, len, flags, next);
        }
        self.chains.insert(ids[0], ids.clone());
        self.put_avail(ids[0]);
        ids[0]
    }

    /// Writes one INDIRECT descriptor pointing to a table holding `segs`.
    pub(crate) fn add_indirect(&mut self, segs: &[Seg]) -> u16 {
        let table = Dma::new(16 * segs.len());
        for (k, &(addr, len, write)) in segs.iter().enumerate() {
            let d: &SplitDesc = table.at(16 * k);
            let mut flags = if write {
                SplitDescFlags::WRITE
            } else {
                SplitDescFlags::empty()
            };
            if k + 1 < segs.len() {
                flags |= SplitDescFlags::NEXT;
            }
            d.addr.store(addr.to_le(), Ordering::Relaxed);
            d.len.store(len.to_le(), Ordering::Relaxed);
            d.flags.store(flags.bits().to_le(), Ordering::Relaxed);
            d.next.store(((k + 1) as u16).to_le(), Ordering::Relaxed);
        }
        let head = self.free.pop().expect("free descriptor");
        self.write_desc(
            head,
            table.addr(),
            16 * segs.len() as u32,
            SplitDescFlags::INDIRECT,
            0,
        );
        self.tables.insert(head, table);
        self.chains.insert(head, vec![head]);
        self.put_avail(head);
        head
    }

    /// Publishes avail.idx (Release), fences, and kicks if the device asks; true when it kicked.
    pub(crate) fn publish(&mut self) -> bool {
        let old = self.published;
        let new = self.avail_idx;
        self.avail_word(1).store(new.to_le(), Ordering::Release);
        self.published = new;
        fence(Ordering::SeqCst);
        let kick = if self.event_idx {
            need_event(self.avail_event(), new, old)
        } else {
            self.used_flags() & VIRTQ_USED_F_NO_NOTIFY == 0
        };
        if kick {
            self.notifier.notify();
        }
        kick
    }

    /// Pops all used elements as `(id, len)` and frees their descriptors.
    pub(crate) fn used(&mut self) -> Vec<(u32, u32)> {
        let idx = u16::from_le(self.used_word(1).load(Ordering::Acquire));
        let mut out = Vec::new();
        while self.last_used != idx {
            let slot = usize::from(self.last_used % self.layout.size);
            let e: &UsedElem = self.ring.at(self.layout.used + 4 + 8 * slot);
            let id = u32::from_le(e.id.load(Ordering::Relaxed));
            out.push((id, u32::from_le(e.len.load(Ordering::Relaxed))));
            if let Some(chain) = self.chains.remove(&(id as u16)) {
                self.free.extend(chain);
            }
            self.tables.remove(&(id as u16));
            self.last_used = self.last_used.wrapping_add(1);
        }
        out
    }
}

/// The driver side of one packed ring (VIRTIO 1.2 §2.8), by hand.
pub(crate) struct MockPacked {
    pub(crate) ring: Dma,
    pub(crate) layout: PackedLayout,
    event_idx: bool,
    pub(crate) next: u16,
    pub(crate) wrap: bool,
    published: (u16, bool),
    added: u32,
    used_idx: u16,
    used_wrap: bool,
    free_ids: Vec<u16>,
    chain_len: HashMap<u16, u16>,
    pub(crate) tables: HashMap<u16, Dma>,
    notifier: SimNotifier,
}

impl MockPacked {
    pub(crate) fn new(
        t: &mut SimTransport,
        queue: u16,
        size: u16,
        features: Features,
    ) -> MockPacked {
        let layout = PackedLayout::new(size);
        let ring = Dma::new(layout.total);
        let base = ring.addr();
        let addrs = QueueAddresses {
            desc: base + layout.desc as u64,
            driver: base + layout.driver_event as u64,
            device: base + layout.device_event as u64,
        };
        t.setup_queue(queue, size, addrs).expect("setup_queue");
        MockPacked {
            ring,
            layout,
            event_idx: features.contains(Features::EVENT_IDX),
            next: 0,
            wrap: true,
            published: (0, true),
            added: 0,
            used_idx: 0,
            used_wrap: true,
            free_ids: (0..size).rev().collect(),
            chain_len: HashMap::new(),
            tables: HashMap::new(),
            notifier: t.notifier(queue),
        }
    }

    pub(crate) fn desc(&self, i: u16) -> &PackedDesc {
        self.ring.at(self.layout.desc + 16 * usize::from(i))
    }

    pub(crate) fn device_event(&self) -> (u16, u16) {
        let word: &AtomicU32 = self.ring.at(self.layout.device_event);
        let word = u32::from_le(word.load(Ordering::Relaxed));
        ((word >> 16) as u16, word as u16)
    }

    pub(crate) fn set_driver_event(&self, flags: u16, off_wrap: u16) {
        let e: &EventSuppress = self.ring.at(self.layout.driver_event);
        e.off_wrap.store(off_wrap.to_le(), Ordering::Relaxed);
        e.flags.store(flags.to_le(), Ordering::Release);
    }

    fn avail_flags(&self, write: bool) -> PackedDescFlags {
        let mut f = if self.wrap {
            PackedDescFlags::AVAIL
        } else {
            PackedDescFlags::USED
        };
        if write {
            f |= PackedDescFlags::WRITE;
        }
        f
    }

    fn advance(&mut self) {
        self.next += 1;
        self.added += 1;
        if self.next == self.layout.size {
            self.next = 0;
            self.wrap = !self.wrap;
        }
    }

    /// Writes `descs` (addr, len, flags without AVAIL/USED) as one chain, head flags last.
    fn add_raw(&mut self, descs: &[(u64, u32, PackedDescFlags)]) -> u16 {
        let id = self.free_ids.pop().expect("free buffer id");
        let head = self.next;
        let mut head_flags = PackedDescFlags::empty();
        for (k, &(addr, len, extra)) in descs.iter().enumerate() {
            let mut flags = self.avail_flags(false) | extra;
            if k + 1 < descs.len() {
                flags |= PackedDescFlags::NEXT;
            }
            let d = self.desc(self.next);
            d.addr.store(addr.to_le(), Ordering::Relaxed);
            d.len.store(len.to_le(), Ordering::Relaxed);
            d.id.store(id.to_le(), Ordering::Relaxed);
            if k == 0 {
                head_flags = flags;
            } else {
                d.flags.store(flags.bits().to_le(), Ordering::Relaxed);
            }
            self.advance();
        }
        // Release: the whole chain is visible before the head's flags.
        self.desc(head)
            .flags
            .store(head_flags.bits().to_le(), Ordering::Release);
        self.chain_len.insert(id, descs.len() as u16);
        id
    }

    /// Makes a chain of `segs` available; returns its buffer id.
    pub(crate) fn add(&mut self, segs: &[Seg]) -> u16 {
        let descs: Vec<_> = segs
            .iter()
            .map(|&(a, l, w)| {
                (
                    a,
                    l,
                    if w {
                        PackedDescFlags::WRITE
                    } else {
                        PackedDescFlags::empty()
                    },
                )
            })
            .collect();
        self.add_raw(&descs)
    }

    /// Makes one INDIRECT descriptor for a table holding `segs` available.
    pub(crate) fn add_indirect(&mut self, segs: &[Seg]) -> u16 {
        let table = Dma::new(16 * segs.len());
        for (k, &(addr, len, write)) in segs.iter().enumerate() {
            let d: &PackedDesc = table.at(16 * k);
            d.addr.store(addr.to_le(), Ordering::Relaxed);
            d.len.store(len.to_le(), Ordering::Relaxed);
            let f = if write {
                PackedDescFlags::WRITE
            } else {
                PackedDescFlags::empty()
            };
            d.flags.store(f.bits().to_le(), Ordering::Relaxed);
        }
        let id = self.add_raw(&[(
            table.addr(),
            16 * segs.len() as u32,
            PackedDescFlags::INDIRECT,
        )]);
        self.tables.insert(id, table);
        id
    }

    /// Fences and kicks if the device event suppression asks; true when it kicked.
    pub(crate) fn publish(&mut self) -> bool {
        let (old, old_wrap) = self.published;
        let added = self.added;
        self.published = (self.next, self.wrap);
        self.added = 0;
        fence(Ordering::SeqCst);
        let (flags, off_wrap) = self.device_event();
        let kick = match flags {
            packed_event::ENABLE => true,
            packed_event::DISABLE => false,
            _ => {
                assert!(self.event_idx);
                let size = u32::from(self.layout.size);
                let lin = |i: u16, w: bool| u32::from(i) + if w { 0 } else { size };
                let off = off_wrap & !packed_event::WRAP_BIT;
                let w = off_wrap & packed_event::WRAP_BIT != 0;
                (lin(off, w) + 2 * size - lin(old, old_wrap)) % (2 * size) < added
            }
        };
        if kick {
            self.notifier.notify();
        }
        kick
    }

    /// Pops used descriptors as `(slot, id, len)`, skipping each chain's length.
    pub(crate) fn used(&mut self) -> Vec<(u16, u16, u32)> {
        let mut out = Vec::new();
        loop {
            let d = self.desc(self.used_idx);
            let flags =
                PackedDescFlags::from_bits_retain(u16::from_le(d.flags.load(Ordering::Acquire)));
            let used = flags.contains(PackedDescFlags::USED);
            if used != self.used_wrap || flags.contains(PackedDescFlags::AVAIL) != used {
                return out;
            }
            let id = u16::from_le(d.id.load(Ordering::Relaxed));
            let len = u32::from_le(d.len.load(Ordering::Relaxed));
            out.push((self.used_idx, id, len));
            let skip = self.chain_len.remove(&id).expect("used id is in flight");
            self.tables.remove(&id);
            self.free_ids.push(id);
            self.used_idx += skip;
            if self.used_idx >= self.layout.size {
                self.used_idx -= self.layout.size;
                self.used_wrap = !self.used_wrap;
            }
        }
    }
}
