//! What the kext asks of each device it takes.

use virtio_blk_mq::{Config, Mode};

/// Empty ring checks before a hybrid queue arms its interrupt and sleeps.
pub const DEFAULT_SPIN_BUDGET: u32 = 256;

/// The kext's settings, fixed at [`crate::init_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
        }
    }
}

impl KextConfig {
    /// Queues to ask for on a machine with `cpus` CPUs.
    pub fn queues_for(&self, cpus: usize) -> u16 {
        match self.queues {
            Some(queues) => queues.max(1),
            None => u16::try_from(cpus.saturating_add(1)).unwrap_or(u16::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_queue_per_cpu_plus_one_by_default() {
        let config = KextConfig::default();
        assert_eq!(config.driver.mode, Mode::Poll);
        assert_eq!(config.queues_for(1), 2);
        assert_eq!(config.queues_for(4), 5);
        let fixed = KextConfig {
            queues: Some(0),
            ..config
        };
        assert_eq!(fixed.queues_for(4), 1);
    }
}
