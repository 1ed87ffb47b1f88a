//! A fake modern virtio-pci block function for the unit tests: a
//! configuration space with a capability list, BARs that answer the sizing
//! probe, and a device behind the common configuration structure that reacts
//! to the driver's writes as §4.1.4.3 says (feature windows, status,
//! queue_select, MSI-X vector mapping, queue_reset) and clears its ISR on read.

extern crate std;

use core::cell::{Cell, RefCell};
use std::rc::Rc;
use std::vec;
use std::vec::Vec;

use super::caps::header;
use super::{common, PciConfig, NO_VECTOR};
use crate::spec::{blk_config, DeviceStatus, Features};
use crate::transport::regs::bus::{self, Attached, FakeBus};
use crate::transport::testing::{Block, BusHal};

/// Where the fake's BARs live on the "bus".
pub(super) const BAR4_PADDR: u64 = 0x8_0000_0000;
pub(super) const BAR4_SIZE: u64 = 0x4000;
pub(super) const BAR1_PADDR: u64 = 0xfebd_1000;
pub(super) const BAR1_SIZE: u32 = 0x1000;
pub(super) const BAR0_PORT: u32 = 0xc040;

/// Layout of BAR 4 (as QEMU lays out its modern BAR).
pub(super) const COMMON_AT: usize = 0x0000;
pub(super) const ISR_AT: usize = 0x1000;
pub(super) const DEVICE_AT: usize = 0x2000;
pub(super) const NOTIFY_AT: usize = 0x3000;
pub(super) const NOTIFY_LEN: usize = 0x1000;
pub(super) const NOTIFY_MULTIPLIER: u32 = 4;
/// MSI-X table entries.
pub(super) const MSIX_TABLE_SIZE: u16 = 8;

/// `queue_notify_off` the fake reports for queue `q`: deliberately not `q`.
pub(super) fn notify_off(q: u16) -> u16 {
    3 * q + 1
}

/// Capacity the fake reports, in sectors.
pub(super) const CAPACITY: u64 = 0x12_3456;

/// Features the fake offers: a few the driver knows and an unknown high bit.
pub(super) fn offered() -> u64 {
    (Features::VERSION_1
        | Features::RING_RESET
        | Features::BLK_MQ
        | Features::BLK_FLUSH
        | Features::BLK_BLK_SIZE)
        .bits()
        | 1 << 50
}

/// How one BAR register behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FakeBar {
    None,
    Io { size: u32 },
    Mem32 { size: u32 },
    Mem64 { size: u64 },
    Upper { size: u64 },
}

/// One PCI function's configuration space.
pub(super) struct FakeFunction {
    space: RefCell<[u8; 256]>,
    bars: Cell<[FakeBar; 6]>,
    /// Offsets of the capabilities added, in list order.
    pub caps: RefCell<Vec<u8>>,
    msix_at: Cell<Option<u8>>,
    /// Every write: (offset, width, value).
    pub writes: RefCell<Vec<(u16, usize, u32)>>,
}

impl FakeFunction {
    pub fn new(vendor: u16, device: u16) -> Self {
        let f = FakeFunction {
            space: RefCell::new([0; 256]),
            bars: Cell::new([FakeBar::None; 6]),
            caps: RefCell::new(Vec::new()),
            msix_at: Cell::new(None),
            writes: RefCell::new(Vec::new()),
        };
        f.poke_u16(header::VENDOR_ID, vendor);
        f.poke_u16(header::DEVICE_ID, device);
        f.poke_u16(header::STATUS, 1 << 4);
        f.poke_u8(header::INTERRUPT_LINE, 11);
        f.poke_u8(header::INTERRUPT_PIN, 1);
        f
    }

    pub fn peek_u8(&self, at: u16) -> u8 {
        self.space.borrow()[usize::from(at)]
    }

    pub fn peek_u16(&self, at: u16) -> u16 {
        let s = self.space.borrow();
        let a = usize::from(at);
        u16::from_le_bytes([s[a], s[a + 1]])
    }

