//! Adapters that let rcore's `virtio-drivers` 0.13 drive a
//! [`SimDevice`](virtio_blk_sim::SimDevice): its `Transport` trait over
//! [`SimTransport`] and its `Hal` trait over [`SimHal`].
//!
//! The sim accepts only addresses inside live `SimHal` allocations (an IOMMU
//! stand-in). Buffers the caller placed in a `SimHal` arena it registered
//! with [`DirectWindow`] are shared in place; anything else virtio-drivers
//! shares (its per-request indirect tables, which it allocates in a `Box`)
//! is copied into a bounce page, as a Hal for a device behind an IOMMU must.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use virtio_blk_mq::{DeviceStatus, Hal, QueueAddresses, QueueNotifier, Transport, PAGE_SIZE};
use virtio_blk_sim::{SimHal, SimNotifier, SimTransport};
use virtio_drivers::transport::{
    DeviceStatus as PeerStatus, DeviceType, InterruptStatus, Transport as PeerTransportTrait,
};
use virtio_drivers::{BufferDirection, Hal as PeerHalTrait, PhysAddr as PeerPhysAddr};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// virtio-drivers' `Transport` over the sim's transport.
pub struct PeerTransport {
    /// virtio-drivers reads status, configuration and generation through
    /// `&self`, where our trait takes `&mut self`.
    inner: RefCell<SimTransport>,
    /// The doorbell of each enabled queue, taken at setup so a kick is one call.
    notifiers: Vec<Option<SimNotifier>>,
}

impl PeerTransport {
    /// Wraps a transport of a device no driver has set up yet.
    pub fn new(inner: SimTransport) -> PeerTransport {
        PeerTransport {
            inner: RefCell::new(inner),
            notifiers: Vec::new(),
        }
    }
}

impl PeerTransportTrait for PeerTransport {
    fn device_type(&self) -> DeviceType {
        let id = self.inner.borrow().device_type();
        DeviceType::try_from(id).expect("the sim reports a known device type")
    }

    fn read_device_features(&mut self) -> u64 {
        self.inner.get_mut().device_features()
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        self.inner.get_mut().set_driver_features(driver_features)
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        u32::from(self.inner.get_mut().max_queue_size(queue))
    }

    fn notify(&mut self, queue: u16) {
        match self.notifiers.get(usize::from(queue)) {
            Some(Some(notifier)) => notifier.notify(),
            // The sim would only record it as a violation; a bench should stop.
            _ => panic!("virtio-drivers kicked queue {queue}, which it never set up"),
        }
    }

    fn get_status(&self) -> PeerStatus {
        PeerStatus::from_bits_retain(u32::from(self.inner.borrow_mut().status().bits()))
    }

    fn set_status(&mut self, status: PeerStatus) {
        // The register is one byte (VIRTIO 1.2 §2.1); every bit either side knows fits.
        let bits = u8::try_from(status.bits()).expect("device status fits in one byte");
        self.inner
            .get_mut()
            .set_status(DeviceStatus::from_bits_retain(bits))
    }

    fn set_guest_page_size(&mut self, _guest_page_size: u32) {
        // Only the legacy MMIO transport has this register.
    }

