//! A disk the kext drives: the device's control plane, its queues in
//! per-queue seats, the interrupt state, and the two ways in:
//!
//! - **Native, per CPU** ([`Disk::take_queue`]): the owner of CPU `i` takes
//!   queue `i` once (one lock, at the hand-over) and then submits, commits
//!   and polls on it directly ([`CpuQueue`] dereferences to the driver's
//!   `BlkQueue`): no lock and no allocation per I/O. Dropping the
//!   `CpuQueue` puts the queue back in its seat.
//! - **Synchronous** ([`Disk::read`], [`Disk::write`], [`Disk::flush`], the
//!   block driver's path): takes a seat's lock for the whole request, copies
//!   through the seat's DMA bounce buffer (preallocated: no allocation per
//!   request either), and waits for the completion. It prefers a seat no
//!   CPU owns: with the default one queue per CPU plus one, that is the
//!   spare queue; otherwise the calling CPU's. A seat whose queue a native
//!   owner holds is skipped; when every seat is taken the request fails
//!   with `Busy`.

use alloc::string::String;
use alloc::vec::Vec;
use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};

use kerla_api::sync::SpinLock;
use virtio_blk_mq::mq::wait_for_completions;
use virtio_blk_mq::{BlkDevice, BlkQueue, DeviceInfo, DmaBuffer, Mode, Op, RawSegment};

use crate::config::Cpus;
use crate::error::BlockError;
use crate::hal::KextHal;
use crate::irq::{IrqState, QueueWaiter};
use crate::request::{self, Geometry};
use crate::transport::{KextNotifier, KextTransport};

/// The driver's queue type for every disk of the kext.
pub type KextQueue = BlkQueue<KextHal, KextNotifier>;

/// The driver's device type for every disk of the kext.
pub type KextDevice = BlkDevice<KextHal, KextTransport>;

/// Tag of the synchronous path's requests (one at a time per seat).
const SYNC_TAG: u64 = u64::MAX;

/// Bytes of each seat's bounce buffer: the largest piece a synchronous
/// request is split into.
pub const BOUNCE_BYTES: usize = 64 * 1024;

/// How long the synchronous path waits for one completion before it gives
/// the seat up (there is no clock in Kerla's kext API, so it counts): in
/// Poll mode rounds of `spin_budget` ring checks (2^20 × 256 checks: seconds),
/// sleeping modes sleeps of up to four timer ticks each.
const POLL_ROUNDS: u64 = 1 << 20;
const SLEEP_ROUNDS: u64 = 1 << 12;

/// One queue's seat.
struct Seat {
    /// The queue, unless a native owner holds it.
    queue: Option<KextQueue>,
    /// The synchronous path's DMA buffer (`None` when the device's segment
    /// limit is below one block, or memory ran out at setup).
    bounce: Option<DmaBuffer<KextHal>>,
    /// A synchronous request on this seat never completed or the queue
    /// broke: the device may still write the bounce buffer, so the seat is
    /// retired for good (its buffer is never reused nor freed).
    retired: bool,
}

/// A virtio-blk device driven by the kext. Disks live as long as the kernel.
pub struct Disk {
    name: String,
    info: DeviceInfo,
    device: SpinLock<KextDevice>,
    seats: Vec<SpinLock<Seat>>,
    /// Queues meant for CPUs `0..cpu_queues`; the rest are spare.
    cpu_queues: usize,
    cpus: Cpus,
    irq: &'static IrqState,
    irq_line: Option<u8>,
    spin_budget: u32,
}

impl Disk {
    pub(crate) fn new(
        name: String,
        mut device: KextDevice,
        cpus: Cpus,
        irq: &'static IrqState,
        irq_line: Option<u8>,
        spin_budget: u32,
    ) -> Disk {
        let info = *device.info();
        let queues = device.take_queues().into_queues();
        let chunk = request::chunk_bytes(BOUNCE_BYTES, info.max_segment_size, info.block_size);
        let seats: Vec<_> = queues
            .into_iter()
            .map(|queue| {
                SpinLock::new(Seat {
                    queue: Some(queue),
                    bounce: chunk.and_then(|bytes| DmaBuffer::new(&KextHal, bytes)),
                    retired: false,
                })
            })
            .collect();
        Disk {
            name,
            info,
            device: SpinLock::new(device),
            cpu_queues: cpus.count().min(seats.len()),
            cpus,
            seats,
            irq,
            irq_line,
            spin_budget,
        }
    }

