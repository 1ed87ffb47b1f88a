//! The rebuilt configuration space, walked by hand and by the real
//! virtio-pci transport, for a function laid out as QEMU's
//! `virtio-blk-pci,disable-legacy=on` is.

extern crate std;

use std::vec;
use std::vec::Vec;

use core::ptr::NonNull;

use kerla_api::driver::pci::{PciCapability, PciConfig as KerlaHeader, PciDevice};
use virtio_blk_mq::transport::pci::{PciError, PciTransport, Structure};
use virtio_blk_mq::transport::PciConfig;
use virtio_blk_mq::{Hal, PhysAddr};

use super::{ConfigView, MAX_BAR_SIZE};

const BAR4: u32 = 0xfe00_0000;
const BAR1: u32 = 0xfebd_1000;
const LINE: u8 = 11;

/// `struct virtio_pci_cap` as Kerla's blob: header, cfg_type, bar, offset, length.
fn virtio_cap(cfg_type: u8, bar: u8, offset: u32, length: u32) -> PciCapability {
    let mut data = vec![0x09, 0x00, 16, cfg_type, bar, 0, 0, 0];
    data.extend_from_slice(&offset.to_le_bytes());
    data.extend_from_slice(&length.to_le_bytes());
    PciCapability { id: 0x09, data }
}

fn notify_cap(bar: u8, offset: u32, length: u32, multiplier: u32) -> PciCapability {
    let mut cap = virtio_cap(2, bar, offset, length);
    cap.data[2] = 20;
    cap.data.extend_from_slice(&multiplier.to_le_bytes());
    cap
}

/// QEMU's capabilities: MSI-X first, then the five virtio structures.
fn qemu_caps() -> Vec<PciCapability> {
    let mut pci_cfg = virtio_cap(5, 0, 0, 0);
    pci_cfg.data[2] = 20;
    pci_cfg.data.extend_from_slice(&[0; 4]);
    vec![
        // Kerla reads byte 2 (Message Control's low byte) bytes of MSI-X.
        PciCapability {
            id: 0x11,
            data: vec![0x11, 0x84, 0x02],
        },
        virtio_cap(1, 4, 0x0000, 0x1000),
        virtio_cap(3, 4, 0x1000, 0x1000),
        virtio_cap(4, 4, 0x2000, 0x1000),
        notify_cap(4, 0x3000, 0x1000, 4),
        pci_cfg,
    ]
}

fn device(caps: Vec<PciCapability>) -> PciDevice {
    let mut header = [0u8; 64];
    header[0..2].copy_from_slice(&0x1af4u16.to_le_bytes());
    header[2..4].copy_from_slice(&0x1042u16.to_le_bytes());
    header[0x10..0x14].copy_from_slice(&0xc001u32.to_le_bytes());
    header[0x14..0x18].copy_from_slice(&BAR1.to_le_bytes());
    // A 64-bit prefetchable BAR, as QEMU makes it: type bits 0b1100.
    header[0x20..0x24].copy_from_slice(&(BAR4 | 0xc).to_le_bytes());
    header[0x3c] = LINE;
    PciDevice::new(0, 3, KerlaHeader::from_header(header), caps)
}

/// Registers in host memory: BAR 4's 16 KiB.
#[derive(Clone)]
struct BarHal {
    memory: usize,
}

impl BarHal {
    fn new() -> BarHal {
        let memory: &'static mut [u64] = Vec::leak(vec![0u64; 0x4000 / 8]);
        BarHal {
            memory: memory.as_mut_ptr() as usize,
        }
    }
}

// SAFETY: no DMA memory; map_mmio returns pointers into a leaked 16 KiB
// buffer (permanent, 8-aligned) standing in for BAR 4, and nothing else.
unsafe impl Hal for BarHal {
    fn dma_alloc(&self, _pages: usize) -> Option<(PhysAddr, NonNull<u8>)> {
        None
    }

    unsafe fn dma_dealloc(&self, _paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) {}

    fn map_mmio(&self, paddr: PhysAddr, len: usize) -> Option<NonNull<u8>> {
        let offset = paddr.checked_sub(u64::from(BAR4))? as usize;
        if offset + len > 0x4000 {
            return None;
        }
        NonNull::new((self.memory + offset) as *mut u8)
    }
}

/// (id, offset) of each capability, following the view's list.
fn walk(view: &ConfigView) -> Vec<(u8, u8)> {
    let mut list = Vec::new();
    let mut at = view.read_u8(0x34);
    while at != 0 && list.len() < 64 {
        list.push((view.read_u8(u16::from(at)), at));
        at = view.read_u8(u16::from(at) + 1);
    }
    list
}

#[test]
fn the_header_carries_ids_line_and_a_capability_list() {
    let view = ConfigView::new(&device(qemu_caps()));
    assert_eq!(view.read_u16(0x00), 0x1af4);
    assert_eq!(view.read_u16(0x02), 0x1042);
    assert_eq!(view.read_u32(0x00), 0x1042_1af4);
    assert_ne!(view.read_u16(0x06) & (1 << 4), 0);
    assert_eq!(view.read_u8(0x34), 0x40);
    assert_eq!(view.read_u8(0x3c), LINE);
    assert_eq!(view.read_u8(0x3d), 1);
    assert_eq!(view.read_u8(0x0e), 0);
}

