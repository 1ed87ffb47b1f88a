//! The virtio-mmio transport through its public API, as a kernel uses it:
//! devices from the command line, a register window (here plain memory that
//! holds what a device would show), doorbells and interrupt acknowledgement.
//! Negotiation against a device that reacts is in the unit tests
//! (`src/transport/mmio/tests.rs`).

use std::ptr::NonNull;

use virtio_blk_mq::transport::mmio::{
    cmdline_devices, parse_device, CmdlineError, MmioDeviceSpec, MmioError, MmioTransport, MAGIC,
};
use virtio_blk_mq::transport::{IsrStatus, MmioInterrupt, MmioNotifier};
use virtio_blk_mq::{QueueNotifier, Transport};

/// A 512-byte register window in plain memory.
struct Window(Box<[u32; 128]>);

impl Window {
    fn new(version: u32, device_id: u32) -> Self {
        let mut regs = Box::new([0u32; 128]);
        regs[0] = MAGIC;
        regs[1] = version;
        regs[2] = device_id;
        regs[3] = 0x554d_4551;
        regs[0x100 / 4] = 0x2000; // capacity, low half
        Window(regs)
    }

    fn open(&mut self) -> Result<MmioTransport, MmioError> {
        let base = NonNull::new(self.0.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: 512 bytes of memory owned by the window, which outlives
        // every transport, notifier and interrupt handle in these tests.
        unsafe { MmioTransport::from_raw(base, 512) }
    }

    fn reg(&self, offset: usize) -> u32 {
        // SAFETY: in bounds; a volatile read because the transport wrote it
        // through a raw pointer.
        unsafe { std::ptr::read_volatile(&self.0[offset / 4]) }
    }
}

#[test]
fn a_microvm_command_line_yields_every_device() {
    let line = "earlyprintk=ttyS0 virtio_mmio.device=512@0xfeb00e00:12 \
                virtio_mmio.device=512@0xfeb00c00:11 virtio_mmio.device=1K@0x1000 reboot=t";
    let devices: Vec<_> = cmdline_devices(line).collect();
    assert_eq!(
        devices,
        [
            Ok(MmioDeviceSpec {
                base: 0xfeb0_0e00,
                size: 512,
                irq: 12,
                id: None
            }),
            Ok(MmioDeviceSpec {
                base: 0xfeb0_0c00,
                size: 512,
                irq: 11,
                id: None
            }),
            Err(CmdlineError::MissingIrq),
        ]
    );
    assert_eq!(parse_device("2M@0x10000000:5").unwrap().size, 2 << 20);
    // Arbitrary bytes never panic.
    for garbage in [
        "@@@",
        "0x",
        "1@2:3:4:5",
        "\u{0}",
        "512@0xfeb00e00:12:",
        "K@1:2",
    ] {
        assert!(parse_device(garbage).is_err(), "{garbage:?}");
    }
}

#[test]
fn a_version_2_block_device_is_accepted_and_others_refused() {
    let mut w = Window::new(2, 2);
    let mut t = w.open().unwrap();
    assert_eq!(t.device_type(), 2);
    assert_eq!(t.vendor_id(), 0x554d_4551);
    assert_eq!(t.read_config_u32(0), 0x2000);

    assert_eq!(
        Window::new(1, 2).open().err(),
        Some(MmioError::LegacyVersion)
    );
    assert_eq!(Window::new(2, 0).open().err(), Some(MmioError::NoDevice));
    let mut bad = Window::new(2, 2);
    bad.0[0] = 0x7472_6975;
    assert_eq!(bad.open().err(), Some(MmioError::BadMagic(0x7472_6975)));
    assert!(MmioError::LegacyVersion
        .to_string()
        .contains("force-legacy"));
}

#[test]
fn notifiers_and_the_interrupt_handle_work_without_the_transport() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<MmioNotifier>();
    send::<MmioTransport>();
    send_sync::<MmioInterrupt>();

    let mut w = Window::new(2, 2);
    let (third, irq) = {
        let mut t = w.open().unwrap();
        (t.notifier(3), t.interrupt())
    }; // the transport is gone; its handles still work
    third.notify();
    assert_eq!(w.reg(0x50), 3, "QueueNotify holds the queue index");

    w.0[0x60 / 4] = 2;
    assert_eq!(
        irq.acknowledge(),
        IsrStatus {
            queue: false,
            config: true
        }
    );
    assert_eq!(w.reg(0x64), 2, "InterruptACK got the bits read");
}
