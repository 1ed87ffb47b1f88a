//! One device queue: collects available requests, performs queued hostile
//! acts, serves the requests, completes them in the configured order and
//! decides on notifications.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use virtio_blk_mq::{Features, RingKind};

use crate::config::{CompletionOrder, SimConfig};
use crate::device::Shared;
use crate::disk::Disk;
use crate::hostile::{garbage_flags, Hostile};
use crate::mem::MemCheck;
use crate::packed::used_flags;
use crate::request::{serve, writable_bytes, RawSeg, ReqCtx, Scratch, Segs, StatusWrite};
use crate::ring::{ChainRing, Next, Ring, RingSetup};
use crate::simple::{serve_simple, serve_three, simple_max_data};

/// A request taken from the ring and not yet completed.
struct Pending {
    id: u16,
    skip: u16,
    segs: Vec<RawSeg>,
    fault: Option<String>,
}

/// Small seeded PRNG (xorshift64*): deterministic, no dependency.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-enough value in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// How the device wants to hear about new buffers after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kicks {
    /// Kick me for the next buffer (inline steps and a device thread about to sleep).
    Enable,
    /// Don't kick, I poll.
    Disable,
}

/// How one step runs, besides the request context.
pub(crate) struct StepArgs<'a> {
    pub(crate) kicks: Kicks,
    /// Complete every pending request, including ones the order would hold back.
    pub(crate) drain: bool,
    /// Take requests but complete none ([`crate::SimDevice::stall`]).
    pub(crate) stalled: bool,
    /// Completions left before DEVICE_NEEDS_RESET
    /// ([`crate::SimConfig::needs_reset_after`]); `None` when unlimited.
    pub(crate) budget: Option<&'a AtomicU64>,
    /// Told about every hostile act performed.
    pub(crate) performed: &'a mut dyn FnMut(Hostile),
}

/// A request served and ready to be marked used.
struct Served {
    id: u16,
    skip: u16,
    len: u32,
}

/// Takes up to `want` completions from `budget`; returns how many it got.
fn reserve(budget: &AtomicU64, want: usize) -> usize {
    let mut granted = 0;
    // Relaxed: the counter orders no other memory; the read-modify-write alone
    // makes concurrent steps of different queues share it exactly.
    let _ = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
        granted = left.min(want as u64);
        Some(left - granted)
    });
    granted as usize
}

/// What one step did. Twelve bytes, so it comes back in registers.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StepOutcome {
    /// Requests completed (at most a ring's worth and the acts' few).
    pub(crate) completed: u32,
    /// A used-buffer notification is due.
    pub(crate) notify: bool,
    /// Requests held back for a later step (at most a ring's worth).
    pub(crate) pending: u32,
    /// The ring hit a fault it cannot recover from in this step.
    pub(crate) broke: bool,
}

/// What serving a chain works with besides the ring and the device: one
/// block, so the serving loop reaches all of it from one pointer.
struct Serving {
    mem: MemCheck,
    scratch: Scratch,
    /// Ids of the last `size` completions: with the pending ones, every id
    /// the driver may still have in flight.
    recent: Recent,
    /// Buffers of the chain being taken from the ring.
    segs: Segs,
    /// Negotiated features, for the request context.
    features: Features,
    /// See [`simple_max_data`].
    simple_max_data: u32,
}

impl Serving {
    /// The request context of this queue on `shared`.
    #[inline(always)]
    fn ctx<'a>(&self, shared: &'a Shared) -> ReqCtx<'a> {
        ReqCtx::new(
            &shared.config,
            &shared.disk,
            self.features,
            self.simple_max_data,
        )
    }
}

/// What [`QueueState::step_in_order`] did. Eight bytes, so it comes back
/// in a register.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct InOrderOutcome {
    /// Requests completed (at most a ring's worth).
    pub(crate) completed: u32,
    /// A used-buffer notification is due.
    pub(crate) notify: bool,
}

/// Reports `msg` for queue `queue` of `shared`.
fn report_to(shared: &Shared, queue: u16) -> impl FnMut(String) + '_ {
    move |m: String| shared.report(format!("queue {queue}: {m}"))
}

