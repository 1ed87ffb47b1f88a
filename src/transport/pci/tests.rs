//! The PCI transport against a fake function (see `fake.rs`): discovery,
//! negotiation through `BlkDevice`, doorbells, MSI-X, INTx, resets, and
//! devices that present garbage.

extern crate std;

use std::vec::Vec;

use super::caps::{self, command, header, Bar};
use super::fake::*;
use super::*;
use crate::spec::SplitLayout;
use crate::transport::testing::BusHal;
use crate::transport::IsrStatus;
use crate::{BlkDevice, Config, DmaBuffer, Error};

type Fake<'a> = PciTransport<&'a FakeFunction>;

fn transport(rig: &Rig) -> Fake<'_> {
    PciTransport::new(&rig.hal, &rig.function).expect("transport over the fake function")
}

fn start<'a>(
    rig: &Rig,
    transport: Fake<'a>,
    queues: u16,
) -> Result<BlkDevice<BusHal, Fake<'a>>, Error> {
    BlkDevice::new(
        rig.hal.clone(),
        transport,
        Config {
            queues,
            ..Config::default()
        },
    )
}

fn msg(i: u32) -> MsixMessage {
    MsixMessage {
        address: 0x1_fee0_0000 | u64::from(i) << 12,
        data: 0x40 + i,
    }
}

const ADDRS: QueueAddresses = QueueAddresses {
    desc: 0x1_2345_6000,
    driver: 0x2_0000_1040,
    device: 0xffff_ffff_0000_2000,
};

/// Brings a bare transport to FEATURES_OK the way BlkDevice does.
fn negotiate(t: &mut Fake<'_>) {
    t.reset();
    t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    let features = t.device_features() & (Features::VERSION_1 | Features::RING_RESET).bits();
    t.set_driver_features(features);
    t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
}

// ---- discovery ----------------------------------------------------------

#[test]
fn capability_walk_maps_each_structure_from_its_bar() {
    let rig = Rig::new();
    let t = transport(&rig);
    let bar4 = rig.device.bar4.addr();
    assert_eq!(t.device_type(), 2);
    assert_eq!(t.common.addr(), bar4 + COMMON_AT);
    assert_eq!(t.isr.as_ptr() as usize, bar4 + ISR_AT);
    assert_eq!(t.device_config.addr(), bar4 + DEVICE_AT);
    assert_eq!(
        t.notify.addr(),
        bar4 + NOTIFY_AT,
        "the notify capability in the I/O BAR, listed first, is skipped"
    );
    assert_eq!(t.notify.len(), NOTIFY_LEN);
    assert_eq!(t.notify_multiplier, NOTIFY_MULTIPLIER);
    assert_eq!(t.msix_vectors(), Some(MSIX_TABLE_SIZE));
    assert_eq!(
        t.msix.as_ref().unwrap().table.addr(),
        rig.device.bar1.addr()
    );
    // The Hal was asked for BAR base + capability offset, for each structure.
    assert_eq!(
        rig.hal.maps(),
        [
            (BAR4_PADDR + COMMON_AT as u64, 0x1000),
            (BAR4_PADDR + NOTIFY_AT as u64, NOTIFY_LEN),
            (BAR4_PADDR + ISR_AT as u64, 0x1000),
            (BAR4_PADDR + DEVICE_AT as u64, 0x1000),
            (BAR1_PADDR, usize::from(MSIX_TABLE_SIZE) * 16),
        ]
    );
    let cmd = rig.function.peek_u16(header::COMMAND);
    assert_eq!(
        cmd & (command::MEMORY_SPACE | command::BUS_MASTER),
        command::MEMORY_SPACE | command::BUS_MASTER
    );
    assert_eq!(
        cmd & command::INTX_DISABLE,
        0,
        "INTx until MSI-X is enabled"
    );
}