    fn requires_legacy_layout(&self) -> bool {
        false
    }

    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PeerPhysAddr,
        driver_area: PeerPhysAddr,
        device_area: PeerPhysAddr,
    ) {
        let size = u16::try_from(size).expect("virtio queue sizes fit in 16 bits");
        let addrs = QueueAddresses {
            desc: descriptors,
            driver: driver_area,
            device: device_area,
        };
        let transport = self.inner.get_mut();
        // virtio-drivers' trait cannot return the error, and a queue the sim
        // refused would make every measurement meaningless.
        if let Err(error) = transport.setup_queue(queue, size, addrs) {
            panic!("the sim refused virtio-drivers' queue {queue}: {error}");
        }
        let notifier = transport.notifier(queue);
        let index = usize::from(queue);
        if self.notifiers.len() <= index {
            self.notifiers.resize(index + 1, None);
        }
        self.notifiers[index] = Some(notifier);
    }

    /// Our transport has no per-queue disable (that is RING_RESET, which
    /// virtio-drivers does not negotiate), so this resets the device. The sim
    /// has one queue and `VirtIOBlk` only calls this when dropped, just
    /// before it frees the ring, which the reset keeps the device off.
    fn queue_unset(&mut self, queue: u16) {
        if let Some(slot) = self.notifiers.get_mut(usize::from(queue)) {
            if slot.take().is_some() {
                self.inner.get_mut().reset();
            }
        }
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.notifiers
            .get(usize::from(queue))
            .is_some_and(Option::is_some)
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        // The bench polls; nothing is ever routed to an interrupt.
        InterruptStatus::empty()
    }

    fn read_config_generation(&self) -> u32 {
        self.inner.borrow_mut().config_generation()
    }

    /// Reads 1-, 2- and 4-byte fields with one access of their width (VIRTIO
    /// 1.2 §4.1.3.1), 8-byte ones as two 32-bit halves (the caller's
    /// generation check makes the pair consistent) and anything else bytewise.
    fn read_config_space<T: FromBytes + IntoBytes>(
        &self,
        offset: usize,
    ) -> virtio_drivers::Result<T> {
        let mut value = T::new_zeroed();
        let bytes = value.as_mut_bytes();
        let mut transport = self.inner.borrow_mut();
        // Our reads return the field's value; T is a plain integer of that width,
        // so its bytes are the value's native-endian bytes.
        match bytes.len() {
            1 => bytes[0] = transport.read_config_u8(offset),
            2 => bytes.copy_from_slice(&transport.read_config_u16(offset).to_ne_bytes()),
            4 => bytes.copy_from_slice(&transport.read_config_u32(offset).to_ne_bytes()),
            8 => {
                let low = u64::from(transport.read_config_u32(offset));
                let high = u64::from(transport.read_config_u32(offset + 4));
                bytes.copy_from_slice(&(high << 32 | low).to_ne_bytes());
            }
            _ => {
                for (i, byte) in bytes.iter_mut().enumerate() {
                    *byte = transport.read_config_u8(offset + i);
                }
            }
        }
        Ok(value)
    }

    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        _offset: usize,
        _value: T,
    ) -> virtio_drivers::Result<()> {
        // Our transport has no configuration writes, and virtio-drivers' block
        // driver makes none (it does not negotiate BLK_CONFIG_WCE).
        Err(virtio_drivers::Error::Unsupported)
    }
}

/// Which of virtio-drivers' buffers the device reaches where. Per thread
/// because virtio-drivers' `Hal` has no `self`; the whole virtio-drivers rig
/// lives and is driven on the bench thread.
struct DmaWindow {
    /// `[start, end)` of the arena a [`DirectWindow`] registered: `SimHal`
    /// memory, so shared in place. Empty while there is none.
    direct: Cell<(usize, usize)>,
    /// Bounce pages not in use.
    spare: RefCell<Vec<NonNull<u8>>>,
    /// Bounce pages allocated so far.
    pages: Cell<usize>,
}

thread_local! {
    static WINDOW: DmaWindow = const {
        DmaWindow {
            direct: Cell::new((0, 0)),
            spare: RefCell::new(Vec::new()),
            pages: Cell::new(0),
        }
    };
}

impl DmaWindow {
    fn is_direct(&self, start: usize, len: usize) -> bool {
        let (low, high) = self.direct.get();
        start >= low && start.checked_add(len).is_some_and(|end| end <= high)
    }

    /// The device address of `buffer`: itself when it is in the arena
    /// (`SimHal`: device address == virtual address), else a bounce page.
    ///
    /// # Safety
    /// `buffer` must be valid for reads, as `Hal::share` promises.
    unsafe fn share(&self, buffer: NonNull<[u8]>, direction: BufferDirection) -> PeerPhysAddr {
        let start = buffer.cast::<u8>().as_ptr() as usize;
        let len = buffer.len();
        if self.is_direct(start, len) {
            return start as PeerPhysAddr;
        }
        assert!(
            len <= PAGE_SIZE,
            "virtio-drivers shared {len} bytes outside the arena; bounce pages hold {PAGE_SIZE}"
        );
        let page = self.spare.borrow_mut().pop().unwrap_or_else(|| {
            let (_, page) = SimHal.dma_alloc(1).expect("a bounce page");
            self.pages.set(self.pages.get() + 1);
            page
        });
        if direction != BufferDirection::DeviceToDriver {
            // SAFETY: the caller makes `buffer` readable for `len` bytes; `page`
            // is a whole SimHal page (len <= PAGE_SIZE) out of the spare list,
            // so nothing else reads or writes it until `unshare` returns it.
            unsafe { ptr::copy_nonoverlapping(buffer.cast::<u8>().as_ptr(), page.as_ptr(), len) };
        }
        page.as_ptr() as usize as PeerPhysAddr
    }

