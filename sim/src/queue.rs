//! One device queue: collects available requests, serves them, completes them
//! in the configured order and decides on notifications.

use virtio_blk_mq::Features;

use crate::config::CompletionOrder;
use crate::mem::MemCheck;
use crate::request::{serve, RawSeg, ReqCtx, Scratch};
use crate::ring::{Ring, RingSetup};

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

/// What one step did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StepOutcome {
    /// Requests completed.
    pub(crate) completed: usize,
    /// A used-buffer notification is due.
    pub(crate) notify: bool,
    /// Requests held back for a later step.
    pub(crate) pending: usize,
    /// The ring hit a fault it cannot recover from in this step.
    pub(crate) broke: bool,
}

/// Device-side state of one enabled queue.
pub(crate) struct QueueState {
    setup: RingSetup,
    ring: Ring,
    features: Features,
    mem: MemCheck,
    pending: Vec<Pending>,
    spare: Vec<Vec<RawSeg>>,
    scratch: Scratch,
    rng: Option<XorShift>,
    broken: bool,
}

impl QueueState {
    /// Checks the ring areas and starts the queue with kicks enabled.
    pub(crate) fn new(
        setup: RingSetup,
        features: Features,
        order: CompletionOrder,
    ) -> Result<QueueState, String> {
        let mut mem = MemCheck::new();
        let mut ring = setup.build(&mut mem)?;
        ring.enable_kicks();
        Ok(QueueState {
            setup,
            ring,
            features,
            mem,
            pending: Vec::new(),
            spare: Vec::new(),
            scratch: Scratch::default(),
            rng: match order {
                CompletionOrder::InOrder => None,
                CompletionOrder::Shuffled { seed } => Some(XorShift::new(seed)),
            },
            broken: false,
        })
    }

    /// Negotiated features the queue runs with.
    pub(crate) fn features(&self) -> Features {
        self.features
    }

    /// True when the driver has made buffers available the device has not taken.
    pub(crate) fn has_available(&self) -> bool {
        !self.broken && self.ring.has_available()
    }

    fn fail(&mut self, msg: String, report: &mut dyn FnMut(String)) {
        report(format!("{msg}; queue stopped, device needs reset"));
        self.broken = true;
    }

    /// Takes every available request, completes all (`drain`, or in-order
    /// mode) or a random non-empty subset of the pending ones, publishes them,
    /// sets kick suppression and decides on a used-buffer notification.
    pub(crate) fn step(
        &mut self,
        ctx: &ReqCtx<'_>,
        kicks: Kicks,
        drain: bool,
        report: &mut dyn FnMut(String),
    ) -> StepOutcome {
        if self.broken {
            return StepOutcome::default();
        }
        if self.mem.stale() {
            if let Err(e) = self.setup.recheck(&mut self.mem, &mut self.ring) {
                self.fail(
                    format!("ring memory was freed while the queue is enabled: {e}"),
                    report,
                );
                return StepOutcome {
                    broke: true,
                    ..Default::default()
                };
            }
        }
        let broke = self.collect(report);
        let n = self.choose(drain);
        for p in self.pending.drain(..n) {
            let len = serve(
                ctx,
                &mut self.mem,
                &mut self.scratch,
                &p.segs,
                p.fault,
                report,
            );
            self.ring.push_used(p.id, p.skip, len);
            let mut segs = p.segs;
            segs.clear();
            self.spare.push(segs);
        }
        let notify = self.ring.publish();
        if !broke {
            match kicks {
                Kicks::Enable => self.ring.enable_kicks(),
                Kicks::Disable => self.ring.disable_kicks(),
            }
        }
        StepOutcome {
            completed: n,
            notify,
            pending: self.pending.len(),
            broke,
        }
    }

    /// Moves every available chain into `pending`; true on a ring fault.
    fn collect(&mut self, report: &mut dyn FnMut(String)) -> bool {
        loop {
            let mut segs = self.spare.pop().unwrap_or_default();
            match self.ring.pop(&mut self.mem, &mut segs) {
                Ok(Some(p)) => self.pending.push(Pending {
                    id: p.id,
                    skip: p.skip,
                    segs,
                    fault: p.fault,
                }),
                Ok(None) => {
                    self.spare.push(segs);
                    return false;
                }
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
        if self.features.contains(Features::IN_ORDER) {
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
