//! Model checking of the rings' publish / notify / re-arm protocol with loom.
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" cargo test --profile loom -p virtio-blk-mq --lib --target-dir target/loom loom_model
//! ```
//!
//! Under `cfg(all(test, loom))` the rings' shared memory is made of loom
//! atomics (`sync::atomic`, `shared::SharedArray`), so loom runs the real
//! driver code (`SplitRing`, `PackedRing` through `Ring`) against a small
//! device thread written here from the spec, and tries every interleaving
//! and every value the memory model lets a load return, within a bound on
//! preemptions (4 unless `LOOM_MAX_PREEMPTIONS` says otherwise).
//!
//! Doorbells and interrupts are modelled as reliable one-bit lines: the
//! question is whether each side rings them when it must. Every model checks,
//! when both sides have stopped:
//! - no lost kick: a device that went to sleep while published requests
//!   waited for it has a kick pending;
//! - no lost interrupt: a driver that went to sleep while completions waited
//!   for it has an interrupt pending;
//! - no double completion, no completion of a request not in flight, no
//!   descriptor read before it was published (`pop_used` would report a
//!   device fault, and the device checks the lengths it reads).
//!
//! The driver hands every other request over with `publish` before its
//! commit, so the doorbell decision covers requests published in pieces.
//!
//! The rings are tiny (2 entries) so that a few requests wrap the packed wrap
//! counters; the split models start their indices at 65535 so they cross
//! the u16 wrap of EVENT_IDX. The device either leaves kicks enabled or, as
//! QEMU's device loop does, suppresses them while it works and enables them
//! again (fence, look again) before it sleeps.

use alloc::sync::Arc;
use alloc::vec::Vec;

use loom::sync::Mutex;
use loom::thread;

use crate::hal::test_hal::TestHal;
use crate::packed_ring::{PackedMemory, PackedRing};
use crate::ring::{Ring, Segment, UsedNotifications};
use crate::spec::{
    need_event, packed_event, PackedDescFlags, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY,
};
use crate::split_ring::{SplitMemory, SplitRing};
use crate::sync::atomic::{fence, Ordering};

/// Every request is one device-writable buffer of this length.
const SEGMENT: Segment = Segment {
    addr: 0x1000,
    len: 512,
    device_writable: true,
};

/// Runs `f` under loom with a default preemption bound, so the whole set
/// runs in CI in well under a minute on two cores.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(4);
    }
    builder.check(f);
}

/// A doorbell or an interrupt line: raised by one side, taken by the other.
/// A loom mutex rather than an atomic flag: loom 0.7 lets a store slip
/// between the read and the write of a concurrent swap (loom issue #254),
/// which would fake lost wake-ups here.
#[derive(Clone)]
struct Line(Arc<Mutex<bool>>);

impl Line {
    fn new() -> Line {
        Line(Arc::new(Mutex::new(false)))
    }

    fn raise(&self) {
        *self.0.lock().expect("line") = true;
    }

    fn take(&self) -> bool {
        core::mem::take(&mut *self.0.lock().expect("line"))
    }

    fn pending(&self) -> bool {
        *self.0.lock().expect("line")
    }
}

/// How the driver waits for completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiter {
    /// `Mode::Interrupt` as documented: notifications stay on, the interrupt
    /// handler polls until the ring is empty and never re-arms.
    DrainOnly,
    /// `Mode::Hybrid`: notifications off while polling; before sleeping arm,
    /// fence, re-check (rule 4); after waking disarm.
    Rearm,
}

/// Where the driver stopped.
struct DriverEnd {
    submitted: usize,
    done: usize,
    asleep: bool,
}