    pub fn peek_u32(&self, at: u16) -> u32 {
        let s = self.space.borrow();
        let a = usize::from(at);
        u32::from_le_bytes([s[a], s[a + 1], s[a + 2], s[a + 3]])
    }

    pub fn poke_u8(&self, at: u16, value: u8) {
        self.space.borrow_mut()[usize::from(at)] = value;
    }

    pub fn poke_u16(&self, at: u16, value: u16) {
        let a = usize::from(at);
        self.space.borrow_mut()[a..a + 2].copy_from_slice(&value.to_le_bytes());
    }

    pub fn poke_u32(&self, at: u16, value: u32) {
        let a = usize::from(at);
        self.space.borrow_mut()[a..a + 4].copy_from_slice(&value.to_le_bytes());
    }

    /// Installs BAR `index` at `addr` (a 64-bit BAR also takes `index + 1`).
    pub fn set_bar(&self, index: usize, bar: FakeBar, addr: u64) {
        let mut bars = self.bars.get();
        let reg = header::BAR0 + 4 * index as u16;
        match bar {
            FakeBar::None | FakeBar::Upper { .. } => self.poke_u32(reg, 0),
            FakeBar::Io { .. } => self.poke_u32(reg, addr as u32 | 1),
            FakeBar::Mem32 { .. } => self.poke_u32(reg, addr as u32),
            FakeBar::Mem64 { size } => {
                self.poke_u32(reg, addr as u32 | 0b1100); // 64-bit, prefetchable
                self.poke_u32(reg + 4, (addr >> 32) as u32);
                bars[index + 1] = FakeBar::Upper { size };
            }
        }
        bars[index] = bar;
        self.bars.set(bars);
    }

    /// Appends a capability (its `next` byte is set here) and links it in.
    pub fn add_cap(&self, bytes: &[u8]) -> u8 {
        let mut caps = self.caps.borrow_mut();
        let at = match caps.last() {
            None => 0x40,
            Some(&last) => {
                let len = self.peek_u8(u16::from(last) + 2).max(4);
                let after = usize::from(last) + usize::from(len);
                ((after + 3) & !3) as u8
            }
        };
        {
            let mut space = self.space.borrow_mut();
            let a = usize::from(at);
            space[a..a + bytes.len()].copy_from_slice(bytes);
            space[a + 1] = 0;
        }
        match caps.last() {
            None => self.poke_u8(header::CAPABILITIES, at),
            Some(&last) => self.poke_u8(u16::from(last) + 1, at),
        }
        if bytes[0] == 0x11 {
            self.msix_at.set(Some(at));
        }
        caps.push(at);
        at
    }

    fn write_bar(&self, index: usize, value: u32) {
        let reg = header::BAR0 + 4 * index as u16;
        let old = self.peek_u32(reg);
        let stored = match self.bars.get()[index] {
            FakeBar::None => 0,
            FakeBar::Io { size } => (value & !(size - 1) & !3) | 1,
            FakeBar::Mem32 { size } => (value & !(size - 1) & !0xf) | (old & 0xf),
            FakeBar::Mem64 { size } => (value & !(size - 1) as u32 & !0xf) | (old & 0xf),
            FakeBar::Upper { size } => value & (!(size - 1) >> 32) as u32,
        };
        self.poke_u32(reg, stored);
    }
}