    /// Ends the sharing `share` began, copying back what the device may have written.
    ///
    /// # Safety
    /// `buffer` must be valid for writes and `paddr` what `share` returned for it.
    unsafe fn unshare(
        &self,
        paddr: PeerPhysAddr,
        buffer: NonNull<[u8]>,
        direction: BufferDirection,
    ) {
        let start = buffer.cast::<u8>().as_ptr() as usize;
        let len = buffer.len();
        if self.is_direct(start, len) {
            return;
        }
        // `share` bounced this buffer, so `paddr` is the address of a bounce page.
        let page = NonNull::new(paddr as usize as *mut u8).expect("a bounce page is never null");
        if direction != BufferDirection::DriverToDevice {
            // SAFETY: the caller makes `buffer` writable for `len` bytes; `page`
            // is the bounce page `share` filled for it, whose first `len` bytes
            // the device is done with (the buffer was used).
            unsafe { ptr::copy_nonoverlapping(page.as_ptr(), buffer.cast::<u8>().as_ptr(), len) };
        }
        self.spare.borrow_mut().push(page);
    }
}

impl Drop for DmaWindow {
    fn drop(&mut self) {
        let spare = self.spare.get_mut();
        // A page still out belongs to a request in flight; leak it rather than
        // free memory the device may still be given.
        if spare.len() == self.pages.get() {
            for page in spare.drain(..) {
                // SAFETY: every spare page came from `SimHal.dma_alloc(1)` in
                // `share`, is freed once (drained), and no request holds it.
                unsafe { SimHal.dma_dealloc(page.as_ptr() as usize as u64, page, 1) };
            }
        }
    }
}

/// virtio-drivers' `Hal` over [`SimHal`].
pub struct PeerHal;

// SAFETY: `dma_alloc` hands out SimHal pages, which are zeroed, page-aligned,
// valid until freed and aliased by nothing (SimHal's own contract), or a null
// address that virtio-drivers treats as failure. `mmio_phys_to_virt` never
// returns. `share` gives the device an address inside live SimHal memory
// holding the buffer's contents, and `unshare` copies back what it wrote.
unsafe impl PeerHalTrait for PeerHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PeerPhysAddr, NonNull<u8>) {
        SimHal.dma_alloc(pages).unwrap_or((0, NonNull::dangling()))
    }

    unsafe fn dma_dealloc(paddr: PeerPhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: virtio-drivers passes back exactly what `dma_alloc` returned
        // for `pages` pages, once; those came from SimHal unchanged.
        unsafe { SimHal.dma_dealloc(paddr, vaddr, pages) };
        0
    }

    unsafe fn mmio_phys_to_virt(_paddr: PeerPhysAddr, _size: usize) -> NonNull<u8> {
        unreachable!("only virtio-drivers' PCI transport maps BARs; the sim transport has none")
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PeerPhysAddr {
        // SAFETY: `Hal::share`'s contract makes `buffer` valid for this call.
        WINDOW.with(|window| unsafe { window.share(buffer, direction) })
    }

    unsafe fn unshare(paddr: PeerPhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        // SAFETY: `Hal::unshare`'s contract makes `buffer` valid and `paddr`
        // what `share` returned for it.
        WINDOW.with(|window| unsafe { window.unshare(paddr, buffer, direction) })
    }
}

/// While alive, buffers virtio-drivers shares from `[start, start + len)` on
/// this thread go to the device in place, not through a bounce page. One at a
/// time; not `Send`, because it names this thread's window.
pub struct DirectWindow(PhantomData<*const ()>);

impl DirectWindow {
    /// `[start, start + len)` must lie in one live `SimHal` allocation for as
    /// long as the window lives, or the sim will report the buffers in it.
    pub fn register(start: usize, len: usize) -> DirectWindow {
        WINDOW.with(|window| {
            assert_eq!(window.direct.get(), (0, 0), "one direct window at a time");
            window.direct.set((start, start + len));
        });
        DirectWindow(PhantomData)
    }
}

impl Drop for DirectWindow {
    fn drop(&mut self) {
        WINDOW.with(|window| window.direct.set((0, 0)));
    }
}