/// The driver: keeps the ring as full as `requests` allows, publishes,
/// kicks when the ring says so, drains, and sleeps when nothing is left to
/// do, the way `waiter` says.
fn run_driver(
    ring: &mut Ring<TestHal>,
    requests: usize,
    waiter: Waiter,
    kick: &Line,
    irq: &Line,
) -> DriverEnd {
    let mut in_flight: Vec<bool> = (0..ring.size()).map(|_| false).collect();
    let (mut submitted, mut done) = (0, 0);
    loop {
        while submitted < requests && ring.next_id(1).is_some() {
            let id = usize::from(ring.add(&[SEGMENT]));
            assert!(!in_flight[id], "id {id} handed out twice");
            in_flight[id] = true;
            submitted += 1;
            // Every other request goes out on its own before the commit, as
            // a long batch's pieces do (`Config::publish_batch`): the commit
            // then decides the doorbell for both.
            if submitted % 2 == 1 {
                ring.publish();
            }
        }
        if ring.commit() == Some(true) {
            kick.raise();
        }
        while let Some(used) = ring.pop_used().expect("a fault from an honest device") {
            let id = usize::from(used.id);
            assert!(in_flight[id], "id {id} completed twice");
            in_flight[id] = false;
            done += 1;
        }
        if done == requests {
            return DriverEnd {
                submitted,
                done,
                asleep: false,
            };
        }
        if submitted < requests && ring.next_id(1).is_some() {
            continue;
        }
        if waiter == Waiter::Rearm && ring.arm_and_check() {
            ring.set_used_notifications(UsedNotifications::Off);
            continue;
        }
        if irq.take() {
            if waiter == Waiter::Rearm {
                ring.set_used_notifications(UsedNotifications::Off);
            }
            continue;
        }
        return DriverEnd {
            submitted,
            done,
            asleep: true,
        };
    }
}

/// Where the device stopped (it only stops by going to sleep).
struct DeviceEnd {
    taken: usize,
    completed: usize,
}

/// The checks every model ends with.
fn check_wakeups(driver: &DriverEnd, device: &DeviceEnd, kick: &Line, irq: &Line) {
    if device.taken < driver.submitted {
        assert!(
            kick.pending(),
            "lost kick: the device sleeps with {} published requests untaken",
            driver.submitted - device.taken
        );
    }
    if driver.asleep && device.completed > driver.done {
        assert!(
            irq.pending(),
            "lost interrupt: the driver sleeps with {} completions waiting (submitted {}, done {}, taken {}, completed {})",
            device.completed - driver.done, driver.submitted, driver.done, device.taken, device.completed
        );
    }
    assert!(device.completed >= driver.done);
}

/// Runs the driver on `ring` against `device` on a thread of its own, then
/// checks that neither side sleeps through a wake-up it is owed.
fn run_against(
    mut ring: Ring<TestHal>,
    device: impl FnOnce(Line, Line) -> DeviceEnd + Send + 'static,
    waiter: Waiter,
    requests: usize,
) {
    ring.set_used_notifications(match waiter {
        Waiter::DrainOnly => UsedNotifications::On,
        Waiter::Rearm => UsedNotifications::Off,
    });
    let (kick, irq) = (Line::new(), Line::new());
    let device = {
        let (kick, irq) = (kick.clone(), irq.clone());
        thread::spawn(move || device(kick, irq))
    };
    let driver = run_driver(&mut ring, requests, waiter, &kick, &irq);
    let device = device.join().expect("device thread");
    check_wakeups(&driver, &device, &kick, &irq);
}

/// A split-ring device (VIRTIO 1.2 §2.7) that sleeps when idle: takes every
/// available buffer, completes them in one batch and notifies as the driver
/// asked; then asks for a kick, fences, looks again, and sleeps.
struct SplitDevice {
    mem: SplitMemory,
    size: u16,
    event_idx: bool,
    /// Tells the driver not to kick while it works, as QEMU's device loop
    /// does, and asks again (fence, look again) before it sleeps.
    quiet_while_busy: bool,
    next_avail: u16,
    next_used: u16,
}