impl PciConfig for FakeFunction {
    fn read_u8(&self, offset: u16) -> u8 {
        self.peek_u8(offset)
    }
    fn read_u16(&self, offset: u16) -> u16 {
        assert_eq!(offset % 2, 0, "misaligned config read");
        self.peek_u16(offset)
    }
    fn read_u32(&self, offset: u16) -> u32 {
        assert_eq!(offset % 4, 0, "misaligned config read");
        self.peek_u32(offset)
    }
    fn write_u8(&self, offset: u16, value: u8) {
        self.writes.borrow_mut().push((offset, 1, value.into()));
        self.poke_u8(offset, value);
    }
    fn write_u16(&self, offset: u16, value: u16) {
        assert_eq!(offset % 2, 0, "misaligned config write");
        self.writes.borrow_mut().push((offset, 2, value.into()));
        match self.msix_at.get() {
            // Only Enable and Function Mask are writable in Message Control.
            Some(at) if offset == u16::from(at) + 2 => {
                let old = self.peek_u16(offset);
                self.poke_u16(offset, (old & 0x07ff) | (value & 0xc000));
            }
            _ => self.poke_u16(offset, value),
        }
    }
    fn write_u32(&self, offset: u16, value: u32) {
        assert_eq!(offset % 4, 0, "misaligned config write");
        self.writes.borrow_mut().push((offset, 4, value));
        if (header::BAR0..header::BAR0 + 24).contains(&offset) {
            self.write_bar(usize::from((offset - header::BAR0) / 4), value);
        } else {
            self.poke_u32(offset, value);
        }
    }
}

/// `struct virtio_pci_cap` bytes (with `notify_off_multiplier` for notify).
pub(super) fn virtio_cap(cfg_type: u8, bar: u8, offset: u32, length: u32) -> Vec<u8> {
    let notify = cfg_type == 2;
    let mut cap = vec![
        0x09,
        0,
        if notify { 20 } else { 16 },
        cfg_type,
        bar,
        0,
        0,
        0,
    ];
    cap.extend_from_slice(&offset.to_le_bytes());
    cap.extend_from_slice(&length.to_le_bytes());
    if notify {
        cap.extend_from_slice(&NOTIFY_MULTIPLIER.to_le_bytes());
    }
    cap
}

/// MSI-X capability bytes: table and PBA in `bar`.
pub(super) fn msix_cap(table_size: u16, bar: u8, table_offset: u32) -> Vec<u8> {
    let mut cap = vec![0x11, 0];
    cap.extend_from_slice(&(table_size - 1).to_le_bytes());
    cap.extend_from_slice(&(table_offset | u32::from(bar)).to_le_bytes());
    cap.extend_from_slice(&(0x800 | u32::from(bar)).to_le_bytes());
    cap
}

/// The function as QEMU's `virtio-blk-pci` presents it, plus a notify
/// capability in the legacy I/O BAR listed first (which must be skipped).
pub(super) fn standard_function() -> FakeFunction {
    let f = FakeFunction::new(0x1af4, 0x1042);
    f.set_bar(0, FakeBar::Io { size: 0x40 }, u64::from(BAR0_PORT));
    f.set_bar(1, FakeBar::Mem32 { size: BAR1_SIZE }, BAR1_PADDR);
    f.set_bar(4, FakeBar::Mem64 { size: BAR4_SIZE }, BAR4_PADDR);
    f.add_cap(&msix_cap(MSIX_TABLE_SIZE, 1, 0));
    f.add_cap(&virtio_cap(2, 0, 0x10, 0x20)); // notify in the I/O BAR
    f.add_cap(&virtio_cap(1, 4, COMMON_AT as u32, 0x1000));
    f.add_cap(&virtio_cap(3, 4, ISR_AT as u32, 0x1000));
    f.add_cap(&virtio_cap(4, 4, DEVICE_AT as u32, 0x1000));
    f.add_cap(&virtio_cap(2, 4, NOTIFY_AT as u32, NOTIFY_LEN as u32));
    f
}

/// One virtqueue's state on the device side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct FakeQueue {
    pub size: u16,
    pub vector: u16,
    pub enable: u16,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

/// The device behind BAR 4: what it was told, and how it misbehaves.
pub(super) struct DevState {
    pub offered: u64,
    pub driver_features: [u32; 2],
    pub negotiated: Option<u64>,
    pub status: u8,
    pub max_sizes: Vec<u16>,
    pub notify_offs: Vec<u16>,
    pub queues: Vec<FakeQueue>,
    /// Vectors below this are mapped; others read back NO_VECTOR.
    pub vectors_accepted: u16,
    pub config_vector: u16,
    /// Reads of `device_status` before a reset completes (`u32::MAX`: never).
    pub reset_reads: u32,
    pending_reset: Option<u32>,
    /// Reads of `queue_reset` before a queue reset completes (`u32::MAX`: never).
    pub queue_reset_reads: u32,
    pending_queue_reset: Option<(u16, u32)>,
    pub resets: u32,
    pub queue_resets: Vec<u16>,
    /// Doorbell writes: (offset in the notify region, width, value).
    pub notifies: Vec<(usize, usize, u64)>,
    /// Writes to the common configuration: (offset, width, value).
    pub common_writes: Vec<(usize, usize, u64)>,
}