/// Takes up to `max` chains from `ring` in ring order, serving each as it
/// is taken and writing its used element; then publishes them and sets
/// kick suppression as `kicks` says, unless a ring fault stopped it (then
/// the fault is returned, for the caller to report).
///
/// The request context is built here, where the short path's use of it
/// inlines (so it lives in registers); the paths out of line build their
/// own, with the report closure only they need.
#[inline(always)]
fn run_in_order<R: ChainRing>(
    ring: &mut R,
    s: &mut Serving,
    shared: &Shared,
    queue: u16,
    max: usize,
    kicks: Kicks,
) -> (InOrderOutcome, Option<String>) {
    let (completed, fault) = serve_in_order(ring, s, shared, queue, max);
    let notify = ring.publish();
    if fault.is_none() {
        set_kicks(ring, kicks);
    }
    let outcome = InOrderOutcome {
        // At most `max`, a queue size.
        completed: completed as u32,
        notify,
    };
    (outcome, fault)
}

/// The loop of [`run_in_order`]: returns how many chains it served, and
/// the ring fault that stopped it, if one did. The common chain comes from
/// [`ChainRing::take_three`] with its buffers in place; any other takes
/// the general path, [`serve_other`]. Only the first chain may look at the
/// ring's index again (see `take_three`): the step serves what the last
/// look showed, and a look that would find nothing more is saved.
#[inline(always)]
fn serve_in_order<R: ChainRing>(
    ring: &mut R,
    s: &mut Serving,
    shared: &Shared,
    queue: u16,
    max: usize,
) -> (usize, Option<String>) {
    let ctx = s.ctx(shared);
    let mut served = 0;
    while served < max {
        let (id, skip, len) = match ring.take_three(&mut s.mem, served == 0) {
            Next::Three { id, skip, segs } => {
                let len = match serve_three(&ctx, &mut s.mem, &segs) {
                    Some(len) => len,
                    None => serve_three_general(s, shared, queue, segs),
                };
                (id, skip, len)
            }
            Next::Empty => break,
            Next::Other => match serve_other(ring, s, shared, queue) {
                Ok(Some(done)) => done,
                Ok(None) => break,
                Err(e) => return (served, Some(e)),
            },
        };
        s.recent.push(id);
        ring.push_used(id, skip, len);
        served += 1;
    }
    (served, None)
}

/// Serves a three-buffer chain [`serve_three`] declined (another request
/// type, a limit, a bad address) on the general path. Out of line, so the
/// buffers stay in registers on the short path.
#[cold]
#[inline(never)]
fn serve_three_general(s: &mut Serving, shared: &Shared, queue: u16, segs: [RawSeg; 3]) -> u32 {
    serve(
        &s.ctx(shared),
        &mut s.mem,
        &mut s.scratch,
        &segs,
        None,
        StatusWrite::Honest,
        &mut report_to(shared, queue),
    )
}

/// Takes the next chain with [`ChainRing::pop`] and serves it: `(id, skip,
/// used length)`, `None` when nothing was available, `Err` for a ring
/// fault.
#[inline(never)]
fn serve_other<R: ChainRing>(
    ring: &mut R,
    s: &mut Serving,
    shared: &Shared,
    queue: u16,
) -> Result<Option<(u16, u16, u32)>, String> {
    s.segs.clear();
    let Some(popped) = ring.pop(&mut s.mem, &mut s.segs)? else {
        return Ok(None);
    };
    let ctx = s.ctx(shared);
    let segs = s.segs.as_slice();
    let simple = match popped.fault {
        None => serve_simple(&ctx, &mut s.mem, segs),
        Some(_) => None,
    };
    let len = match simple {
        Some(len) => len,
        None => serve(
            &ctx,
            &mut s.mem,
            &mut s.scratch,
            segs,
            popped.fault,
            StatusWrite::Honest,
            &mut report_to(shared, queue),
        ),
    };
    Ok(Some((popped.id, popped.skip, len)))
}

/// What [`QueueState::idle_round`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Round {
    /// The ring is empty: kicks were left as asked, and the round is over.
    Idle,
    /// The ring has work and no DMA memory was freed since the last step:
    /// [`QueueState::step_in_order`].
    Work,
    /// Some DMA memory was freed since the last step, so the ring was not
    /// looked at: [`QueueState::step_in_order_after_free`].
    Stale,
}