#[test]
fn bar_sizing_restores_every_bar_and_probes_with_decoding_off() {
    let rig = Rig::new();
    let _t = transport(&rig);
    let f = &rig.function;
    assert_eq!(f.peek_u32(0x10), BAR0_PORT | 1);
    assert_eq!(f.peek_u32(0x14), BAR1_PADDR as u32);
    assert_eq!(f.peek_u32(0x20), BAR4_PADDR as u32 | 0b1100);
    assert_eq!(f.peek_u32(0x24), (BAR4_PADDR >> 32) as u32);
    let mut command = f.peek_u16(header::COMMAND);
    let mut probes = 0;
    for &(offset, _, value) in f.writes.borrow().iter() {
        if offset == header::COMMAND {
            command = value as u16;
        } else if (0x10..0x28).contains(&offset) && value == u32::MAX {
            probes += 1;
            assert_eq!(
                command & command::MEMORY_SPACE,
                0,
                "BAR probed while decoding"
            );
        }
    }
    // The I/O BAR0 is not probed; BAR1, the empty BAR2 and BAR3, and both
    // halves of BAR4 are.
    assert_eq!(probes, 5);
}

#[test]
fn sixty_four_bit_bars_above_4_gib_are_decoded_and_sized() {
    let rig = Rig::new();
    let bars = caps::read_bars(&rig.function);
    assert_eq!(bars[0], Bar::Io);
    assert_eq!(
        bars[1],
        Bar::Memory {
            addr: BAR1_PADDR,
            size: u64::from(BAR1_SIZE),
            wide: false
        }
    );
    assert_eq!(bars[2], Bar::Absent);
    assert_eq!(
        bars[4],
        Bar::Memory {
            addr: BAR4_PADDR,
            size: BAR4_SIZE,
            wide: true
        }
    );
    assert_eq!(bars[5], Bar::Upper);

    // A BAR larger than 4 GiB: the size mask spans both halves.
    let f = FakeFunction::new(0x1af4, 0x1042);
    f.set_bar(2, FakeBar::Mem64 { size: 8 << 30 }, 0x40_0000_0000);
    let bars = caps::read_bars(&f);
    assert_eq!(
        bars[2],
        Bar::Memory {
            addr: 0x40_0000_0000,
            size: 8 << 30,
            wide: true
        }
    );
    assert_eq!(bars[3], Bar::Upper);

    // A 64-bit BAR in the last slot has no upper half: reserved.
    let f = FakeFunction::new(0x1af4, 0x1042);
    f.poke_u32(header::BAR0 + 20, 0x8000_0004);
    assert_eq!(caps::read_bars(&f)[5], Bar::Reserved);
}

#[test]
fn device_ids_map_to_virtio_types() {
    assert!(is_virtio_blk(0x1af4, 0x1042));
    assert!(is_virtio_blk(0x1af4, 0x1001));
    assert!(!is_virtio_blk(0x1af4, 0x1041));
    assert!(!is_virtio_blk(0x8086, 0x1042));
    assert_eq!(virtio_device_type(0x1af4, 0x1000), Some(1));
    assert_eq!(virtio_device_type(0x1af4, 0x107f), Some(0x3f));
    assert_eq!(virtio_device_type(0x1af4, 0x1080), None);
    assert_eq!(virtio_device_type(0x1af4, 0x1006), None);

    let f = standard_function();
    f.poke_u16(header::DEVICE_ID, 0x1001);
    let rig = Rig::with_function(f);
    assert_eq!(
        transport(&rig).device_type(),
        2,
        "transitional ID in modern mode"
    );
}

/// Builds a function with the standard BARs and the given capabilities.
fn with_caps(caps: &[Vec<u8>]) -> FakeFunction {
    let f = FakeFunction::new(0x1af4, 0x1042);
    f.set_bar(0, FakeBar::Io { size: 0x40 }, u64::from(BAR0_PORT));
    f.set_bar(1, FakeBar::Mem32 { size: BAR1_SIZE }, BAR1_PADDR);
    f.set_bar(4, FakeBar::Mem64 { size: BAR4_SIZE }, BAR4_PADDR);
    for cap in caps {
        f.add_cap(cap);
    }
    f
}

fn standard_caps() -> Vec<Vec<u8>> {
    std::vec![
        virtio_cap(1, 4, COMMON_AT as u32, 0x1000),
        virtio_cap(3, 4, ISR_AT as u32, 0x1000),
        virtio_cap(4, 4, DEVICE_AT as u32, 0x1000),
        virtio_cap(2, 4, NOTIFY_AT as u32, NOTIFY_LEN as u32),
    ]
}