impl Default for DevState {
    fn default() -> Self {
        DevState {
            offered: offered(),
            driver_features: [0; 2],
            negotiated: None,
            status: 0,
            max_sizes: vec![1024, 1024, 512, 0],
            notify_offs: (0..4).map(notify_off).collect(),
            queues: Vec::new(),
            vectors_accepted: MSIX_TABLE_SIZE,
            config_vector: NO_VECTOR,
            reset_reads: 0,
            pending_reset: None,
            queue_reset_reads: 0,
            pending_queue_reset: None,
            resets: 0,
            queue_resets: Vec::new(),
            notifies: Vec::new(),
            common_writes: Vec::new(),
        }
    }
}

pub(super) struct FakeDevice {
    pub bar4: Block,
    pub bar1: Block,
    pub state: RefCell<DevState>,
}

impl FakeDevice {
    fn new() -> Self {
        let device = FakeDevice {
            bar4: Block::new(BAR4_SIZE as usize),
            bar1: Block::new(BAR1_SIZE as usize),
            state: RefCell::new(DevState::default()),
        };
        let cfg = |offset| DEVICE_AT + offset;
        device.bar4.set_u64(cfg(blk_config::CAPACITY), CAPACITY);
        device.bar4.set_u32(cfg(blk_config::BLK_SIZE), 4096);
        device.bar4.set_u16(cfg(blk_config::NUM_QUEUES), 3);
        device.power_on();
        device
    }

    /// Changes the device's parameters, then brings it to its reset state.
    pub fn configure(&self, change: impl FnOnce(&mut DevState)) {
        change(&mut self.state.borrow_mut());
        self.power_on();
    }

    fn power_on(&self) {
        {
            let mut s = self.state.borrow_mut();
            let n = s.max_sizes.len();
            s.queues = vec![FakeQueue::default(); n];
        }
        self.reset_now();
        self.state.borrow_mut().resets = 0;
    }

    fn common(&self, offset: usize) -> usize {
        COMMON_AT + offset
    }

    fn num_queues(&self) -> u16 {
        self.state.borrow().max_sizes.len() as u16
    }

    fn selected(&self) -> u16 {
        self.bar4.u16(self.common(common::QUEUE_SELECT))
    }

    fn accept(&self, vector: u16) -> u16 {
        if vector == NO_VECTOR || vector < self.state.borrow().vectors_accepted {
            vector
        } else {
            NO_VECTOR
        }
    }

    /// §4.1.4.3.1: status 0, features forgotten, every vector unmapped,
    /// every queue disabled and back to its maximum size.
    fn reset_now(&self) {
        let mut s = self.state.borrow_mut();
        s.status = 0;
        s.driver_features = [0; 2];
        s.negotiated = None;
        s.config_vector = NO_VECTOR;
        s.pending_reset = None;
        s.pending_queue_reset = None;
        s.resets += 1;
        for q in 0..s.queues.len() {
            let size = s.max_sizes[q];
            s.queues[q] = FakeQueue {
                size,
                vector: NO_VECTOR,
                ..FakeQueue::default()
            };
        }
        let n = s.max_sizes.len() as u16;
        drop(s);
        self.bar4.set_u8(self.common(common::DEVICE_STATUS), 0);
        self.bar4
            .set_u16(self.common(common::MSIX_CONFIG), NO_VECTOR);
        self.bar4.set_u16(self.common(common::NUM_QUEUES), n);
        self.load_queue(self.selected());
    }