/// See [`QueueState::idle_round`].
#[inline(always)]
fn idle_round<R: ChainRing>(ring: &mut R, kicks: Kicks) -> Round {
    if ring.any_available() {
        return Round::Work;
    }
    set_kicks(ring, kicks);
    Round::Idle
}

/// Leaves kick suppression as `kicks` says.
#[inline(always)]
fn set_kicks<R: ChainRing>(ring: &mut R, kicks: Kicks) {
    match kicks {
        Kicks::Enable => ring.enable_kicks(),
        Kicks::Disable => ring.disable_kicks(),
    }
}

/// Reports `msg` as the fault that stops the queue, and marks it broken.
fn fail(broken: &mut bool, msg: String, report: &mut dyn FnMut(String)) {
    report(format!("{msg}; queue stopped, device needs reset"));
    *broken = true;
}

/// Device-side state of one enabled queue.
pub(crate) struct QueueState {
    setup: RingSetup,
    ring: Ring,
    serving: Serving,
    pending: Vec<Pending>,
    spare: Vec<Vec<RawSeg>>,
    rng: Option<XorShift>,
    broken: bool,
    /// Hostile acts waiting for the next step, first one first.
    acts: VecDeque<Hostile>,
    /// A hostile act left the used side out of step with the driver's chains:
    /// the queue takes, completes and touches nothing until it is reset.
    stopped: bool,
    /// The device has a completion budget
    /// ([`SimConfig::needs_reset_after`]): fixed for the queue's life.
    budgeted: bool,
    /// The queue is stalled ([`crate::SimDevice::stall`]): a copy of the
    /// slot's flag, written with it under the queue's lock, so that it can
    /// count in `general`.
    stalled: bool,
    /// Whether a step must take the general path, kept beside the fields
    /// that decide it ([`Self::must_generalise`]) so that the step of a
    /// queue with nothing special about it tests one byte, not seven
    /// fields. Updated wherever those fields change.
    general: bool,
}

/// The ids of the last `cap` completions, in a ring: what
/// [`QueueState::free_id`] needs, kept at a store per completion.
struct Recent {
    /// One slot per id a queue of the largest size (32768) can have in
    /// flight: completion `n` (counted from 0) went to slot `n % RECENT`,
    /// an index the compiler knows is inside the array, so a push needs
    /// neither a wrap test nor a bounds check.
    ids: Box<[u16; RECENT]>,
    /// Completions recorded, free-running.
    pushed: usize,
    /// How many of the last ids count: the queue size.
    cap: usize,
}

/// Slots of [`Recent`]: the largest queue size (§2.7, §2.8: 32768).
const RECENT: usize = 32768;

impl Recent {
    fn new(cap: u16) -> Recent {
        Recent {
            // Built on the heap: 64 KiB is too much for a test thread's stack.
            ids: vec![0; RECENT]
                .into_boxed_slice()
                .try_into()
                .expect("RECENT entries"),
            pushed: 0,
            cap: usize::from(cap).min(RECENT),
        }
    }

    #[inline]
    fn push(&mut self, id: u16) {
        // Read once: after the store to `ids`, the compiler would load it
        // again, not knowing the two apart.
        let pushed = self.pushed;
        self.ids[pushed % RECENT] = id;
        self.pushed = pushed.wrapping_add(1);
    }

    /// The last `cap` ids recorded (fewer before that many were), newest first.
    fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        let held = self.pushed.min(self.cap);
        (1..=held).map(move |back| self.ids[self.pushed.wrapping_sub(back) % RECENT])
    }
}

impl QueueState {
    /// Checks the ring areas and starts the queue with kicks enabled.
    pub(crate) fn new(
        setup: RingSetup,
        features: Features,
        config: &SimConfig,
    ) -> Result<QueueState, String> {
        let mut mem = MemCheck::new();
        let mut ring = setup.build(&mut mem)?;
        ring.enable_kicks();
        Ok(QueueState {
            setup,
            ring,
            serving: Serving {
                mem,
                scratch: Scratch::default(),
                recent: Recent::new(setup.size),
                segs: Segs::default(),
                features,
                simple_max_data: simple_max_data(config, features),
            },
            pending: Vec::new(),
            spare: Vec::new(),
            rng: match config.order {
                CompletionOrder::InOrder => None,
                CompletionOrder::Shuffled { seed } => Some(XorShift::new(seed)),
            },
            broken: false,
            acts: VecDeque::new(),
            stopped: false,
            budgeted: config.needs_reset_after.is_some(),
            stalled: false,
            general: false,
        }
        .settled())
    }

