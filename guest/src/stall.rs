//! A queue that still has requests in flight after the job's drain timeout:
//! print what the ring and the device look like, ring the doorbell once
//! more, and say whether that brought the requests back (the device was
//! waiting for a kick it never got) or not (the device stopped).
//!
//! Every line starts `vblk-guest: stall: queue N:` so `cargo xtask soak`
//! can find them; the last one carries the verdict.

use alloc::format;
use alloc::string::String;

use virtio_blk_mq::snapshot::{PackedSnapshot, RingSnapshot, SplitSnapshot};
use virtio_blk_mq::spec::packed_event;
use virtio_blk_mq::{BlkDevice, BlkQueue, DeviceStatus, QueueNotifier, Transport};

use crate::hal::GuestHal;
use crate::{health, println, time};

/// How long to poll after the extra doorbell.
const RESCUE_WAIT_NS: u64 = 1_000_000_000;

/// What the extra doorbell showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every request came back after the doorbell: the device was waiting
    /// for a kick.
    LostKick,
    /// Some, not all, came back.
    Partial,
    /// None came back, and the device reports no error: it stopped.
    DeviceStopped,
    /// The device set DEVICE_NEEDS_RESET.
    NeedsReset,
}

impl Verdict {
    /// The verdict's words (what `cargo xtask soak` reads).
    pub fn name(self) -> &'static str {
        match self {
            Verdict::LostKick => "lost kick",
            Verdict::Partial => "partly rescued",
            Verdict::DeviceStopped => "device stopped",
            Verdict::NeedsReset => "device needs reset",
        }
    }
}

/// Reports queue `index`'s stall and tries the extra doorbell;
/// `interrupts` describes the transport's interrupt state (ISR, MSI-X
/// pending bits).
pub fn diagnose<T: Transport>(
    index: usize,
    queue: &mut BlkQueue<GuestHal, T::Notifier>,
    device: &mut BlkDevice<GuestHal, T>,
    interrupts: &dyn Fn() -> String,
) -> Verdict {
    let stuck = queue.in_flight();
    let status = device.status();
    health::record(status);
    let before = queue.debug_snapshot();
    let say = |what: core::fmt::Arguments<'_>| println!("vblk-guest: stall: queue {index}: {what}");
    say(format_args!(
        "{stuck} requests in flight after the drain timeout"
    ));
    say(format_args!("device status {}", health::describe(status)));
    say(format_args!(
        "{} configuration-change interrupts during the run; {}",
        health::config_changes(),
        interrupts()
    ));
    say(format_args!("before the extra doorbell: {before}"));
    say(format_args!("reading: {}", explain(&before)));
    let stats = queue.stats();
    say(format_args!(
        "{} commits, {} doorbells rung, {} completions",
        stats.commits, stats.kicks, stats.completed
    ));

    // The doorbell the driver would ring, once more, unconditionally.
    let queue_index = queue.index();
    device.transport_mut().notifier(queue_index).notify();
    let start = time::now_ns();
    let mut rescued = 0u32;
    while queue.in_flight() > 0 && time::now_ns() < start + RESCUE_WAIT_NS {
        rescued += queue.poll(usize::from(stuck), |_| {}) as u32;
    }
    let after = queue.debug_snapshot();
    say(format_args!("after the extra doorbell: {after}"));
    let verdict = if status.contains(DeviceStatus::DEVICE_NEEDS_RESET) {
        Verdict::NeedsReset
    } else if rescued == u32::from(stuck) {
        Verdict::LostKick
    } else if rescued > 0 {
        Verdict::Partial
    } else {
        Verdict::DeviceStopped
    };
    say(format_args!(
        "verdict: {} (the extra doorbell brought back {rescued} of {stuck})",
        verdict.name()
    ));
    verdict
}

/// What the snapshot says about who is waiting for whom.
fn explain(snapshot: &RingSnapshot) -> String {
    match snapshot {
        RingSnapshot::Packed(p) => explain_packed(p),
        RingSnapshot::Split(s) => explain_split(s),
    }
}

fn explain_packed(p: &PackedSnapshot) -> String {
    let wrap_bit = packed_event::WRAP_BIT;
    let oldest = format!("slot {} lap {}", p.next_used, u8::from(p.used_wrap));
    let avail = PackedDescFlagsView(p.flags_at_next_used);
    let head = if avail.available_in(p.used_wrap) {
        "still available (the device has not used it)"
    } else if avail.used_in(p.used_wrap) {
        "used (the device completed it; the driver has not seen it?)"
    } else {
        "neither available nor used in this lap"
    };
    let device = match p.device_event_flags {
        packed_event::DISABLE => {
            String::from("the device asks for no doorbells (it says it is polling)")
        }
        packed_event::ENABLE => String::from("the device asks for a doorbell on every publish"),
        packed_event::DESC => {
            let offset = p.device_event_off_wrap & !wrap_bit;
            let lap = u8::from(p.device_event_off_wrap & wrap_bit != 0);
            let at_oldest = offset == p.next_used && (lap != 0) == p.used_wrap;
            format!(
                "the device asks for a doorbell when slot {offset} lap {lap} is published{}",
                if at_oldest {
                    ": that is the oldest request in flight, so the device wanted to hear of it"
                } else {
                    ""
                }
            )
        }
        other => format!("device event flags {other:#x} are not a valid value"),
    };
    format!("the oldest request in flight is at {oldest}, {head}; {device}")
}

fn explain_split(s: &SplitSnapshot) -> String {
    let seen = s.used_idx.wrapping_sub(s.last_used);
    let device = if s.event_idx {
        let asks = s.avail_event;
        let covered = asks.wrapping_sub(s.last_used) < s.published_idx.wrapping_sub(s.last_used);
        format!(
            "avail_event {asks}: the device asks for a doorbell when avail.idx passes it{}",
            if covered {
                ", which the requests in flight did: it wanted to hear of them"
            } else {
                ""
            }
        )
    } else if s.used_flags & 1 != 0 {
        String::from("used.flags NO_NOTIFY: the device says it is polling")
    } else {
        String::from("used.flags clear: the device asks for a doorbell on every publish")
    };
    format!(
        "avail.idx {} published, used.idx {} ({} used and not yet consumed); {device}",
        s.shared_avail_idx, s.used_idx, seen
    )
}

/// The two packed descriptor bits that say who owns a slot (§2.8.1).
struct PackedDescFlagsView(u16);

impl PackedDescFlagsView {
    const AVAIL: u16 = 1 << 7;
    const USED: u16 = 1 << 15;

    fn available_in(&self, wrap: bool) -> bool {
        (self.0 & Self::AVAIL != 0) == wrap && (self.0 & Self::USED != 0) != wrap
    }

    fn used_in(&self, wrap: bool) -> bool {
        (self.0 & Self::AVAIL != 0) == wrap && (self.0 & Self::USED != 0) == wrap
    }
}
