//! The MMIO transport against a fake version 2 device that reacts to the
//! driver's register writes as §4.2.2 describes.

extern crate std;

use core::cell::RefCell;
use std::rc::Rc;
use std::vec;
use std::vec::Vec;

use super::*;
use crate::spec::{blk_config, SplitLayout};
use crate::transport::regs::bus::{self, Attached, FakeBus};
use crate::transport::testing::{Block, BusHal};
use crate::{BlkDevice, Config, DmaBuffer, Error};

const WINDOW: usize = 0x200;
const PADDR: PhysAddr = 0xfeb0_0e00;
const CAPACITY: u64 = 0x8_0000;
const VENDOR: u32 = 0x554d_4551; // "QEMU"

fn offered() -> u64 {
    (Features::VERSION_1 | Features::RING_RESET | Features::BLK_MQ | Features::BLK_FLUSH).bits()
        | 1 << 45
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FakeQueue {
    num: u32,
    ready: u32,
    desc: u64,
    driver: u64,
    device: u64,
}

struct State {
    driver_features: [u32; 2],
    negotiated: Option<u64>,
    status: u32,
    max_sizes: Vec<u32>,
    queues: Vec<FakeQueue>,
    /// Reads of Status before a reset completes (`u32::MAX`: never).
    reset_reads: u32,
    pending_reset: Option<u32>,
    /// Reads of QueueReset before a queue reset completes.
    queue_reset_reads: u32,
    pending_queue_reset: Option<(u32, u32)>,
    queue_resets: Vec<u32>,
    reads: Vec<usize>,
    writes: Vec<(usize, usize, u64)>,
    notifies: Vec<u64>,
    acks: Vec<u64>,
}

struct FakeMmio {
    regs: Block,
    state: RefCell<State>,
}

impl FakeMmio {
    fn new() -> Self {
        let fake = FakeMmio {
            regs: Block::new(WINDOW),
            state: RefCell::new(State {
                driver_features: [0; 2],
                negotiated: None,
                status: 0,
                max_sizes: vec![256, 1024, 0],
                queues: vec![FakeQueue::default(); 3],
                reset_reads: 0,
                pending_reset: None,
                queue_reset_reads: 0,
                pending_queue_reset: None,
                queue_resets: Vec::new(),
                reads: Vec::new(),
                writes: Vec::new(),
                notifies: Vec::new(),
                acks: Vec::new(),
            }),
        };
        let r = &fake.regs;
        r.set_u32(reg::MAGIC_VALUE, MAGIC);
        r.set_u32(reg::VERSION, 2);
        r.set_u32(reg::DEVICE_ID, 2);
        r.set_u32(reg::VENDOR_ID, VENDOR);
        r.set_u64(reg::CONFIG + blk_config::CAPACITY, CAPACITY);
        r.set_u16(reg::CONFIG + blk_config::NUM_QUEUES, 2);
        fake.load_queue(0);
        fake
    }

    fn selected(&self) -> u32 {
        self.regs.u32(reg::QUEUE_SEL)
    }

    fn load_queue(&self, q: u32) {
        let s = self.state.borrow();
        let (max, queue) = match s.queues.get(q as usize) {
            Some(queue) => (s.max_sizes[q as usize], *queue),
            None => (0, FakeQueue::default()),
        };
        drop(s);
        self.regs.set_u32(reg::QUEUE_NUM_MAX, max);
        self.regs.set_u32(reg::QUEUE_READY, queue.ready);
        self.regs.set_u32(reg::QUEUE_RESET, 0);
    }

    fn with_queue(&self, change: impl FnOnce(&mut FakeQueue)) {
        let q = self.selected() as usize;
        if let Some(queue) = self.state.borrow_mut().queues.get_mut(q) {
            change(queue);
        }
    }

    fn reset_now(&self) {
        let mut s = self.state.borrow_mut();
        s.status = 0;
        s.driver_features = [0; 2];
        s.negotiated = None;
        s.pending_reset = None;
        for q in s.queues.iter_mut() {
            *q = FakeQueue::default();
        }
        drop(s);
        self.regs.set_u32(reg::STATUS, 0);
        self.regs.set_u32(reg::INTERRUPT_STATUS, 0);
        self.load_queue(self.selected());
    }

    fn write_status(&self, value: u32) {
        let old = self.state.borrow().status;
        if value == 0 {
            let reads = self.state.borrow().reset_reads;
            if reads == 0 {
                self.reset_now();
            } else {
                self.state.borrow_mut().pending_reset = Some(reads);
                self.regs.set_u32(reg::STATUS, old);
            }
            return;
        }
        let mut new = value;
        let features_ok = u32::from(DeviceStatus::FEATURES_OK.bits());
        if new & features_ok != 0 && old & features_ok == 0 {
            let mut s = self.state.borrow_mut();
            let wanted = u64::from(s.driver_features[1]) << 32 | u64::from(s.driver_features[0]);
            if wanted & !offered() != 0 {
                new &= !features_ok;
            } else {
                s.negotiated = Some(wanted);
            }
        }
        self.state.borrow_mut().status = new;
        self.regs.set_u32(reg::STATUS, new);
    }

    fn finish_queue_reset(&self, q: u32) {
        {
            let mut s = self.state.borrow_mut();
            s.queues[q as usize] = FakeQueue::default();
            s.pending_queue_reset = None;
            s.queue_resets.push(q);
        }
        if self.selected() == q {
            self.load_queue(q);
        }
    }
}

impl FakeBus for FakeMmio {
    fn before_read(&self, addr: usize, _width: usize) {
        let Some(offset) = self.regs.offset_of(addr, 0, WINDOW) else {
            return;
        };
        self.state.borrow_mut().reads.push(offset);
        if offset == reg::STATUS {
            let pending = self.state.borrow().pending_reset;
            match pending {
                Some(u32::MAX) | None => {}
                Some(1) => self.reset_now(),
                Some(n) => self.state.borrow_mut().pending_reset = Some(n - 1),
            }
        }
        if offset == reg::QUEUE_RESET {
            let pending = self.state.borrow().pending_queue_reset;
            match pending {
                Some((_, u32::MAX)) | None => {}
                Some((q, 1)) => self.finish_queue_reset(q),
                Some((q, n)) => self.state.borrow_mut().pending_queue_reset = Some((q, n - 1)),
            }
        }
    }

    fn after_write(&self, addr: usize, width: usize, value: u64) {
        let Some(offset) = self.regs.offset_of(addr, 0, WINDOW) else {
            return;
        };
        self.state.borrow_mut().writes.push((offset, width, value));
        let r = &self.regs;
        match offset {
            reg::DEVICE_FEATURES_SEL => {
                let word = match value {
                    0 => offered() as u32,
                    1 => (offered() >> 32) as u32,
                    _ => 0,
                };
                r.set_u32(reg::DEVICE_FEATURES, word);
            }
            reg::DRIVER_FEATURES => {
                let select = r.u32(reg::DRIVER_FEATURES_SEL) as usize;
                if let Some(word) = self.state.borrow_mut().driver_features.get_mut(select) {
                    *word = value as u32;
                }
            }
            reg::QUEUE_SEL => self.load_queue(value as u32),
            reg::QUEUE_NUM => self.with_queue(|q| q.num = value as u32),
            reg::QUEUE_READY => self.with_queue(|q| q.ready = value as u32),
            o @ (0x80 | 0x84 | 0x90 | 0x94 | 0xa0 | 0xa4) => {
                let field = o & !0xf;
                let full = u64::from(r.u32(field + 4)) << 32 | u64::from(r.u32(field));
                self.with_queue(|q| match field {
                    reg::QUEUE_DESC => q.desc = full,
                    reg::QUEUE_DRIVER => q.driver = full,
                    _ => q.device = full,
                });
            }
            reg::QUEUE_NOTIFY => self.state.borrow_mut().notifies.push(value),
            reg::INTERRUPT_ACK => {
                let status = r.u32(reg::INTERRUPT_STATUS);
                r.set_u32(reg::INTERRUPT_STATUS, status & !(value as u32));
                self.state.borrow_mut().acks.push(value);
            }
            reg::STATUS => self.write_status(value as u32),
            reg::QUEUE_RESET if value == 1 => {
                let q = self.selected();
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
}

struct Rig {
    device: Rc<FakeMmio>,
    hal: BusHal,
    _bus: Attached,
}

impl Rig {
    fn new() -> Self {
        let device = Rc::new(FakeMmio::new());
        let hal = BusHal::default();
        hal.place(PADDR, &device.regs);
        let bus = bus::attach(device.clone());
        Rig {
            device,
            hal,
            _bus: bus,
        }
    }

    fn transport(&self) -> MmioTransport {
        MmioTransport::new(&self.hal, PADDR, WINDOW).expect("a version 2 block device")
    }

    fn state(&self) -> core::cell::RefMut<'_, State> {
        self.device.state.borrow_mut()
    }

    fn start(&self, queues: u16) -> Result<BlkDevice<BusHal, MmioTransport>, Error> {
        BlkDevice::new(
            self.hal.clone(),
            self.transport(),
            Config {
                queues,
                ..Config::default()
            },
        )
    }
}

const ADDRS: QueueAddresses = QueueAddresses {
    desc: 0x1_2345_6000,
    driver: 0x2_0000_1040,
    device: 0xffff_ffff_0000_2000,
};

fn negotiate(t: &mut MmioTransport) {
    t.reset();
    t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    let features = t.device_features() & (Features::VERSION_1 | Features::RING_RESET).bits();
    t.set_driver_features(features);
    t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
}

#[test]
fn maps_the_window_through_the_hal_and_reads_the_identity() {
    let rig = Rig::new();
    let t = rig.transport();
    assert_eq!(rig.hal.maps(), [(PADDR, WINDOW)]);
    assert_eq!(t.device_type(), 2);
    assert_eq!(t.vendor_id(), VENDOR);
}

#[test]
fn refuses_bad_magic_legacy_and_unknown_versions() {
    let rig = Rig::new();
    let r = &rig.device.regs;
    // SAFETY: the block is WINDOW bytes of memory that outlives every
    // transport built here.
    let open = |size| unsafe { MmioTransport::from_raw(r.ptr(), size) }.err();

    r.set_u32(reg::MAGIC_VALUE, 0x1234_5678);
    assert_eq!(open(WINDOW), Some(MmioError::BadMagic(0x1234_5678)));
    r.set_u32(reg::MAGIC_VALUE, MAGIC);

    r.set_u32(reg::VERSION, 1);
    assert_eq!(open(WINDOW), Some(MmioError::LegacyVersion));
    r.set_u32(reg::VERSION, 3);
    assert_eq!(open(WINDOW), Some(MmioError::UnsupportedVersion(3)));
    r.set_u32(reg::VERSION, 2);

    // §4.2.3.1.1: an empty slot is left alone after DeviceID.
    r.set_u32(reg::DEVICE_ID, 0);
    rig.state().reads.clear();
    assert_eq!(open(WINDOW), Some(MmioError::NoDevice));
    assert_eq!(
        rig.state().reads,
        [reg::MAGIC_VALUE, reg::VERSION, reg::DEVICE_ID]
    );
    r.set_u32(reg::DEVICE_ID, 2);

    assert_eq!(open(0xfc), Some(MmioError::WindowTooSmall(0xfc)));
    let misaligned = NonNull::new(r.ptr().as_ptr().wrapping_add(2)).unwrap();
    // SAFETY: refused before any access.
    let err = unsafe { MmioTransport::from_raw(misaligned, WINDOW - 2) }.err();
    assert_eq!(err, Some(MmioError::Misaligned));
    assert_eq!(
        MmioTransport::new(&rig.hal, PADDR + 2, WINDOW).err(),
        Some(MmioError::Misaligned)
    );
    assert_eq!(
        MmioTransport::new(&rig.hal, 0x1000_0000, WINDOW).err(),
        Some(MmioError::MapFailed {
            paddr: 0x1000_0000,
            len: WINDOW
        })
    );
    assert!(open(WINDOW).is_none(), "a good window is accepted");
}

#[test]
fn blk_device_negotiates_through_the_register_window() {
    let rig = Rig::new();
    let device = rig.start(2).expect("device comes up");
    let expected =
        Features::VERSION_1 | Features::RING_RESET | Features::BLK_MQ | Features::BLK_FLUSH;
    assert_eq!(device.info().features, expected, "unknown bit 45 declined");
    assert_eq!(device.info().capacity_sectors, CAPACITY);
    assert_eq!(device.info().device_queues, 2);
    let s = rig.state();
    assert_eq!(s.negotiated, Some(expected.bits()));
    assert_eq!(
        s.status,
        u32::from(
            (DeviceStatus::ACKNOWLEDGE
                | DeviceStatus::DRIVER
                | DeviceStatus::FEATURES_OK
                | DeviceStatus::DRIVER_OK)
                .bits()
        )
    );
    let layout = SplitLayout::new(256);
    for q in &s.queues[..2] {
        assert_eq!(q.ready, 1);
        assert_eq!(q.num, 256);
        assert_eq!(q.driver, q.desc + layout.avail as u64);
        assert_eq!(q.device, q.desc + layout.used as u64);
    }
    assert!(
        s.writes.iter().all(|w| w.1 == 4),
        "32-bit accesses only (§4.2.2.2)"
    );
    let desc = s.queues[0].desc;
    let low = s
        .writes
        .iter()
        .position(|w| *w == (reg::QUEUE_DESC, 4, desc & 0xffff_ffff))
        .expect("QueueDescLow written");
    assert_eq!(
        s.writes[low + 1],
        (reg::QUEUE_DESC + 4, 4, desc >> 32),
        "then QueueDescHigh"
    );
    let selects: Vec<u64> = s
        .writes
        .iter()
        .filter(|w| w.0 == reg::DEVICE_FEATURES_SEL)
        .map(|w| w.2)
        .collect();
    assert_eq!(selects, [0, 1]);
}

#[test]
fn queue_registers_take_the_addresses_as_low_high_pairs() {
    let rig = Rig::new();
    let mut t = rig.transport();
    negotiate(&mut t);
    t.setup_queue(1, 512, ADDRS).unwrap();
    let q = rig.state().queues[1];
    assert_eq!(
        (q.desc, q.driver, q.device),
        (ADDRS.desc, ADDRS.driver, ADDRS.device)
    );
    assert_eq!((q.num, q.ready), (512, 1));
    assert_eq!(
        t.setup_queue(1, 512, ADDRS),
        Err(TransportError::QueueInUse(1))
    );
    assert_eq!(t.max_queue_size(2), 0);
    assert_eq!(
        t.setup_queue(2, 64, ADDRS),
        Err(TransportError::NoSuchQueue(2))
    );
    assert_eq!(
        t.setup_queue(0, 512, ADDRS),
        Err(TransportError::BadQueueSize(512))
    );
    assert_eq!(
        t.setup_queue(0, 100, ADDRS),
        Err(TransportError::BadQueueSize(100))
    );
    assert_eq!(
        t.setup_queue(0, 0, ADDRS),
        Err(TransportError::BadQueueSize(0))
    );
}

#[test]
fn config_space_starts_at_0x100_and_ends_with_the_window() {
    let rig = Rig::new();
    let mut t = rig.transport();
    assert_eq!(t.read_config_u32(0), CAPACITY as u32);
    assert_eq!(t.read_config_u16(blk_config::NUM_QUEUES), 2);
    assert_eq!(t.read_config_u32(WINDOW - 0x100 - 4), 0);
    rig.device.regs.set_u32(WINDOW - 4, 0xabcd_ef01);
    assert_eq!(t.read_config_u32(WINDOW - 0x100 - 4), 0xabcd_ef01);
    assert_eq!(
        t.read_config_u32(WINDOW - 0x100 - 2),
        0,
        "straddles the end"
    );
    assert_eq!(t.read_config_u8(usize::MAX), 0, "no overflow");
}

#[test]
fn every_queue_writes_its_index_to_queue_notify() {
    let rig = Rig::new();
    let mut device = rig.start(2).unwrap();
    let mut queues = device.take_queues().into_queues();
    for queue in queues.iter_mut().rev() {
        queue
            .read(0, DmaBuffer::new(&rig.hal, 512).unwrap(), 9)
            .unwrap();
        assert!(queue.commit());
    }
    let s = rig.state();
    assert_eq!(s.notifies, [1, 0]);
    let notify_writes: Vec<_> = s
        .writes
        .iter()
        .filter(|w| w.0 == reg::QUEUE_NOTIFY)
        .collect();
    assert!(
        notify_writes.iter().all(|w| w.1 == 4),
        "one 32-bit write each"
    );
}

#[test]
fn the_interrupt_handle_reads_then_acknowledges_from_any_cpu() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<MmioInterrupt>();

    let rig = Rig::new();
    let t = rig.transport();
    let irq = t.interrupt();
    rig.device.regs.set_u32(reg::INTERRUPT_STATUS, 0b111);
    assert_eq!(
        irq.acknowledge(),
        IsrStatus {
            queue: true,
            config: true
        }
    );
    assert_eq!(
        rig.state().acks,
        [0b11],
        "only defined bits are acknowledged"
    );
    assert_eq!(rig.device.regs.u32(reg::INTERRUPT_STATUS), 0b100);
    rig.device.regs.set_u32(reg::INTERRUPT_STATUS, 0);
    assert!(t.acknowledge_interrupt().is_empty());
    assert_eq!(
        rig.state().acks.len(),
        1,
        "nothing to acknowledge, no write"
    );

    // From another thread (no fake bus there: the registers are plain memory).
    rig.device.regs.set_u32(reg::INTERRUPT_STATUS, 1);
    let seen = std::thread::scope(|s| s.spawn(|| irq.acknowledge()).join().unwrap());
    assert_eq!(
        seen,
        IsrStatus {
            queue: true,
            config: false
        }
    );
    assert_eq!(rig.device.regs.u32(reg::INTERRUPT_ACK), 1);
}

#[test]
fn a_device_that_never_resets_fails_setup_instead_of_hanging() {
    let rig = Rig::new();
    rig.state().reset_reads = u32::MAX;
    let mut t = rig.transport();
    t.set_reset_poll_limit(500);
    t.set_status(DeviceStatus::ACKNOWLEDGE);
    t.reset();
    assert_eq!(t.setup_queue(0, 64, ADDRS), Err(TransportError::DeviceGone));
    let err = BlkDevice::new(rig.hal.clone(), t, Config::default()).err();
    assert_eq!(err, Some(Error::Transport(TransportError::DeviceGone)));

    let rig = Rig::new();
    rig.state().reset_reads = 20;
    let mut t = rig.transport();
    t.set_status(DeviceStatus::ACKNOWLEDGE);
    t.reset();
    assert_eq!(t.status(), DeviceStatus::empty());
    assert_eq!(t.setup_queue(0, 64, ADDRS), Ok(()));
}

#[test]
fn ring_reset_waits_for_queue_reset_to_clear() {
    let rig = Rig::new();
    rig.state().queue_reset_reads = 4;
    let mut device = rig.start(2).unwrap();
    let queue = device.take_queues().into_queues().remove(0);
    let queue = device.recover_queue(queue, |_| {}).expect("queue 0 back");
    assert_eq!(queue.index(), 0);
    let s = rig.state();
    assert_eq!(s.queue_resets, [0]);
    assert_eq!(s.queues[0].ready, 1, "set up again");
    assert_eq!(s.queues[1].ready, 1, "queue 1 untouched");
    drop(s);

    let rig = Rig::new();
    rig.state().queue_reset_reads = u32::MAX;
    let mut device = rig.start(1).unwrap();
    device.transport_mut().set_reset_poll_limit(100);
    let queue = device.take_queues().into_queues().remove(0);
    let refused = device
        .recover_queue(queue, |_| {})
        .expect_err("the queue reset never finishes");
    assert_eq!(refused.error, Error::Transport(TransportError::DeviceGone));
    assert!(refused.queue.is_some(), "the unreset queue comes back");

    let rig = Rig::new();
    let mut t = rig.transport();
    assert_eq!(
        t.reset_queue(0),
        Err(TransportError::Unsupported),
        "not negotiated"
    );
}