    /// What its requests need to know about the device.
    pub(crate) fn ctx<'a>(&self, config: &'a SimConfig, disk: &'a Disk) -> ReqCtx<'a> {
        ReqCtx::new(
            config,
            disk,
            self.serving.features,
            self.serving.simple_max_data,
        )
    }

    /// The queue's ring format.
    pub(crate) fn ring_kind(&self) -> RingKind {
        if self.setup.packed {
            RingKind::Packed
        } else {
            RingKind::Split
        }
    }

    /// Queues a hostile act for the next step (the caller checked it applies).
    pub(crate) fn push_act(&mut self, act: Hostile) {
        self.acts.push_back(act);
        self.general = true;
    }

    /// True when the driver has made buffers available the device has not taken.
    pub(crate) fn has_available(&self) -> bool {
        !self.broken && !self.stopped && self.ring.has_available()
    }

    fn fail(&mut self, msg: String, report: &mut dyn FnMut(String)) {
        fail(&mut self.broken, msg, report);
        self.general = true;
    }

    /// True when a step must take the general path: the queue is stalled,
    /// broken or stopped, completes out of order or within a budget, holds requests
    /// back, or has hostile acts queued. `general` caches this.
    fn must_generalise(&self) -> bool {
        self.stalled
            || self.broken
            || self.stopped
            || self.rng.is_some()
            || self.budgeted
            || !self.pending.is_empty()
            || !self.acts.is_empty()
    }

    /// `self` with `general` brought up to date.
    fn settled(mut self) -> QueueState {
        self.general = self.must_generalise();
        self
    }

    /// The round of a polling device that finds the ring empty, when
    /// [`Self::step_in_order`] may take the step: nothing to take or
    /// publish, so it only leaves kicks as `kicks` says ([`Round::Idle`]).
    /// Otherwise it says which in-order step to take: the ring has work
    /// ([`Round::Work`]), or DMA memory was freed since the last step,
    /// which the step looks into first ([`Round::Stale`]).
    #[inline(always)]
    pub(crate) fn idle_round(&mut self, kicks: Kicks) -> Round {
        if !self.serving.mem.is_fresh() {
            return Round::Stale;
        }
        match &mut self.ring {
            Ring::Split(r) => idle_round(r, kicks),
            Ring::Packed(r) => idle_round(r, kicks),
        }
    }

    /// Copies the slot's stall flag (the caller holds the queue's lock and
    /// writes the slot's flag under it too).
    pub(crate) fn set_stalled(&mut self, stalled: bool) {
        self.stalled = stalled;
        self.general = self.must_generalise();
    }

    /// True when [`Self::step_in_order`] may take the step: nothing can
    /// make it hold a request back or lie, a stall included.
    #[inline]
    pub(crate) fn in_order_ready(&self) -> bool {
        debug_assert_eq!(self.general, self.must_generalise());
        !self.general
    }

    /// Takes every available request; unless stalled, performs the queued
    /// hostile acts, then (unless one stopped the queue) completes all
    /// (`drain`, or in-order mode) or a random non-empty subset of the
    /// pending ones within the completion budget, publishes them, sets kick
    /// suppression and decides on a used-buffer notification.
    #[inline(never)]
    pub(crate) fn step(
        &mut self,
        ctx: &ReqCtx<'_>,
        args: StepArgs<'_>,
        report: &mut dyn FnMut(String),
    ) -> StepOutcome {
        let outcome = self.step_general(ctx, args, report);
        self.general = self.must_generalise();
        outcome
    }