    /// A name for logs: bus and address.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What was negotiated and read from the device at setup.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Queues the device set up.
    pub fn queues(&self) -> usize {
        self.seats.len()
    }

    /// The interrupt line the hybrid fallback uses, if the device has one.
    pub fn irq_line(&self) -> Option<u8> {
        self.irq_line
    }

    /// Used-buffer interrupts received through `attach_irq`.
    pub fn interrupts(&self) -> u64 {
        self.irq.interrupts()
    }

    /// Sleeps of the hybrid fallback that ended with no interrupt.
    pub fn waits_timed_out(&self) -> u64 {
        self.irq.waits_timed_out()
    }

    /// Takes queue `index` for the calling owner (queue `i` for CPU `i`;
    /// see [`Disk::take_queue_for_this_cpu`]). `None` when it is out of
    /// range, held by another owner, or retired. One lock, here; none on
    /// the queue's I/O path.
    pub fn take_queue(&'static self, index: usize) -> Option<CpuQueue> {
        let mut seat = self.seats.get(index)?.lock();
        if seat.retired {
            return None;
        }
        let queue = seat.queue.take()?;
        Some(CpuQueue {
            disk: self,
            index,
            queue: ManuallyDrop::new(queue),
        })
    }

    /// Takes the calling CPU's queue (the CPU index comes from the
    /// [`Cpus`] the kext was loaded with).
    pub fn take_queue_for_this_cpu(&'static self) -> Option<CpuQueue> {
        let cpu = self.cpus.current();
        if cpu >= self.cpu_queues {
            return None;
        }
        self.take_queue(cpu)
    }

    /// The waiter of queue `index` for `mq::wait_for_completions` (Hybrid
    /// and Interrupt modes).
    pub fn waiter(&self, index: usize) -> QueueWaiter {
        QueueWaiter::new(self.irq, index)
    }

    /// Empty checks before a hybrid queue sleeps.
    pub fn spin_budget(&self) -> u32 {
        self.spin_budget
    }

    /// Control plane: looks at the device status after the interrupt
    /// signalled a configuration change (DEVICE_NEEDS_RESET fails every
    /// queue). Cheap when nothing was signalled.
    pub fn check_status(&self) -> Result<(), BlockError> {
        if self.irq.take_config_change() {
            self.device
                .lock()
                .check_status()
                .map_err(request::block_error)?;
        }
        Ok(())
    }

    /// Synchronous read of whole blocks at `sector` into `buf`.
    pub fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        request::check(sector, buf.len(), false, &Geometry::from(&self.info))?;
        self.check_status()?;
        self.with_seat(|seat, waiter| {
            let chunk = seat.chunk()?;
            for (first, range) in request::chunks(sector, buf.len(), chunk) {
                seat.run(Op::Read, first, range.len(), self.spin_budget, &waiter)?;
                let bounce = seat.bounce.as_ref().ok_or(BlockError::DeviceFailed)?;
                buf[range.clone()].copy_from_slice(&bounce.as_slice()[..range.len()]);
            }
            Ok(())
        })
    }

    /// Synchronous write of whole blocks from `buf` at `sector`.
    pub fn write(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        request::check(sector, buf.len(), true, &Geometry::from(&self.info))?;
        self.check_status()?;
        self.with_seat(|seat, waiter| {
            let chunk = seat.chunk()?;
            for (first, range) in request::chunks(sector, buf.len(), chunk) {
                let bounce = seat.bounce.as_mut().ok_or(BlockError::DeviceFailed)?;
                bounce.as_mut_slice()[..range.len()].copy_from_slice(&buf[range.clone()]);
                seat.run(Op::Write, first, range.len(), self.spin_budget, &waiter)?;
            }
            Ok(())
        })
    }

    /// Synchronous flush of the device's write cache. A device without
    /// FLUSH has no volatile cache to flush: `Ok` at once.
    pub fn flush(&self) -> Result<(), BlockError> {
        if !self.info.flush {
            return Ok(());
        }
        self.check_status()?;
        self.with_seat(|seat, waiter| seat.run(Op::Flush, 0, 0, self.spin_budget, &waiter))
    }

    /// Runs `f` on a free seat, its lock held throughout (see the module).
    fn with_seat<R>(
        &self,
        f: impl FnOnce(&mut Seat, QueueWaiter) -> Result<R, BlockError>,
    ) -> Result<R, BlockError> {
        let n = self.seats.len();
        let first = if n > self.cpu_queues {
            n - 1
        } else {
            self.cpus.current() % n.max(1)
        };
        let mut saw_retired = false;
        for k in 0..n {
            let index = (first + n - k) % n;
            let mut seat = self.seats[index].lock();
            if seat.retired {
                saw_retired = true;
                continue;
            }
            if seat.queue.is_none() {
                continue;
            }
            return f(&mut seat, self.waiter(index));
        }
        Err(if saw_retired {
            BlockError::DeviceFailed
        } else {
            BlockError::Busy
        })
    }
}