impl SplitDevice {
    fn run(mut self, kick: Line, irq: Line) -> DeviceEnd {
        let mut end = DeviceEnd {
            taken: 0,
            completed: 0,
        };
        let mask = self.size - 1;
        let mut pending = Vec::new();
        loop {
            if self.quiet_while_busy {
                if self.event_idx {
                    // An event the driver's window cannot reach (the sim's way).
                    let far = self.next_avail.wrapping_sub(1);
                    self.mem.avail_event[0].store(far.to_le(), Ordering::Relaxed);
                } else {
                    let quiet = VIRTQ_USED_F_NO_NOTIFY.to_le();
                    self.mem.used_header[0].store(quiet, Ordering::Relaxed);
                }
            }
            // Acquire pairs with the driver's Release of avail.idx (rule 1).
            let avail = u16::from_le(self.mem.avail[1].load(Ordering::Acquire));
            while self.next_avail != avail {
                let slot = 2 + usize::from(self.next_avail & mask);
                let head = u16::from_le(self.mem.avail[slot].load(Ordering::Relaxed));
                let len =
                    u32::from_le(self.mem.desc[usize::from(head)].len.load(Ordering::Relaxed));
                assert_eq!(
                    len, SEGMENT.len,
                    "descriptor {head} read before it was published"
                );
                pending.push(head);
                self.next_avail = self.next_avail.wrapping_add(1);
                end.taken += 1;
            }
            if !pending.is_empty() {
                let old = self.next_used;
                for head in pending.drain(..) {
                    let element = &self.mem.used_ring[usize::from(self.next_used & mask)];
                    element.id.store(u32::from(head).to_le(), Ordering::Relaxed);
                    element.len.store(1u32.to_le(), Ordering::Relaxed);
                    self.next_used = self.next_used.wrapping_add(1);
                    end.completed += 1;
                }
                // Release: the elements before the index that hands them over.
                self.mem.used_header[1].store(self.next_used.to_le(), Ordering::Release);
                // Pairs with the driver's re-arm fence (rule 4).
                fence(Ordering::SeqCst);
                let notify = if self.event_idx {
                    let slot = 2 + usize::from(self.size);
                    let event = u16::from_le(self.mem.avail[slot].load(Ordering::Relaxed));
                    need_event(event, self.next_used, old)
                } else {
                    let flags = u16::from_le(self.mem.avail[0].load(Ordering::Relaxed));
                    flags & VIRTQ_AVAIL_F_NO_INTERRUPT == 0
                };
                if notify {
                    irq.raise();
                }
                continue;
            }
            // Idle: ask for a kick at the next buffer, fence, look again.
            if self.event_idx {
                self.mem.avail_event[0].store(self.next_avail.to_le(), Ordering::Relaxed);
            } else {
                self.mem.used_header[0].store(0, Ordering::Relaxed);
            }
            // Pairs with the driver's fence between publishing and reading
            // the suppression state (rule 2).
            fence(Ordering::SeqCst);
            if u16::from_le(self.mem.avail[1].load(Ordering::Acquire)) != self.next_avail {
                continue;
            }
            if kick.take() {
                continue;
            }
            return end;
        }
    }
}

fn split_model(event_idx: bool, waiter: Waiter, requests: usize, quiet_while_busy: bool) {
    model(move || {
        let mut split = SplitRing::new(&TestHal, 2, event_idx, None).expect("ring");
        let start = 65535;
        split.model_start_at(start);
        let device = SplitDevice {
            mem: split.model_memory(),
            size: 2,
            event_idx,
            quiet_while_busy,
            next_avail: start,
            next_used: start,
        };
        let ring = Ring::Split(split);
        run_against(
            ring,
            move |kick, irq| device.run(kick, irq),
            waiter,
            requests,
        );
    });
}

/// Issue 14 item 1 (split): Interrupt mode drained without re-arming, with
/// EVENT_IDX, across the u16 wrap of the indices.
#[test]
fn loom_split_event_idx_interrupt_drain_only() {
    split_model(true, Waiter::DrainOnly, 3, false);
}

#[test]
fn loom_split_event_idx_hybrid_rearm() {
    split_model(true, Waiter::Rearm, 3, false);
}

#[test]
fn loom_split_flags_hybrid_rearm() {
    split_model(false, Waiter::Rearm, 3, false);
}