    /// [`Self::step`], before `general` is brought up to date.
    fn step_general(
        &mut self,
        ctx: &ReqCtx<'_>,
        args: StepArgs<'_>,
        report: &mut dyn FnMut(String),
    ) -> StepOutcome {
        if self.broken || self.stopped {
            return StepOutcome::default();
        }
        if self.serving.mem.refresh() && self.areas_gone(report) {
            return StepOutcome {
                broke: true,
                ..Default::default()
            };
        }
        let set_kicks = |ring: &mut Ring| match args.kicks {
            Kicks::Enable => ring.enable_kicks(),
            Kicks::Disable => ring.disable_kicks(),
        };
        // With no stall, shuffle, budget, pending request or act, a step with
        // work would be the in-order one, but `step_queue` takes that step
        // itself (`in_order_ready`) and does not call this.
        if self.pending.is_empty() && self.acts.is_empty() && !self.ring.has_available() {
            // Nothing to take, hold, perform or publish: the round of a
            // polling device that finds the ring empty.
            set_kicks(&mut self.ring);
            return StepOutcome::default();
        }
        let broke = self.collect(report);
        if args.stalled {
            // Nothing counts as pending: a stalled queue gives a device thread
            // no reason to spin.
            if !broke {
                set_kicks(&mut self.ring);
            }
            return StepOutcome {
                broke,
                ..Default::default()
            };
        }
        let mut completed = 0;
        if !broke && !self.acts.is_empty() {
            completed = self.perform_acts(ctx, args.budget, args.performed, report);
            if self.stopped {
                // Publish the lie; nothing else is served from now on.
                let notify = self.ring.publish();
                return StepOutcome {
                    completed: completed as u32,
                    notify,
                    ..Default::default()
                };
            }
        }
        let mut n = self.choose(args.drain);
        if let Some(budget) = args.budget {
            n = reserve(budget, n);
        }
        let mut pending = core::mem::take(&mut self.pending);
        for p in pending.drain(..n) {
            let s = self.serve(ctx, p, StatusWrite::Honest, report);
            self.ring.push_used(s.id, s.skip, s.len);
        }
        self.pending = pending;
        let notify = self.ring.publish();
        if !broke {
            set_kicks(&mut self.ring);
        }
        StepOutcome {
            // Both bounded by the queue size (acts complete at most one each).
            completed: (completed + n) as u32,
            notify,
            pending: self.pending.len() as u32,
            broke,
        }
    }

    /// [`Self::step`] when nothing can make it hold a request back or lie
    /// ([`Self::in_order_ready`], no stall, no completion budget), after
    /// [`Self::idle_round`] found work ([`Round::Work`]): each chain is
    /// served as it is taken, with no `Pending` entry, and its used element
    /// written at once; the batch is published once at the end, as the
    /// general path does. What the driver sees is the same: every request
    /// available at the step's look at the ring completed in ring order.
    /// Takes at most a ring's worth of chains, so a driver that keeps the
    /// ring full cannot keep one step going. A ring fault is reported here,
    /// and sets DEVICE_NEEDS_RESET.
    ///
    /// Out of line on purpose (`step_kicks`, one copy per kick mode):
    /// every caller (the inline steps, the device threads' loops) then runs
    /// one of two copies, whose serving loop keeps its helpers inlined;
    /// inlined into a caller, the loop came out up to a third longer,
    /// differently for each.
    ///
    /// It takes the device and the queue's number rather than a request
    /// context and a report closure built by the caller, and builds the
    /// closure only on the paths that report: at one request per step,
    /// building those on every step cost more than the request's own
    /// address checks.
    ///
    /// Compiled once per `kicks`: a polling device's copy then keeps no
    /// argument across the loop (spilled, at one request per step) to
    /// decide kick suppression at its end.
    #[inline(always)]
    pub(crate) fn step_in_order(
        &mut self,
        shared: &Shared,
        queue: u16,
        kicks: Kicks,
    ) -> InOrderOutcome {
        match kicks {
            Kicks::Enable => self.step_kicks::<true>(shared, queue),
            Kicks::Disable => self.step_kicks::<false>(shared, queue),
        }
    }

    /// [`Self::step_in_order`] leaving kicks enabled (`ENABLE`) or not.
    #[inline(never)]
    fn step_kicks<const ENABLE: bool>(&mut self, shared: &Shared, queue: u16) -> InOrderOutcome {
        let kicks = if ENABLE {
            Kicks::Enable
        } else {
            Kicks::Disable
        };
        let max = usize::from(self.setup.size);
        let s = &mut self.serving;
        let (outcome, fault) = match &mut self.ring {
            Ring::Split(r) => run_in_order(r, s, shared, queue, max, kicks),
            Ring::Packed(r) => run_in_order(r, s, shared, queue, max, kicks),
        };
        if let Some(e) = fault {
            self.fail_in_order(shared, queue, e);
        }
        outcome
    }

