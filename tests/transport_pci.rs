//! The virtio-pci transport through its public API, as a kernel uses it: a
//! `PciConfig` for one function, a Hal that maps BARs, discovery, doorbells
//! and the ISR handle. Registers are plain memory holding what a device
//! would show; negotiation against a device that reacts, MSI-X and resets
//! are in the unit tests (`src/transport/pci/tests.rs`).

use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use virtio_blk_mq::transport::pci::{self, PciError, Structure};
use virtio_blk_mq::transport::{IsrReader, PciConfig, PciNotifier, PciTransport};
use virtio_blk_mq::{Hal, PhysAddr, QueueAddresses, QueueNotifier, Transport};

const BAR_PADDR: u64 = 0x1_0000_0000;
const BAR_SIZE: usize = 0x4000;

/// Configuration space of a modern virtio-blk function with its structures
/// in one 64-bit BAR 2; BAR sizing answers like hardware.
struct Function(RefCell<[u8; 256]>);

impl Function {
    fn new() -> Self {
        let f = Function(RefCell::new([0; 256]));
        f.put(0x00, &0x1af4u16.to_le_bytes());
        f.put(0x02, &0x1042u16.to_le_bytes());
        f.put(0x06, &0x0010u16.to_le_bytes());
        f.put(0x18, &((BAR_PADDR as u32) | 0b0100).to_le_bytes());
        f.put(0x1c, &((BAR_PADDR >> 32) as u32).to_le_bytes());
        f.put(0x34, &[0x40]);
        // (cfg_type, offset, length): common, notify (multiplier 2), ISR, device.
        let caps = [
            (1u8, 0x0u32, 0x40u32),
            (2, 0x1000, 0x100),
            (3, 0x2000, 1),
            (4, 0x3000, 0x40),
        ];
        for (i, (cfg_type, offset, length)) in caps.into_iter().enumerate() {
            let at = 0x40 + i * 0x14;
            let next = if i + 1 < caps.len() { at + 0x14 } else { 0 };
            f.put(at, &[0x09, next as u8, 0x14, cfg_type, 2, 0, 0, 0]);
            f.put(at + 8, &offset.to_le_bytes());
            f.put(at + 12, &length.to_le_bytes());
            f.put(at + 16, &2u32.to_le_bytes());
        }
        f
    }

    fn put(&self, at: usize, bytes: &[u8]) {
        self.0.borrow_mut()[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn get<const N: usize>(&self, at: u16) -> [u8; N] {
        let at = usize::from(at);
        self.0.borrow()[at..at + N].try_into().unwrap()
    }
}

impl PciConfig for Function {
    fn read_u8(&self, offset: u16) -> u8 {
        self.get::<1>(offset)[0]
    }
    fn read_u16(&self, offset: u16) -> u16 {
        u16::from_le_bytes(self.get(offset))
    }
    fn read_u32(&self, offset: u16) -> u32 {
        u32::from_le_bytes(self.get(offset))
    }
    fn write_u8(&self, offset: u16, value: u8) {
        self.put(offset.into(), &[value]);
    }
    fn write_u16(&self, offset: u16, value: u16) {
        self.put(offset.into(), &value.to_le_bytes());
    }
    fn write_u32(&self, offset: u16, value: u32) {
        let value = match offset {
            // BAR 2 (low): size mask, keeping the type bits.
            0x18 => (value & !(BAR_SIZE as u32 - 1)) | 0b0100,
            0x1c => value,
            0x10..=0x27 => 0,
            _ => value,
        };
        self.put(offset.into(), &value.to_le_bytes());
    }
}

/// Maps BAR 2 onto heap memory; DMA is not needed here.
#[derive(Clone)]
struct MapHal(Arc<Mutex<usize>>);

// SAFETY: map_mmio returns pointers into a leaked (never freed) allocation;
// dma_alloc never hands out memory.
unsafe impl Hal for MapHal {
    fn dma_alloc(&self, _pages: usize) -> Option<(PhysAddr, NonNull<u8>)> {
        None
    }
    unsafe fn dma_dealloc(&self, _: PhysAddr, _: NonNull<u8>, _: usize) {}
    fn map_mmio(&self, paddr: PhysAddr, len: usize) -> Option<NonNull<u8>> {
        let offset = paddr.checked_sub(BAR_PADDR)? as usize;
        if offset + len > BAR_SIZE {
            return None;
        }
        NonNull::new((*self.0.lock().unwrap() + offset) as *mut u8)
    }
}

fn bar_memory() -> (MapHal, *mut u8) {
    let memory: &'static mut [u64] = Box::leak(vec![0u64; BAR_SIZE / 8].into_boxed_slice());
    let base = memory.as_mut_ptr().cast::<u8>();
    // num_queues = 4, queue_size = 128, queue_notify_off = 7.
    // SAFETY: offsets inside the leaked BAR memory.
    unsafe {
        base.add(0x12).cast::<u16>().write(4);
        base.add(0x18).cast::<u16>().write(128);
        base.add(0x1e).cast::<u16>().write(7);
        base.add(0x3000).cast::<u64>().write(0x10_0000); // capacity
    }
    (MapHal(Arc::new(Mutex::new(base as usize))), base)
}

#[test]
fn a_kernel_finds_the_structures_and_rings_the_right_doorbell() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<PciNotifier>();
    send::<PciTransport<Function>>();
    send_sync::<IsrReader>();

    let function = Function::new();
    assert!(pci::is_virtio_blk(
        function.read_u16(0),
        function.read_u16(2)
    ));
    let (hal, bar) = bar_memory();
    let mut transport = PciTransport::new(&hal, &function).expect("modern layout");
    assert_eq!(transport.device_type(), 2);
    assert_eq!(transport.num_queues(), 4);
    assert_eq!(transport.msix_vectors(), None, "no MSI-X capability: INTx");
    assert_eq!(transport.read_config_u32(0), 0x10_0000);
    assert_eq!(
        function.read_u16(0x04) & 0b110,
        0b110,
        "memory + bus master on"
    );
    assert_eq!(
        function.read_u32(0x18),
        BAR_PADDR as u32 | 0b0100,
        "BAR restored after sizing"
    );

    let addrs = QueueAddresses {
        desc: 0x1000,
        driver: 0x2000,
        device: 0x3000,
    };
    transport.setup_queue(2, 64, addrs).unwrap();
    let doorbell = transport.notifier(2);
    drop(transport);
    doorbell.notify();
    // cap.offset 0x1000 + queue_notify_off 7 * multiplier 2.
    // SAFETY: inside the leaked BAR memory.
    let rung = unsafe { std::ptr::read_volatile(bar.add(0x1000 + 14).cast::<u16>()) };
    assert_eq!(rung, 2);
}

#[test]
fn isr_and_garbage_through_the_public_api() {
    let function = Function::new();
    let (hal, bar) = bar_memory();
    let transport = PciTransport::new(&hal, &function).unwrap();
    let isr = transport.isr_reader();
    // SAFETY: inside the leaked BAR memory.
    unsafe { bar.add(0x2000).write_volatile(1) };
    assert!(isr.read().queue);

    // A notify structure reaching past the BAR is refused by name.
    let function = Function::new();
    function.put(0x54 + 8, &0x3f80u32.to_le_bytes());
    let err = PciTransport::new(&hal, &function).unwrap_err();
    assert_eq!(
        err,
        PciError::OutsideBar {
            structure: Structure::Notify,
            bar: 2
        }
    );
    assert!(err.to_string().contains("beyond the end of BAR 2"));
}
