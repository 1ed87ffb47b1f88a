//! What the kext asks of each device it takes.

use core::fmt;

use virtio_blk_mq::{Config, Mode};

/// Empty ring checks before a hybrid queue arms its interrupt and sleeps.
pub const DEFAULT_SPIN_BUDGET: u32 = 256;

/// The CPUs the kernel runs on. Kerla's kext API has no CPU query (Kerla
/// runs on one CPU), so the kernel says it when it loads the kext:
/// [`Cpus::ONE`] for Kerla today; a kernel with SMP passes its count and
/// a function returning the calling CPU's index.
#[derive(Clone, Copy)]
pub struct Cpus {
    /// CPUs running (at least 1).
    pub count: usize,
    /// The calling CPU's index, `0..count`.
    pub current: fn() -> usize,
}

fn cpu_zero() -> usize {
    0
}

impl Cpus {
    /// One CPU, index 0: Kerla today.
    pub const ONE: Cpus = Cpus {
        count: 1,
        current: cpu_zero,
    };

    /// CPUs running, at least 1.
    pub fn count(&self) -> usize {
        self.count.max(1)
    }

    /// The calling CPU's index.
    pub fn current(&self) -> usize {
        (self.current)()
    }
}

impl fmt::Debug for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cpus({})", self.count)
    }
}

/// The kext's settings, fixed at [`crate::init_with`].
#[derive(Clone, Copy, Debug)]
pub struct KextConfig {
    /// The driver's configuration: features, ring size, segments, and the
    /// mode ([`Mode::Poll`] by default; [`Mode::Hybrid`] sleeps through
    /// `attach_irq` when idle). Its `queues` field is ignored: see
    /// [`KextConfig::queues`].
    pub driver: Config,
    /// Queues to ask each device for. `None`: one per CPU plus one for the
    /// block driver, so that the synchronous path never waits for a CPU's
    /// own queue (the device's `num_queues` caps it).
    pub queues: Option<u16>,
    /// Hybrid mode: empty checks before sleeping.
    pub spin_budget: u32,
    /// The CPUs queues are set up for.
    pub cpus: Cpus,
}

impl Default for KextConfig {
    fn default() -> Self {
        KextConfig {
            driver: Config {
                mode: Mode::Poll,
                ..Config::default()
            },
            queues: None,
            spin_budget: DEFAULT_SPIN_BUDGET,
            cpus: Cpus::ONE,
        }
    }
}

impl KextConfig {
    /// Queues to ask each device for.
    pub fn queues_wanted(&self) -> u16 {
        match self.queues {
            Some(queues) => queues.max(1),
            None => u16::try_from(self.cpus.count().saturating_add(1)).unwrap_or(u16::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu_three() -> usize {
        3
    }

    #[test]
    fn one_queue_per_cpu_plus_one_by_default() {
        let config = KextConfig::default();
        assert_eq!(config.driver.mode, Mode::Poll);
        assert_eq!(config.queues_wanted(), 2, "Kerla: one CPU, one spare");
        let four = KextConfig {
            cpus: Cpus {
                count: 4,
                current: cpu_three,
            },
            ..config
        };
        assert_eq!(four.queues_wanted(), 5);
        assert_eq!(four.cpus.current(), 3);
        let fixed = KextConfig {
            queues: Some(0),
            ..four
        };
        assert_eq!(fixed.queues_wanted(), 1);
        let none = Cpus {
            count: 0,
            current: cpu_zero,
        };
        assert_eq!(none.count(), 1);
    }
}