    /// [`Self::step_in_order`] after [`Round::Stale`]: drops the address
    /// cache and checks the ring areas again before the step (a queue
    /// whose areas were freed fails, and the step ends there).
    #[cold]
    #[inline(never)]
    pub(crate) fn step_in_order_after_free(
        &mut self,
        shared: &Shared,
        queue: u16,
        kicks: Kicks,
    ) -> InOrderOutcome {
        if self.serving.mem.refresh() && self.areas_gone(&mut report_to(shared, queue)) {
            shared.set_needs_reset();
            return InOrderOutcome::default();
        }
        self.step_in_order(shared, queue, kicks)
    }

    /// A ring fault stopped [`Self::step_in_order`]: reports it, fails the
    /// queue and the device.
    #[cold]
    #[inline(never)]
    fn fail_in_order(&mut self, shared: &Shared, queue: u16, msg: String) {
        self.fail(msg, &mut report_to(shared, queue));
        shared.set_needs_reset();
    }

    /// After some DMA memory was freed: checks the ring areas again; true
    /// (reported, queue failed) when they are no longer DMA memory.
    #[cold]
    #[inline(never)]
    fn areas_gone(&mut self, report: &mut dyn FnMut(String)) -> bool {
        match self.setup.recheck(&mut self.serving.mem, &mut self.ring) {
            Ok(()) => false,
            Err(e) => {
                self.fail(
                    format!("ring memory was freed while the queue is enabled: {e}"),
                    report,
                );
                true
            }
        }
    }

    /// Serves `p` (its used element is the caller's to write) and remembers its id.
    fn serve(
        &mut self,
        ctx: &ReqCtx<'_>,
        p: Pending,
        status: StatusWrite,
        report: &mut dyn FnMut(String),
    ) -> Served {
        let len = serve(
            ctx,
            &mut self.serving.mem,
            &mut self.serving.scratch,
            &p.segs,
            p.fault,
            status,
            report,
        );
        let mut segs = p.segs;
        segs.clear();
        self.spare.push(segs);
        self.serving.recent.push(p.id);
        Served {
            id: p.id,
            skip: p.skip,
            len,
        }
    }

