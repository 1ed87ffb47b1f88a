//! Which request comes next: direction and block, within one queue's region.

use alloc::vec;
use alloc::vec::Vec;

/// Direction of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Device to memory.
    Read,
    /// Memory to device.
    Write,
}

impl Dir {
    /// fio's name for the direction.
    pub fn name(self) -> &'static str {
        match self {
            Dir::Read => "read",
            Dir::Write => "write",
        }
    }
}

/// The I/O pattern, named as fio names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rw {
    /// Random reads.
    Randread,
    /// Random writes.
    Randwrite,
    /// Random mix of reads and writes (`rwmixread`).
    Randrw,
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
}

impl Rw {
    /// Every pattern, for parsers and messages.
    pub const ALL: [Rw; 5] = [Rw::Randread, Rw::Randwrite, Rw::Randrw, Rw::Read, Rw::Write];

    /// fio's name.
    pub fn name(self) -> &'static str {
        match self {
            Rw::Randread => "randread",
            Rw::Randwrite => "randwrite",
            Rw::Randrw => "randrw",
            Rw::Read => "read",
            Rw::Write => "write",
        }
    }

    /// The pattern fio calls `name`.
    pub fn from_name(name: &str) -> Option<Rw> {
        Rw::ALL.into_iter().find(|rw| rw.name() == name)
    }

    /// Offsets are drawn at random (otherwise they advance sequentially).
    pub fn random(self) -> bool {
        matches!(self, Rw::Randread | Rw::Randwrite | Rw::Randrw)
    }

    /// Percentage of requests that are reads.
    pub fn read_percent(self, rwmixread: u8) -> u8 {
        match self {
            Rw::Randread | Rw::Read => 100,
            Rw::Randwrite | Rw::Write => 0,
            Rw::Randrw => rwmixread,
        }
    }
}

/// A small, fast deterministic PRNG (xorshift64*), one per queue.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded for queue `queue` (the same queue always draws the
    /// same sequence, so runs are repeatable).
    pub fn for_queue(queue: usize) -> Rng {
        Rng(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(queue as u64 + 1) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..bound` (`bound` > 0), by multiply-shift: no division.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// Draws directions and blocks for one queue.
pub struct Picker {
    rng: Rng,
    blocks: u64,
    random: bool,
    read_percent: u8,
    cursor: u64,
    /// With verification: blocks with a request in flight, never handed out twice.
    busy: Option<Vec<bool>>,
    /// Blocks tried past a busy one before giving up for this round.
    max_probe: u64,
}

impl Picker {
    /// A picker over `blocks` blocks (numbered from 0 within the region).
    /// `exclusive` keeps a busy map so no two requests in flight share a block;
    /// `depth` is the most requests that can be in flight at once.
    pub fn new(
        queue: usize,
        blocks: u64,
        random: bool,
        read_percent: u8,
        exclusive: bool,
        depth: u16,
    ) -> Picker {
        assert!(blocks > 0, "a region holds at least one block");
        Picker {
            rng: Rng::for_queue(queue),
            blocks,
            random,
            read_percent,
            cursor: 0,
            busy: exclusive
                .then(|| vec![false; usize::try_from(blocks).expect("region fits in memory")]),
            max_probe: blocks.min(u64::from(depth) + 1),
        }
    }

    /// The next request, or `None` when every block it may use is busy.
    /// With a busy map the block is marked busy until [`Picker::release`].
    #[inline]
    pub fn pick(&mut self) -> Option<(Dir, u64)> {
        let dir = match self.read_percent {
            100 => Dir::Read,
            0 => Dir::Write,
            percent if self.rng.below(100) < u64::from(percent) => Dir::Read,
            _ => Dir::Write,
        };
        let first = if self.random {
            self.rng.below(self.blocks)
        } else {
            let block = self.cursor;
            self.cursor = (self.cursor + 1) % self.blocks;
            block
        };
        let Some(busy) = self.busy.as_mut() else {
            return Some((dir, first));
        };
        let block = (0..self.max_probe)
            .map(|step| (first + step) % self.blocks)
            .find(|&block| !busy[block as usize])?;
        busy[block as usize] = true;
        if !self.random {
            // Sequential: carry on after the block actually used.
            self.cursor = (block + 1) % self.blocks;
        }
        Some((dir, block))
    }

    /// The request on `block` completed.
    #[inline]
    pub fn release(&mut self, block: u64) {
        if let Some(busy) = self.busy.as_mut() {
            busy[block as usize] = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn random_blocks_stay_in_the_region() {
        let mut picker = Picker::new(0, 10, true, 50, false, 32);
        for _ in 0..10_000 {
            let (_, block) = picker.pick().unwrap();
            assert!(block < 10);
        }
    }

    #[test]
    fn sequential_blocks_advance_and_wrap() {
        let mut picker = Picker::new(1, 3, false, 100, false, 4);
        let blocks: Vec<u64> = (0..5).map(|_| picker.pick().unwrap().1).collect();
        assert_eq!(blocks, [0, 1, 2, 0, 1]);
    }

    #[test]
    fn the_mix_follows_rwmixread() {
        let mut picker = Picker::new(2, 1000, true, 70, false, 32);
        let reads = (0..100_000)
            .filter(|_| picker.pick().unwrap().0 == Dir::Read)
            .count();
        assert!((65_000..75_000).contains(&reads), "{reads} reads");
        let mut reads_only = Picker::new(2, 1000, true, 100, false, 32);
        assert!((0..1000).all(|_| reads_only.pick().unwrap().0 == Dir::Read));
    }

    #[test]
    fn a_busy_block_is_never_handed_out_twice() {
        let mut picker = Picker::new(3, 4, true, 0, true, 8);
        let mut held: Vec<u64> = (0..4).map(|_| picker.pick().unwrap().1).collect();
        held.sort_unstable();
        assert_eq!(held, [0, 1, 2, 3]);
        assert_eq!(picker.pick(), None, "every block is busy");
        picker.release(2);
        assert_eq!(picker.pick(), Some((Dir::Write, 2)));
    }
}
