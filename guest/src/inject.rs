//! Faults the guest provokes on purpose (`inject=`), so the tests can check
//! how a run ends when the device breaks in the middle of a job.

use alloc::format;
use alloc::string::String;

use virtio_blk_mq::{BlkQueue, Op, QueueNotifier, RawSegment};

use crate::cmdline::Inject;
use crate::hal::GuestHal;
use crate::time;

/// A guest-physical address no RAM or device answers at (512 GiB; the
/// guest has far less memory, and QEMU's CPUs reach 1 TiB).
const NOWHERE: u64 = 1 << 39;

/// Two pages: QEMU maps a buffer that is not RAM through its one bounce
/// page, so the second page is what it cannot map.
const NOWHERE_LEN: u32 = 8192;

/// How long the injector waits for its request to end, after the job's end.
const SETTLE_NS: u64 = 2_000_000_000;

/// Runs `inject` on `queue` (a queue of its own, on a CPU of its own): waits
/// `delay_ns`, then submits the bad request and waits for the device to
/// drop it, at most until `runtime_ns + SETTLE_NS`. What happened, in words.
pub fn run<N: QueueNotifier>(
    inject: Inject,
    queue: &mut BlkQueue<GuestHal, N>,
    delay_ns: u64,
    runtime_ns: u64,
) -> String {
    match inject {
        Inject::NeedsReset => needs_reset(queue, delay_ns, runtime_ns),
    }
}

fn needs_reset<N: QueueNotifier>(
    queue: &mut BlkQueue<GuestHal, N>,
    delay_ns: u64,
    runtime_ns: u64,
) -> String {
    let start = time::now_ns();
    while time::now_ns() < start + delay_ns {
        core::hint::spin_loop();
    }
    let segment = RawSegment {
        addr: NOWHERE,
        len: NOWHERE_LEN,
    };
    // SAFETY: nothing lives at NOWHERE, so whatever the device writes there
    // reaches no memory of ours; the segment is never touched by the CPU.
    if let Err(e) = unsafe { queue.submit_raw(Op::Read, 0, &[segment], 0) } {
        return format!("the bad read was refused by the driver: {e}");
    }
    queue.commit();
    let deadline = start + runtime_ns + SETTLE_NS;
    let mut outcome = None;
    while outcome.is_none() && time::now_ns() < deadline {
        queue.poll(1, |c| outcome = Some(c.result));
        core::hint::spin_loop();
    }
    match outcome {
        Some(Ok(())) => format!("a read of {NOWHERE_LEN} bytes at {NOWHERE:#x} succeeded"),
        Some(Err(e)) => format!("a read of {NOWHERE_LEN} bytes at {NOWHERE:#x} ended: {e}"),
        None => format!("a read of {NOWHERE_LEN} bytes at {NOWHERE:#x} is still in flight"),
    }
}