impl Seat {
    fn chunk(&self) -> Result<usize, BlockError> {
        self.bounce
            .as_ref()
            .map(DmaBuffer::len)
            .ok_or(BlockError::Unsupported)
    }

    /// One request through the bounce buffer (`len` bytes of it; none for
    /// a flush), waited for. Retires the seat if the request may still be
    /// in the device's hands when this returns.
    fn run(
        &mut self,
        op: Op,
        sector: u64,
        len: usize,
        spin_budget: u32,
        waiter: &QueueWaiter,
    ) -> Result<(), BlockError> {
        let (Some(queue), Some(bounce)) = (self.queue.as_mut(), self.bounce.as_ref()) else {
            return Err(BlockError::DeviceFailed);
        };
        let segment = [RawSegment {
            addr: bounce.paddr(),
            len: len as u32,
        }];
        let segments: &[RawSegment] = if op == Op::Flush { &[] } else { &segment };
        // SAFETY: the bounce buffer belongs to this seat, whose lock we
        // hold; nothing touches it until the completion below comes back.
        // If it does not (no completion in time, or the queue breaks), the
        // seat is retired: the buffer is never used or freed again, and
        // disks are never dropped.
        unsafe { queue.submit_raw(op, sector, segments, SYNC_TAG) }
            .map_err(request::block_error)?;
        queue.commit();
        let rounds = if queue.mode() == Mode::Poll {
            POLL_ROUNDS
        } else {
            SLEEP_ROUNDS
        };
        let mut result = None;
        for _ in 0..rounds {
            // A native owner may have given the queue back with requests
            // in flight: their completions are not ours (their buffers are
            // dropped here, the device being done with them).
            queue.poll(usize::from(queue.size()), |completion| {
                if completion.tag == SYNC_TAG {
                    result = Some(completion.result);
                }
            });
            if let Some(result) = result {
                if result == Err(virtio_blk_mq::Error::DeviceBroken) {
                    self.retired = true;
                }
                return result.map_err(request::block_error);
            }
            wait_for_completions(queue, spin_budget, waiter);
        }
        kerla_api::warn!("virtio-blk-mq kext: a request never completed; its queue is retired");
        self.retired = true;
        Err(BlockError::DeviceFailed)
    }
}

/// A queue taken by its owner for the native per-CPU path. Dereferences to
/// the driver's [`BlkQueue`] (read/write/submit_raw, commit, poll, ...);
/// goes back to its seat when dropped. Drain it first: completions of
/// requests still in flight then are discarded by the synchronous path
/// (tags are the owner's; the synchronous path uses `u64::MAX`).
pub struct CpuQueue {
    disk: &'static Disk,
    index: usize,
    queue: ManuallyDrop<KextQueue>,
}

impl CpuQueue {
    /// The queue's index on the device.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The disk it belongs to.
    pub fn disk(&self) -> &'static Disk {
        self.disk
    }

    /// This queue's waiter (Hybrid and Interrupt modes).
    pub fn waiter(&self) -> QueueWaiter {
        self.disk.waiter(self.index)
    }

    /// Waits until a completion is pending, as the queue's mode says (see
    /// `virtio_blk_mq::mq::wait_for_completions`); the hybrid fallback
    /// sleeps until the disk's interrupt.
    pub fn wait_for_completions(&mut self) -> bool {
        let waiter = self.waiter();
        wait_for_completions(&mut self.queue, self.disk.spin_budget, &waiter)
    }
}

impl Deref for CpuQueue {
    type Target = KextQueue;

    fn deref(&self) -> &KextQueue {
        &self.queue
    }
}

impl DerefMut for CpuQueue {
    fn deref_mut(&mut self) -> &mut KextQueue {
        &mut self.queue
    }
}

impl Drop for CpuQueue {
    fn drop(&mut self) {
        // SAFETY: `queue` is taken exactly once, here, and never touched again.
        let queue = unsafe { ManuallyDrop::take(&mut self.queue) };
        if let Some(seat) = self.disk.seats.get(self.index) {
            seat.lock().queue = Some(queue);
        }
    }
}
