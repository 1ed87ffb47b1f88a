//! Guest memory as a VMM sees it (`vm-memory`), and a [`Hal`] for our driver
//! over it: device address = guest physical address, pointer = the host
//! mapping of that guest address.

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_blk_mq::{Hal, PhysAddr, PAGE_SIZE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// The guest memory type the device side reads and writes.
pub type Memory = GuestMemoryMmap<()>;

/// First guest-physical address of RAM. Not 0, so an address the driver
/// forgot to fill in (0) lands outside guest memory and is caught.
pub const GUEST_BASE: u64 = 0x10_0000;

/// Bytes of guest RAM: an anonymous mapping, so untouched pages cost nothing.
pub const GUEST_SIZE: usize = 64 << 20;

const PAGE: u64 = PAGE_SIZE as u64;

/// One region of guest RAM at [`GUEST_BASE`].
pub fn guest_memory() -> Arc<Memory> {
    let memory = Memory::from_ranges(&[(GuestAddress(GUEST_BASE), GUEST_SIZE)])
        .expect("guest RAM can be mapped");
    Arc::new(memory)
}

/// Page allocator over guest RAM: a bump pointer plus, per allocation size,
/// a free list, so freed runs are reused before fresh memory is touched.
struct Pages {
    next: u64,
    end: u64,
    free: HashMap<usize, Vec<u64>>,
    /// Live allocations: start -> pages. Lets `dealloc` catch a driver that
    /// frees what it did not allocate, frees twice or frees with another size.
    live: HashMap<u64, usize>,
}

impl Pages {
    fn take(&mut self, pages: usize) -> Option<u64> {
        if let Some(start) = self.free.get_mut(&pages).and_then(Vec::pop) {
            self.live.insert(start, pages);
            return Some(start);
        }
        let bytes = u64::try_from(pages).ok()?.checked_mul(PAGE)?;
        let start = self.next;
        let end = start.checked_add(bytes)?;
        if end > self.end {
            return None;
        }
        self.next = end;
        self.live.insert(start, pages);
        Some(start)
    }

    fn give_back(&mut self, start: u64, pages: usize) {
        match self.live.remove(&start) {
            Some(allocated) if allocated == pages => {
                self.free.entry(pages).or_default().push(start);
            }
            Some(allocated) => panic!(
                "dma_dealloc of {start:#x} with {pages} pages, but {allocated} were allocated"
            ),
            None => panic!("dma_dealloc of {start:#x}, which is not allocated (double free?)"),
        }
    }
}

struct Shared {
    memory: Arc<Memory>,
    pages: Mutex<Pages>,
}

/// DMA memory for our driver, carved out of the guest RAM the device sees.
#[derive(Clone)]
pub struct VmmHal {
    shared: Arc<Shared>,
}

impl VmmHal {
    /// A Hal handing out all of `memory`'s RAM.
    pub fn new(memory: Arc<Memory>) -> Self {
        VmmHal {
            shared: Arc::new(Shared {
                memory,
                pages: Mutex::new(Pages {
                    next: GUEST_BASE,
                    end: GUEST_BASE + GUEST_SIZE as u64,
                    free: HashMap::new(),
                    live: HashMap::new(),
                }),
            }),
        }
    }

    fn pages(&self) -> MutexGuard<'_, Pages> {
        // A panic while holding the lock leaves the maps consistent (every
        // update is a single insert or remove), so a poisoned lock is usable.
        self.shared
            .pages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Pages allocated and not yet freed: 0 after a clean teardown.
    pub fn live_pages(&self) -> usize {
        self.pages().live.values().sum()
    }
}

// SAFETY: every run handed out lies inside the single guest RAM region
// (`take` never passes `end`), is page-aligned (GUEST_BASE and every run
// length are page multiples), is zeroed before it is returned, and is handed
// out to one owner only until it is freed. The pointer is the host mapping
// of the same guest address, so the device (through `vm-memory`) and the
// driver (through the pointer) reach the same bytes; the mapping lives as
// long as any clone of this Hal because each clone holds the `Arc<Memory>`.
// Clones share one allocator through the inner `Arc`.
unsafe impl Hal for VmmHal {
    fn dma_alloc(&self, pages: usize) -> Option<(PhysAddr, NonNull<u8>)> {
        let start = self.pages().take(pages)?;
        let memory = &self.shared.memory;
        // Reused runs still hold their last owner's data.
        let zero = [0u8; PAGE_SIZE];
        for page in 0..pages as u64 {
            memory
                .write_slice(&zero, GuestAddress(start + page * PAGE))
                .expect("allocated pages are inside guest RAM");
        }
        let host = memory
            .get_host_address(GuestAddress(start))
            .expect("allocated pages are inside guest RAM");
        Some((start, NonNull::new(host)?))
    }

    unsafe fn dma_dealloc(&self, paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) {
        let host = self
            .shared
            .memory
            .get_host_address(GuestAddress(paddr))
            .expect("freed pages are inside guest RAM");
        assert_eq!(
            host,
            vaddr.as_ptr(),
            "dma_dealloc: pointer and address disagree"
        );
        self.pages().give_back(paddr, pages);
    }
}