#[test]
fn only_the_virtio_capabilities_are_listed_in_order() {
    let view = ConfigView::new(&device(qemu_caps()));
    let list = walk(&view);
    assert_eq!(list.len(), 5, "{list:x?}");
    assert!(list.iter().all(|&(id, _)| id == 0x09));
    let cfg_types: Vec<u8> = list
        .iter()
        .map(|&(_, at)| view.read_u8(u16::from(at) + 3))
        .collect();
    assert_eq!(cfg_types, [1, 3, 4, 2, 5]);
    // Every capability keeps its bytes: the notify multiplier at +16.
    let notify = list[3].1;
    assert_eq!(view.read_u32(u16::from(notify) + 16), 4);
    assert_eq!(view.read_u32(u16::from(notify) + 8), 0x3000);
    assert_eq!(view.dropped_capabilities(), 0);
}

#[test]
fn bars_read_as_32_bit_memory_and_size_to_their_structures() {
    let view = ConfigView::new(&device(qemu_caps()));
    assert_eq!(view.read_u32(0x20), BAR4);
    assert_eq!(view.read_u32(0x14), BAR1);
    assert_eq!(view.read_u32(0x10), 0xc001);
    // BAR 5 cannot be read through Kerla's API: absent.
    assert_eq!(view.read_u32(0x24), 0);

    // The all-ones probe: the four structures end at 16 KiB.
    view.write_u32(0x20, u32::MAX);
    assert_eq!(view.read_u32(0x20), 0xffff_c000);
    view.write_u32(0x20, BAR4);
    assert_eq!(view.read_u32(0x20), BAR4);
    // A BAR no structure names sizes to the minimum; an absent one to 0.
    view.write_u32(0x14, u32::MAX);
    assert_eq!(view.read_u32(0x14), 0xffff_fff0);
    view.write_u32(0x24, u32::MAX);
    assert_eq!(view.read_u32(0x24), 0);
}

#[test]
fn a_lying_extent_is_bounded_by_the_largest_bar() {
    let mut caps = qemu_caps();
    caps[1] = virtio_cap(1, 4, 0x4000_0000, 0x1000);
    let view = ConfigView::new(&device(caps));
    view.write_u32(0x20, u32::MAX);
    assert_eq!(u64::from(!(view.read_u32(0x20) & !0xf)) + 1, MAX_BAR_SIZE);
}

#[test]
fn command_writes_stay_in_the_view() {
    let view = ConfigView::new(&device(qemu_caps()));
    let status = view.read_u16(0x06);
    view.write_u16(0x04, 0x0406);
    assert_eq!(view.read_u16(0x04), 0x0406);
    assert_eq!(view.read_u16(0x06), status);
    view.write_u8(0x05, 0);
    assert_eq!(view.read_u16(0x04), 0x0006);
    view.write_u32(0x04, 0xffff_0002);
    assert_eq!(view.read_u32(0x04), u32::from(status) << 16 | 0x0002);
}

#[test]
fn the_virtio_pci_transport_drives_the_view_on_intx() {
    let hal = BarHal::new();
    let transport = PciTransport::new(&hal, ConfigView::new(&device(qemu_caps())))
        .expect("the rebuilt space is a valid virtio-pci function");
    use virtio_blk_mq::Transport;
    assert_eq!(transport.device_type(), 2);
    assert_eq!(transport.msix_vectors(), None, "MSI-X is left out");
    assert_eq!(transport.interrupt_line(), LINE);
    // It switched memory decoding and bus mastering on, in the view.
    assert_eq!(transport.pci_config().read_u16(0x04) & 0x6, 0x6);
}

#[test]
fn a_capability_cut_short_is_refused_by_the_transport() {
    let mut caps = qemu_caps();
    // Byte 2 claims 16 bytes, but the blob holds 8.
    caps[1].data.truncate(8);
    let view = ConfigView::new(&device(caps));
    assert_eq!(view.read_u8(0x42), 8, "cap_len cut to the blob");
    let error = PciTransport::new(&BarHal::new(), view).unwrap_err();
    assert_eq!(error, PciError::BadCapability { at: 0x40 });
}

#[test]
fn a_structure_in_bar_5_is_refused_by_the_transport() {
    let mut caps = qemu_caps();
    caps[1] = virtio_cap(1, 5, 0, 0x1000);
    let error = PciTransport::new(&BarHal::new(), ConfigView::new(&device(caps))).unwrap_err();
    assert_eq!(
        error,
        PciError::BadBar {
            structure: Structure::Common,
            bar: 5
        }
    );
}

#[test]
fn capabilities_beyond_256_bytes_are_left_out_and_counted() {
    let caps: Vec<_> = (0..20).map(|_| notify_cap(4, 0x3000, 0x1000, 4)).collect();
    let view = ConfigView::new(&device(caps));
    // 20-byte capabilities from 0x40: nine fit.
    assert_eq!(walk(&view).len(), 9);
    assert_eq!(view.dropped_capabilities(), 11);
}

#[test]
fn no_virtio_capability_means_no_list() {
    let view = ConfigView::new(&device(vec![PciCapability {
        id: 0x11,
        data: vec![0x11, 0, 2],
    }]));
    assert_eq!(view.read_u16(0x06) & (1 << 4), 0);
    assert_eq!(
        PciTransport::new(&BarHal::new(), view).unwrap_err(),
        PciError::NoCapabilities
    );
}