    /// Performs queued acts in order until one has to wait or one stops the
    /// queue (acts queued behind that one are dropped). Returns the requests
    /// they completed, which also count against `budget`.
    fn perform_acts(
        &mut self,
        ctx: &ReqCtx<'_>,
        budget: Option<&AtomicU64>,
        performed: &mut dyn FnMut(Hostile),
        report: &mut dyn FnMut(String),
    ) -> usize {
        let mut completed = 0;
        while let Some(&act) = self.acts.front() {
            let Some(n) = self.perform(ctx, act, report) else {
                break;
            };
            self.acts.pop_front();
            performed(act);
            completed += n;
            if let Some(budget) = budget {
                // Relaxed: as in `reserve`; acts are not held back by the budget.
                let _ = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    Some(left.saturating_sub(n as u64))
                });
            }
            if act.stops_queue() {
                self.stopped = true;
                self.acts.clear();
                break;
            }
        }
        completed
    }

    /// Performs one act; `None` when it has to wait (no pending request, or no
    /// free id), else the number of requests it completed.
    fn perform(
        &mut self,
        ctx: &ReqCtx<'_>,
        act: Hostile,
        report: &mut dyn FnMut(String),
    ) -> Option<usize> {
        let size = self.setup.size;
        match act {
            Hostile::UsedIdOutOfRange => {
                self.push_lie(u32::from(size), 0);
                return Some(0);
            }
            Hostile::UsedIdNotInFlight => {
                let id = self.free_id()?;
                self.push_lie(u32::from(id), 0);
                return Some(0);
            }
            Hostile::UsedIndexJump => {
                if let Ring::Split(r) = &mut self.ring {
                    // More than can ever be in flight; size <= 32768, so no overflow.
                    r.jump_used(size + 1);
                }
                return Some(0);
            }
            Hostile::RandomUsed { seed } => {
                let mut rng = XorShift::new(seed);
                let (id, len, flags) = (rng.next(), rng.next(), rng.next());
                match &mut self.ring {
                    Ring::Split(r) => r.push_used_raw(id as u32, len as u32),
                    Ring::Packed(r) => r.push_used_flags(id as u16, 1, len as u32, flags as u16),
                }
                return Some(0);
            }
            _ => {}
        }
        if self.pending.is_empty() {
            return None;
        }
        let p = self.pending.remove(0);
        let writable = writable_bytes(&p.segs);
        let status = match act {
            Hostile::GarbageStatus(byte) => StatusWrite::Replace(byte),
            Hostile::StatusNotWritten => StatusWrite::Skip,
            _ => StatusWrite::Honest,
        };
        let s = self.serve(ctx, p, status, report);
        let packed_flags = match (&self.ring, act) {
            (Ring::Packed(r), Hostile::WrongWrap) => Some(used_flags(!r.used_wrap(), s.len)),
            (Ring::Packed(r), Hostile::GarbageUsedFlags) => {
                let random = XorShift::new(0x6761_7262_6167_6500 ^ u64::from(s.id)).next();
                Some(garbage_flags(r.used_wrap(), random as u16))
            }
            _ => None,
        };
        match packed_flags {
            Some(flags) => {
                if let Ring::Packed(r) = &mut self.ring {
                    r.push_used_flags(s.id, s.skip, s.len, flags);
                }
            }
            None if act == Hostile::RepeatUsedId => {
                self.ring.push_used(s.id, s.skip, s.len);
                self.push_lie(u32::from(s.id), s.len);
            }
            None if act == Hostile::UsedLenTooLong => {
                self.ring
                    .push_used(s.id, s.skip, writable.saturating_add(4096));
            }
            // GarbageStatus and StatusNotWritten lied in the status byte.
            None => self.ring.push_used(s.id, s.skip, s.len),
        }
        Some(1)
    }

    /// Writes a used element/descriptor for `id` that matches no chain the
    /// device is done with (packed: at the next used slot with correct flags,
    /// skipping one slot; ids above 16 bits are cut to 0xffff).
    fn push_lie(&mut self, id: u32, len: u32) {
        match &mut self.ring {
            Ring::Split(r) => r.push_used_raw(id, len),
            Ring::Packed(r) => r.push_used(u16::try_from(id).unwrap_or(u16::MAX), 1, len),
        }
    }

    /// The lowest id below the queue size that is neither pending nor among
    /// the last `size` completions, so the driver cannot have it in flight.
    fn free_id(&self) -> Option<u16> {
        let mut taken = vec![false; usize::from(self.setup.size)];
        let ids = self
            .pending
            .iter()
            .map(|p| p.id)
            .chain(self.serving.recent.iter());
        for id in ids {
            if let Some(t) = taken.get_mut(usize::from(id)) {
                *t = true;
            }
        }
        taken.iter().position(|&t| !t).map(|i| i as u16)
    }

    /// Moves every available chain into `pending`; true on a ring fault.
    fn collect(&mut self, report: &mut dyn FnMut(String)) -> bool {
        loop {
            self.serving.segs.clear();
            match self.ring.pop(&mut self.serving.mem, &mut self.serving.segs) {
                Ok(Some(p)) => {
                    let mut segs = self.spare.pop().unwrap_or_default();
                    segs.extend_from_slice(self.serving.segs.as_slice());
                    self.pending.push(Pending {
                        id: p.id,
                        skip: p.skip,
                        segs,
                        fault: p.fault,
                    });
                }
                Ok(None) => return false,
                Err(e) => {
                    self.fail(e, report);
                    return true;
                }
            }
        }
    }

    /// Orders `pending` so that its first `n` entries complete now; returns `n`.
    fn choose(&mut self, drain: bool) -> usize {
        let total = self.pending.len();
        let Some(rng) = self.rng.as_mut() else {
            return total;
        };
        if total == 0 {
            return 0;
        }
        let n = if drain { total } else { 1 + rng.below(total) };
        if self.serving.features.contains(Features::IN_ORDER) {
            // §2.7.9 / §2.8.11: buffers are used in the order they were made available.
            return n;
        }
        for i in 0..n {
            let j = i + rng.below(total - i);
            self.pending.swap(i, j);
        }
        n
    }
}