/// A device that suppresses kicks while it works and re-enables them before
/// sleeping: the commit's full fence and the device's re-check must still
/// meet.
#[test]
fn loom_split_event_idx_quiet_device_hybrid_rearm() {
    split_model(true, Waiter::Rearm, 3, true);
}

#[test]
fn loom_split_flags_quiet_device_interrupt_drain_only() {
    split_model(false, Waiter::DrainOnly, 3, true);
}

/// A packed-ring device (VIRTIO 1.2 §2.8), parallel to [`SplitDevice`].
/// Positions count from the start of the ring (`abs`): lap = abs / size,
/// wrap counter = 1 on even laps.
struct PackedDevice {
    mem: PackedMemory,
    size: u16,
    event_idx: bool,
    /// As for [`SplitDevice`]: DISABLE while it works.
    quiet_while_busy: bool,
    avail_abs: u32,
    used_abs: u32,
}

impl PackedDevice {
    fn slot(&self, abs: u32) -> usize {
        (abs % u32::from(self.size)) as usize
    }

    fn wrap(&self, abs: u32) -> bool {
        (abs / u32::from(self.size)) % 2 == 0
    }

    fn available(&self) -> Option<u16> {
        let desc = &self.mem.desc[self.slot(self.avail_abs)];
        // Acquire pairs with the driver's Release of the head's flags (rule 1).
        let flags =
            PackedDescFlags::from_bits_retain(u16::from_le(desc.flags.load(Ordering::Acquire)));
        let wrap = self.wrap(self.avail_abs);
        let avail = flags.contains(PackedDescFlags::AVAIL) == wrap
            && flags.contains(PackedDescFlags::USED) != wrap;
        avail.then(|| {
            let len = u32::from_le(desc.len.load(Ordering::Relaxed));
            assert_eq!(len, SEGMENT.len, "descriptor read before it was published");
            u16::from_le(desc.id.load(Ordering::Relaxed))
        })
    }

    /// Does the driver's event position fall among the used positions
    /// `[old, new)`? It names one position in any window of two laps; the
    /// driver's is at most a lap behind `new`.
    fn event_in(&self, off_wrap: u16, old: u32, new: u32) -> bool {
        let size = u32::from(self.size);
        let off = u32::from(off_wrap & !packed_event::WRAP_BIT);
        let wrap = off_wrap & packed_event::WRAP_BIT != 0;
        let base = new.saturating_sub(size);
        (base..new + size)
            .find(|&p| p % size == off && self.wrap(p) == wrap)
            .is_some_and(|event| old <= event && event < new)
    }

    fn run(mut self, kick: Line, irq: Line) -> DeviceEnd {
        let mut end = DeviceEnd {
            taken: 0,
            completed: 0,
        };
        let mut pending = Vec::new();
        loop {
            if self.quiet_while_busy {
                let quiet = packed_event::word(0, packed_event::DISABLE);
                self.mem.device_event[0].store(quiet.to_le(), Ordering::Relaxed);
            }
            while let Some(id) = self.available() {
                pending.push(id);
                self.avail_abs += 1;
                end.taken += 1;
            }
            if !pending.is_empty() {
                let old = self.used_abs;
                for id in pending.drain(..) {
                    let desc = &self.mem.desc[self.slot(self.used_abs)];
                    desc.id.store(id.to_le(), Ordering::Relaxed);
                    desc.len.store(1u32.to_le(), Ordering::Relaxed);
                    let mut flags = PackedDescFlags::WRITE;
                    if self.wrap(self.used_abs) {
                        flags |= PackedDescFlags::AVAIL | PackedDescFlags::USED;
                    }
                    // Release: id and len before the flags that hand it back.
                    desc.flags.store(flags.bits().to_le(), Ordering::Release);
                    self.used_abs += 1;
                    end.completed += 1;
                }
                // Pairs with the driver's re-arm fence (rule 4).
                fence(Ordering::SeqCst);
                let event = &self.mem.driver_event[0];
                // Acquire pairs with the driver's Release of `flags`, stored
                // after `off_wrap`.
                let notify = match u16::from_le(event.flags.load(Ordering::Acquire)) {
                    packed_event::DISABLE => false,
                    packed_event::DESC if self.event_idx => {
                        let off_wrap = u16::from_le(event.off_wrap.load(Ordering::Relaxed));
                        self.event_in(off_wrap, old, self.used_abs)
                    }
                    _ => true,
                };
                if notify {
                    irq.raise();
                }
                continue;
            }
            // Idle: ask for a kick at the next descriptor, in one store.
            let word = if self.event_idx {
                let wrap = if self.wrap(self.avail_abs) {
                    packed_event::WRAP_BIT
                } else {
                    0
                };
                packed_event::word(self.slot(self.avail_abs) as u16 | wrap, packed_event::DESC)
            } else {
                packed_event::word(0, packed_event::ENABLE)
            };
            self.mem.device_event[0].store(word.to_le(), Ordering::Relaxed);
            // Pairs with the driver's fence between publishing and reading
            // the suppression state (rule 2).
            fence(Ordering::SeqCst);
            if self.available().is_some() {
                continue;
            }
            if kick.take() {
                continue;
            }
            return end;
        }
    }
}