    /// Presents queue `q`'s registers after `queue_select`.
    fn load_queue(&self, q: u16) {
        let s = self.state.borrow();
        let (queue, notify_off) = match s.queues.get(usize::from(q)) {
            Some(queue) => (*queue, s.notify_offs[usize::from(q)]),
            None => (FakeQueue::default(), 0),
        };
        drop(s);
        let c = |o| self.common(o);
        self.bar4.set_u16(c(common::QUEUE_SIZE), queue.size);
        self.bar4
            .set_u16(c(common::QUEUE_MSIX_VECTOR), queue.vector);
        self.bar4.set_u16(c(common::QUEUE_ENABLE), queue.enable);
        self.bar4.set_u16(c(common::QUEUE_NOTIFY_OFF), notify_off);
        self.bar4.set_u64(c(common::QUEUE_DESC), queue.desc);
        self.bar4.set_u64(c(common::QUEUE_DRIVER), queue.driver);
        self.bar4.set_u64(c(common::QUEUE_DEVICE), queue.device);
        self.bar4.set_u16(c(common::QUEUE_RESET), 0);
    }

    fn with_queue(&self, change: impl FnOnce(&mut FakeQueue)) {
        let q = usize::from(self.selected());
        if let Some(queue) = self.state.borrow_mut().queues.get_mut(q) {
            change(queue);
        }
    }

    fn write_status(&self, value: u8) {
        let old = self.state.borrow().status;
        if value == 0 {
            let reads = self.state.borrow().reset_reads;
            if reads == 0 {
                self.reset_now();
            } else {
                // Still resetting: the old status shows until it is done.
                self.state.borrow_mut().pending_reset = Some(reads);
                self.bar4.set_u8(self.common(common::DEVICE_STATUS), old);
            }
            return;
        }
        let mut new = value;
        let features_ok = DeviceStatus::FEATURES_OK.bits();
        if new & features_ok != 0 && old & features_ok == 0 {
            let mut s = self.state.borrow_mut();
            let wanted = u64::from(s.driver_features[1]) << 32 | u64::from(s.driver_features[0]);
            if wanted & !s.offered != 0 || wanted & Features::VERSION_1.bits() == 0 {
                new &= !features_ok;
            } else {
                s.negotiated = Some(wanted);
            }
        }
        self.state.borrow_mut().status = new;
        self.bar4.set_u8(self.common(common::DEVICE_STATUS), new);
    }

    fn finish_queue_reset(&self, q: u16) {
        {
            let mut s = self.state.borrow_mut();
            let size = s.max_sizes[usize::from(q)];
            s.queues[usize::from(q)] = FakeQueue {
                size,
                vector: NO_VECTOR,
                ..FakeQueue::default()
            };
            s.pending_queue_reset = None;
            s.queue_resets.push(q);
        }
        if self.selected() == q {
            self.load_queue(q);
        }
    }