fn refused(f: FakeFunction) -> PciError {
    let rig = Rig::with_function(f);
    PciTransport::new(&rig.hal, &rig.function).expect_err("refused")
}

#[test]
fn garbage_layouts_are_refused_with_their_cause() {
    let common = Structure::Common;
    let replace = |index: usize, cap: Vec<u8>| {
        let mut caps = standard_caps();
        caps[index] = cap;
        with_caps(&caps)
    };

    let f = with_caps(&standard_caps());
    f.poke_u16(header::STATUS, 0);
    assert_eq!(refused(f), PciError::NoCapabilities);

    let f = with_caps(&standard_caps());
    f.poke_u16(header::VENDOR_ID, 0x8086);
    assert_eq!(
        refused(f),
        PciError::NotVirtio {
            vendor: 0x8086,
            device: 0x1042
        }
    );

    let f = with_caps(&standard_caps());
    let last = *f.caps.borrow().last().unwrap();
    f.poke_u8(u16::from(last) + 1, 0x40);
    assert_eq!(refused(f), PciError::CapabilityLoop);

    let f = with_caps(&standard_caps());
    f.poke_u8(header::CAPABILITIES, 0x20);
    assert_eq!(refused(f), PciError::BadCapability { at: 0x20 });

    let f = with_caps(&standard_caps());
    f.poke_u8(0x40 + 2, 0xf0);
    assert_eq!(refused(f), PciError::BadCapability { at: 0x40 });

    let mut short_notify = virtio_cap(2, 4, NOTIFY_AT as u32, 0x1000);
    short_notify[2] = 16;
    assert_eq!(
        refused(replace(3, short_notify)),
        PciError::BadCapability { at: 0x40 + 3 * 16 }
    );

    let mut caps = standard_caps();
    caps.remove(0);
    assert_eq!(
        refused(with_caps(&caps)),
        PciError::MissingCapability(common)
    );

    assert_eq!(
        refused(replace(0, virtio_cap(1, 0, 0, 0x40))),
        PciError::BadBar {
            structure: common,
            bar: 0
        }
    );
    assert_eq!(
        refused(replace(0, virtio_cap(1, 5, 0, 0x40))),
        PciError::BadBar {
            structure: common,
            bar: 5
        },
        "the upper half of a 64-bit BAR"
    );
    assert_eq!(
        refused(replace(0, virtio_cap(1, 7, 0, 0x40))),
        PciError::MissingCapability(common),
        "a reserved BAR number is ignored"
    );
    assert_eq!(
        refused(replace(0, virtio_cap(1, 4, 0x3800, 0x1000))),
        PciError::OutsideBar {
            structure: common,
            bar: 4
        }
    );
    assert_eq!(
        refused(replace(0, virtio_cap(1, 4, 0xffff_fff0, 0x40))),
        PciError::OutsideBar {
            structure: common,
            bar: 4
        },
        "offset + length overflowing 32 bits is still caught"
    );
    assert_eq!(
        refused(replace(0, virtio_cap(1, 4, 0, 0x20))),
        PciError::TooShort(common)
    );
    assert_eq!(
        refused(replace(0, virtio_cap(1, 4, 2, 0x40))),
        PciError::Misaligned(common)
    );
    assert_eq!(
        refused(replace(3, virtio_cap(2, 4, NOTIFY_AT as u32 + 1, 0x100))),
        PciError::Misaligned(Structure::Notify)
    );

    let f = with_caps(&standard_caps());
    f.set_bar(4, FakeBar::Mem64 { size: BAR4_SIZE }, 0);
    assert_eq!(refused(f), PciError::BarNotAssigned { bar: 4 });

    let rig = Rig::new();
    rig.hal.refuse_maps();
    assert_eq!(
        PciTransport::new(&rig.hal, &rig.function).err(),
        Some(PciError::MapFailed {
            paddr: BAR4_PADDR,
            len: 0x1000
        })
    );
}