fn packed_model(event_idx: bool, waiter: Waiter, requests: usize, quiet_while_busy: bool) {
    model(move || {
        let packed = PackedRing::new(&TestHal, 2, event_idx, None).expect("ring");
        let device = PackedDevice {
            mem: packed.model_memory(),
            size: 2,
            event_idx,
            quiet_while_busy,
            avail_abs: 0,
            used_abs: 0,
        };
        // The device starts asleep, having asked for a kick at slot 0.
        let first = if event_idx {
            packed_event::word(packed_event::WRAP_BIT, packed_event::DESC)
        } else {
            packed_event::word(0, packed_event::ENABLE)
        };
        device.mem.device_event[0].store(first.to_le(), Ordering::Relaxed);
        let ring = Ring::Packed(packed);
        run_against(
            ring,
            move |kick, irq| device.run(kick, irq),
            waiter,
            requests,
        );
    });
}

/// Issue 14 item 1 (packed): Interrupt mode drained without re-arming, with
/// EVENT_IDX, four requests on two slots (the wrap counters flip twice).
#[test]
fn loom_packed_event_idx_interrupt_drain_only() {
    packed_model(true, Waiter::DrainOnly, 4, false);
}

#[test]
fn loom_packed_event_idx_hybrid_rearm() {
    packed_model(true, Waiter::Rearm, 4, false);
}

#[test]
fn loom_packed_flags_hybrid_rearm() {
    packed_model(false, Waiter::Rearm, 4, false);
}

/// As for split: kicks suppressed while the device works (DISABLE, then DESC
/// or ENABLE in one word before it sleeps, read by the driver in one load).
#[test]
fn loom_packed_event_idx_quiet_device_interrupt_drain_only() {
    packed_model(true, Waiter::DrainOnly, 4, true);
}

#[test]
fn loom_packed_flags_quiet_device_hybrid_rearm() {
    packed_model(false, Waiter::Rearm, 4, true);
}

/// Issue 14 item 4: a device that reads the driver event structure and sees
/// DESC (Acquire on `flags`) sees the position written with it, never the
/// one before (here the initial zero, which names the wrong lap).
#[test]
fn loom_packed_arm_publishes_the_position_before_the_flags() {
    model(|| {
        let mut ring = PackedRing::new(&TestHal, 2, true, None).expect("ring");
        ring.set_used_notifications(UsedNotifications::Off);
        let mem = ring.model_memory();
        let device = thread::spawn(move || {
            let event = &mem.driver_event[0];
            if u16::from_le(event.flags.load(Ordering::Acquire)) == packed_event::DESC {
                let off_wrap = u16::from_le(event.off_wrap.load(Ordering::Relaxed));
                assert_eq!(
                    off_wrap,
                    packed_event::WRAP_BIT,
                    "DESC with a stale position"
                );
            }
        });
        ring.arm_and_check();
        device.join().expect("device thread");
    });
}