    fn write_common(&self, offset: usize, value: u64) {
        let c = |o| self.common(o);
        match offset {
            common::DEVICE_FEATURE_SELECT => {
                let offered = self.state.borrow().offered;
                let word = match value {
                    0 => offered as u32,
                    1 => (offered >> 32) as u32,
                    _ => 0,
                };
                self.bar4.set_u32(c(common::DEVICE_FEATURE), word);
            }
            common::DRIVER_FEATURE_SELECT => {
                let word = self
                    .state
                    .borrow()
                    .driver_features
                    .get(value as usize)
                    .copied()
                    .unwrap_or(0);
                self.bar4.set_u32(c(common::DRIVER_FEATURE), word);
            }
            common::DRIVER_FEATURE => {
                let select = self.bar4.u32(c(common::DRIVER_FEATURE_SELECT)) as usize;
                if let Some(word) = self.state.borrow_mut().driver_features.get_mut(select) {
                    *word = value as u32;
                }
            }
            common::MSIX_CONFIG => {
                let vector = self.accept(value as u16);
                self.state.borrow_mut().config_vector = vector;
                self.bar4.set_u16(c(common::MSIX_CONFIG), vector);
            }
            common::DEVICE_STATUS => self.write_status(value as u8),
            common::QUEUE_SELECT => self.load_queue(value as u16),
            common::QUEUE_SIZE => self.with_queue(|q| q.size = value as u16),
            common::QUEUE_MSIX_VECTOR => {
                let vector = self.accept(value as u16);
                self.with_queue(|q| q.vector = vector);
                self.bar4.set_u16(c(common::QUEUE_MSIX_VECTOR), vector);
            }
            common::QUEUE_ENABLE => self.with_queue(|q| q.enable = value as u16),
            o @ (0x20 | 0x24 | 0x28 | 0x2c | 0x30 | 0x34) => {
                let field = o & !7;
                let full = self.bar4.bytes::<8>(c(field));
                let full = u64::from_le_bytes(full);
                self.with_queue(|q| match field {
                    common::QUEUE_DESC => q.desc = full,
                    common::QUEUE_DRIVER => q.driver = full,
                    _ => q.device = full,
                });
            }
            common::QUEUE_RESET if value == 1 => {
                let q = self.selected();
                if q >= self.num_queues() {
                    return;
                }
                let reads = self.state.borrow().queue_reset_reads;
                if reads == 0 {
                    self.finish_queue_reset(q);
                } else {
                    self.state.borrow_mut().pending_queue_reset = Some((q, reads));
                }
            }
            _ => {}
        }
    }

    /// A read of a register that is still counting down.
    fn count_down(&self, offset: usize) {
        if offset == common::DEVICE_STATUS {
            let pending = self.state.borrow().pending_reset;
            match pending {
                Some(u32::MAX) | None => {}
                Some(1) => self.reset_now(),
                Some(n) => self.state.borrow_mut().pending_reset = Some(n - 1),
            }
        }
        if offset == common::QUEUE_RESET {
            let pending = self.state.borrow().pending_queue_reset;
            match pending {
                Some((_, u32::MAX)) | None => {}
                Some((q, 1)) => self.finish_queue_reset(q),
                Some((q, n)) => self.state.borrow_mut().pending_queue_reset = Some((q, n - 1)),
            }
        }
    }
}

impl FakeBus for FakeDevice {
    fn before_read(&self, addr: usize, _width: usize) {
        if let Some(offset) = self.bar4.offset_of(addr, COMMON_AT, 0x40) {
            self.count_down(offset);
        }
    }

    fn after_read(&self, addr: usize, _width: usize) {
        // §4.1.4.5: reading the ISR resets it.
        if self.bar4.offset_of(addr, ISR_AT, 1).is_some() {
            self.bar4.set_u8(ISR_AT, 0);
        }
    }

    fn after_write(&self, addr: usize, width: usize, value: u64) {
        if let Some(offset) = self.bar4.offset_of(addr, NOTIFY_AT, NOTIFY_LEN) {
            self.state
                .borrow_mut()
                .notifies
                .push((offset, width, value));
        } else if let Some(offset) = self.bar4.offset_of(addr, COMMON_AT, 0x40) {
            self.state
                .borrow_mut()
                .common_writes
                .push((offset, width, value));
            self.write_common(offset, value);
        }
    }
}

/// A fake function, its device on this thread's bus, and a Hal that maps it.
pub(super) struct Rig {
    pub function: FakeFunction,
    pub device: Rc<FakeDevice>,
    pub hal: BusHal,
    _bus: Attached,
}

impl Rig {
    pub fn new() -> Self {
        Self::with_function(standard_function())
    }

    pub fn with_function(function: FakeFunction) -> Self {
        let device = Rc::new(FakeDevice::new());
        let hal = BusHal::default();
        hal.place(BAR4_PADDR, &device.bar4);
        hal.place(BAR1_PADDR, &device.bar1);
        let bus = bus::attach(device.clone());
        Rig {
            function,
            device,
            hal,
            _bus: bus,
        }
    }

    pub fn state(&self) -> std::cell::RefMut<'_, DevState> {
        self.device.state.borrow_mut()
    }
}