// ---- negotiation and queues through BlkDevice ----------------------------

#[test]
fn blk_device_negotiates_through_the_feature_windows_and_sets_up_queues() {
    let rig = Rig::new();
    let device = start(&rig, transport(&rig), 2).expect("device comes up");
    let expected = Features::VERSION_1
        | Features::RING_RESET
        | Features::BLK_MQ
        | Features::BLK_FLUSH
        | Features::BLK_BLK_SIZE;
    assert_eq!(
        device.info().features,
        expected,
        "the unknown bit 50 is declined"
    );
    assert_eq!(device.info().capacity_sectors, CAPACITY);
    assert_eq!(device.info().block_size, 4096);
    assert_eq!(device.info().device_queues, 3);

    let s = rig.state();
    assert_eq!(s.negotiated, Some(expected.bits()));
    assert_eq!(
        DeviceStatus::from_bits_retain(s.status),
        DeviceStatus::ACKNOWLEDGE
            | DeviceStatus::DRIVER
            | DeviceStatus::FEATURES_OK
            | DeviceStatus::DRIVER_OK
    );
    assert_eq!(s.resets, 1, "BlkDevice::new resets first");
    let layout = SplitLayout::new(256);
    for q in &s.queues[..2] {
        assert_eq!(q.enable, 1);
        assert_eq!(q.size, 256);
        assert_eq!(q.desc % 4096, 0);
        assert_eq!(q.driver, q.desc + layout.avail as u64);
        assert_eq!(q.device, q.desc + layout.used as u64);
        assert_eq!(q.vector, NO_VECTOR, "INTx: no vector written");
    }
    assert_eq!(s.queues[2].enable, 0, "only two queues were asked for");

    // Both feature words went through the select windows, and every 64-bit
    // field as two 32-bit writes, low half first.
    let writes = &s.common_writes;
    let selects: Vec<u64> = writes
        .iter()
        .filter(|w| w.0 == common::DEVICE_FEATURE_SELECT)
        .map(|w| w.2)
        .collect();
    assert_eq!(selects, [0, 1]);
    assert!(writes.iter().all(|w| w.1 <= 4), "no 64-bit register access");
    let desc = s.queues[0].desc;
    let at = writes
        .iter()
        .position(|w| *w == (common::QUEUE_DESC, 4, desc & 0xffff_ffff))
        .expect("low half of queue_desc");
    assert_eq!(writes[at + 1], (common::QUEUE_DESC + 4, 4, desc >> 32));
    assert!(!writes.iter().any(|w| w.0 == common::QUEUE_MSIX_VECTOR));
}

#[test]
fn queue_halves_reach_the_device_exactly() {
    let rig = Rig::new();
    let mut t = transport(&rig);
    negotiate(&mut t);
    t.setup_queue(1, 128, ADDRS).unwrap();
    let q = rig.state().queues[1];
    assert_eq!(
        (q.desc, q.driver, q.device),
        (ADDRS.desc, ADDRS.driver, ADDRS.device)
    );
    assert_eq!((q.size, q.enable), (128, 1));
}

#[test]
fn each_queue_rings_its_own_doorbell_at_notify_off_times_multiplier() {
    let rig = Rig::new();
    let mut device = start(&rig, transport(&rig), 2).unwrap();
    let mut queues = device.take_queues().into_queues();
    for queue in queues.iter_mut().rev() {
        let buffer = DmaBuffer::new(&rig.hal, 4096).unwrap();
        queue.read(0, buffer, 1).unwrap();
        assert!(
            queue.commit(),
            "a device without EVENT_IDX is always kicked"
        );
    }
    let expected: Vec<(usize, usize, u64)> = [1u16, 0]
        .iter()
        .map(|&q| {
            let offset = usize::from(notify_off(q)) * NOTIFY_MULTIPLIER as usize;
            (offset, 2, u64::from(q))
        })
        .collect();
    assert_eq!(rig.state().notifies, expected);
}

#[test]
fn queue_size_zero_and_bad_sizes_are_refused() {
    let rig = Rig::new();
    let mut t = transport(&rig);
    negotiate(&mut t);
    assert_eq!(t.num_queues(), 4);
    assert_eq!(t.max_queue_size(0), 1024);
    assert_eq!(t.max_queue_size(3), 0, "queue_size 0: no such queue");
    let selects_before = rig.state().common_writes.len();
    assert_eq!(t.max_queue_size(9), 0, "beyond num_queues");
    assert_eq!(
        rig.state().common_writes.len(),
        selects_before,
        "queue_select is not written for a queue beyond num_queues"
    );
    assert_eq!(
        t.setup_queue(3, 256, ADDRS),
        Err(TransportError::NoSuchQueue(3))
    );
    assert_eq!(
        t.setup_queue(9, 256, ADDRS),
        Err(TransportError::NoSuchQueue(9))
    );
    assert_eq!(
        t.setup_queue(0, 0, ADDRS),
        Err(TransportError::BadQueueSize(0))
    );
    assert_eq!(
        t.setup_queue(0, 2048, ADDRS),
        Err(TransportError::BadQueueSize(2048))
    );
    assert_eq!(
        t.setup_queue(0, 96, ADDRS),
        Err(TransportError::BadQueueSize(96))
    );
    assert_eq!(t.setup_queue(0, 256, ADDRS), Ok(()));
    assert_eq!(
        t.setup_queue(0, 256, ADDRS),
        Err(TransportError::QueueInUse(0))
    );
}

#[test]
fn a_doorbell_outside_the_notify_region_is_refused() {
    let rig = Rig::new();
    // 0x3ff * 4 + 2 fits the 0x1000-byte region; 0x400 * 4 does not.
    rig.device
        .configure(|s| s.notify_offs = std::vec![0x3ff, 0x400, 2, 3]);
    let mut t = transport(&rig);
    negotiate(&mut t);
    assert_eq!(t.setup_queue(0, 64, ADDRS), Ok(()));
    assert_eq!(t.notifier(0).address(), t.notify.addr() + 0xffc);
    assert_eq!(
        t.setup_queue(1, 64, ADDRS),
        Err(TransportError::Unsupported)
    );
    assert_eq!(
        t.last_error(),
        Some(PciError::NotifyOutsideRegion { queue: 1 })
    );
    assert_eq!(rig.state().queues[1].enable, 0, "never enabled");

    let rig = Rig::new();
    rig.device
        .configure(|s| s.notify_offs = std::vec![0, 0xffff, 2, 3]);
    let err = start(&rig, transport(&rig), 2).err();
    assert_eq!(err, Some(Error::Transport(TransportError::Unsupported)));
}

// ---- interrupts ---------------------------------------------------------

#[test]
fn msix_programs_the_table_and_maps_a_vector_per_queue_before_enabling_it() {
    let rig = Rig::new();
    let mut t = transport(&rig);
    t.enable_msix(msg(0), &[msg(1), msg(2)]).unwrap();
    assert!(t.msix_enabled());

    let table = &rig.device.bar1;
    for v in 0..3u32 {
        let entry = v as usize * 16;
        let m = msg(v);
        assert_eq!(table.u32(entry), m.address as u32);
        assert_eq!(table.u32(entry + 4), (m.address >> 32) as u32);
        assert_eq!(table.u32(entry + 8), m.data);
        assert_eq!(table.u32(entry + 12), 0, "unmasked");
    }
    for v in 3..usize::from(MSIX_TABLE_SIZE) {
        assert_eq!(table.u32(v * 16 + 12), 1, "unused entry {v} stays masked");
    }
    let msix_at = u16::from(rig.function.caps.borrow()[0]);
    let control = rig.function.peek_u16(msix_at + 2);
    assert_eq!(control & 0xc000, 0x8000, "enabled, function not masked");
    assert_eq!(control & 0x7ff, MSIX_TABLE_SIZE - 1, "table size untouched");
    assert_ne!(
        rig.function.peek_u16(header::COMMAND) & command::INTX_DISABLE,
        0
    );
    assert_eq!(rig.state().config_vector, 0, "mapped at once");

    let _device = start(&rig, t, 3).unwrap();
    let s = rig.state();
    assert_eq!(s.config_vector, 0, "mapped again after BlkDevice's reset");
    assert_eq!(s.queues[0].vector, 1);
    assert_eq!(s.queues[1].vector, 2);
    assert_eq!(s.queues[2].vector, NO_VECTOR, "beyond the plan: polled");
    // Each queue's vector was written after its queue_select and before its
    // queue_enable; the config vector after the last reset.
    let mut vector_since_select = false;
    for &(offset, _, value) in &s.common_writes {
        match offset {
            common::QUEUE_SELECT => vector_since_select = false,
            common::QUEUE_MSIX_VECTOR => vector_since_select = true,
            common::QUEUE_ENABLE => assert!(vector_since_select && value == 1),
            _ => {}
        }
    }
    let last_reset = s
        .common_writes
        .iter()
        .rposition(|w| *w == (common::DEVICE_STATUS, 1, 0))
        .unwrap();
    assert!(s.common_writes[last_reset..].contains(&(common::MSIX_CONFIG, 2, 0)));
}

#[test]
fn a_refused_vector_is_an_error_and_leaves_intx() {
    // The device maps no vector at all.
    let rig = Rig::new();
    rig.device.configure(|s| s.vectors_accepted = 0);
    let mut t = transport(&rig);
    assert_eq!(
        t.enable_msix(msg(0), &[msg(1)]),
        Err(PciError::VectorRefused {
            vector: 0,
            queue: None
        })
    );
    assert!(!t.msix_enabled());
    let msix_at = u16::from(rig.function.caps.borrow()[0]);
    assert_eq!(
        rig.function.peek_u16(msix_at + 2) & 0x8000,
        0,
        "MSI-X off again"
    );
    assert_eq!(
        rig.function.peek_u16(header::COMMAND) & command::INTX_DISABLE,
        0
    );

    // The device maps the config vector but not the queue vectors.
    let rig = Rig::new();
    rig.device.configure(|s| s.vectors_accepted = 1);
    let mut t = transport(&rig);
    t.enable_msix(msg(0), &[msg(1), msg(2)]).unwrap();
    negotiate(&mut t);
    assert_eq!(
        t.setup_queue(0, 64, ADDRS),
        Err(TransportError::Unsupported)
    );
    assert_eq!(
        t.last_error(),
        Some(PciError::VectorRefused {
            vector: 1,
            queue: Some(0)
        })
    );
    assert_eq!(rig.state().queues[0].enable, 0);
    let err = start(&rig, t, 2).err();
    assert_eq!(err, Some(Error::Transport(TransportError::Unsupported)));
    assert!(!rig
        .state()
        .common_writes
        .contains(&(common::QUEUE_ENABLE, 2, 1)));
}

#[test]
fn msix_requests_beyond_the_table_or_malformed_are_refused() {
    let rig = Rig::new();
    let mut t = transport(&rig);
    let queues: Vec<MsixMessage> = (1..=8).map(msg).collect();
    assert_eq!(
        t.enable_msix(msg(0), &queues),
        Err(PciError::TooManyVectors {
            requested: 9,
            available: 8
        })
    );
    let bad = MsixMessage {
        address: 0xfee0_0002,
        data: 0,
    };
    assert_eq!(
        t.enable_msix(msg(0), &[msg(1), bad]),
        Err(PciError::BadMsixMessage { vector: 2 })
    );
    assert!(!t.msix_enabled());
    assert_eq!(rig.device.bar1.u32(0), 0, "nothing programmed");

    // No MSI-X capability at all.
    let rig = Rig::with_function(with_caps(&standard_caps()));
    let mut t = transport(&rig);
    assert_eq!(t.msix_vectors(), None);
    assert_eq!(t.enable_msix(msg(0), &[]), Err(PciError::NoMsix));

    // An MSI-X table reaching past its BAR: INTx still works, MSI-X reports why.
    let mut caps = standard_caps();
    caps.push(msix_cap(MSIX_TABLE_SIZE, 1, BAR1_SIZE - 64));
    let rig = Rig::with_function(with_caps(&caps));
    let mut t = transport(&rig);
    assert_eq!(t.msix_vectors(), None);
    assert_eq!(
        t.enable_msix(msg(0), &[msg(1)]),
        Err(PciError::OutsideBar {
            structure: Structure::MsixTable,
            bar: 1
        })
    );
}

#[test]
fn isr_reader_acknowledges_from_anywhere() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<IsrReader>();

    let rig = Rig::new();
    let t = transport(&rig);
    assert_eq!(t.interrupt_line(), 11);
    assert_eq!(t.interrupt_pin(), 1);
    let reader = t.isr_reader();
    let _device = start(&rig, t, 1).unwrap(); // the transport moved away

    rig.device.bar4.set_u8(ISR_AT, 3);
    assert_eq!(
        reader.read(),
        IsrStatus {
            queue: true,
            config: true
        }
    );
    assert_eq!(rig.device.bar4.u8(ISR_AT), 0, "the read cleared it");
    assert!(reader.read().is_empty());

    // From another CPU: the handle is plain data (the fake's read-to-clear
    // hook is per thread, so here the byte just reads back).
    rig.device.bar4.set_u8(ISR_AT, 2);
    let seen = std::thread::scope(|s| s.spawn(|| reader.read()).join().unwrap());
    assert_eq!(
        seen,
        IsrStatus {
            queue: false,
            config: true
        }
    );
}

// ---- resets -------------------------------------------------------------

#[test]
fn a_device_that_never_resets_is_given_up_on_not_waited_for() {
    let rig = Rig::new();
    rig.device.configure(|s| s.reset_reads = u32::MAX);
    let mut t = transport(&rig);
    t.set_reset_poll_limit(1000);
    t.set_status(DeviceStatus::ACKNOWLEDGE);
    t.reset();
    assert_eq!(t.last_error(), Some(PciError::ResetTimeout));
    assert_eq!(t.setup_queue(0, 64, ADDRS), Err(TransportError::DeviceGone));
    let err = start(&rig, t, 1).err();
    assert_eq!(err, Some(Error::Transport(TransportError::DeviceGone)));

    // A device that takes a while, but answers, is waited for.
    let rig = Rig::new();
    rig.device.configure(|s| s.reset_reads = 50);
    let mut t = transport(&rig);
    t.set_status(DeviceStatus::ACKNOWLEDGE);
    t.reset();
    assert_eq!(t.last_error(), None);
    assert_eq!(t.status(), DeviceStatus::empty());
    assert_eq!(rig.state().resets, 1);
}

#[test]
fn ring_reset_resets_one_queue_and_sets_it_up_again() {
    let rig = Rig::new();
    rig.device.configure(|s| s.queue_reset_reads = 3);
    let mut device = start(&rig, transport(&rig), 2).unwrap();
    let mut queues = device.take_queues().into_queues();
    let second = queues.pop().unwrap();
    let second = device.recover_queue(second, |_| {}).expect("queue 1 back");
    assert_eq!(second.index(), 1);
    let s = rig.state();
    assert_eq!(s.queue_resets, [1]);
    assert_eq!(s.queues[1].enable, 1, "set up again");
    assert_eq!(s.queues[0].enable, 1, "queue 0 untouched");
    assert!(s.common_writes.contains(&(common::QUEUE_RESET, 2, 1)));
}

#[test]
fn a_queue_reset_that_never_finishes_is_reported() {
    let rig = Rig::new();
    rig.device.configure(|s| s.queue_reset_reads = u32::MAX);
    let mut device = start(&rig, transport(&rig), 2).unwrap();
    device.transport_mut().set_reset_poll_limit(100);
    let queue = device.take_queues().into_queues().remove(0);
    let refused = device
        .recover_queue(queue, |_| {})
        .expect_err("the queue reset never finishes");
    assert_eq!(refused.error, Error::Transport(TransportError::DeviceGone));
    assert!(refused.queue.is_some(), "the unreset queue comes back");
    assert_eq!(
        device.transport_mut().last_error(),
        Some(PciError::QueueResetTimeout { queue: 0 })
    );

    // Without RING_RESET negotiated the transport refuses.
    let rig = Rig::new();
    let mut t = transport(&rig);
    assert_eq!(t.reset_queue(0), Err(TransportError::Unsupported));
}
