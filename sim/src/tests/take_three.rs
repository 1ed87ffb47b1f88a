//! `take_three`, the rings' short way to take the common chain, against
//! `pop`, the general walk: over seeded random rings (well-formed chains,
//! each often broken in one place), two device rings read the same memory,
//! one through `take_three` (and `pop` whenever it declines), the other
//! through `pop` alone. They must take the same chains with the same
//! buffers, ids and slot counts, and meet the same faults.

use core::sync::atomic::Ordering;

use virtio_blk_mq::spec::{PackedDesc, PackedDescFlags, PackedLayout, SplitDescFlags, SplitLayout};

use super::Dma;
use crate::mem::{MemCheck, PackedAreas, SplitAreas};
use crate::packed::PackedRing;
use crate::request::{RawSeg, Segs};
use crate::ring::{ChainRing, Next, Popped};
use crate::split::SplitRing;

/// Seeds per ring size.
const SEEDS: u64 = 3000;

/// Small seeded generator (xorshift64*), so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True once in `n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
}

fn seg_tuple(s: &RawSeg) -> (u64, u32, bool) {
    (s.addr, s.len, s.write)
}

/// What one way of taking a chain found, in comparable form.
type Took = Result<Option<(u16, u16, Option<String>, Vec<(u64, u32, bool)>)>, String>;

fn by_pop<R: ChainRing>(ring: &mut R, mem: &mut MemCheck) -> Took {
    let mut segs = Segs::default();
    let popped = ring.pop(mem, &mut segs)?;
    Ok(popped.map(|Popped { id, skip, fault }| {
        let segs = segs.as_slice().iter().map(seg_tuple).collect();
        (id, skip, fault, segs)
    }))
}

/// `take_three`, falling back to `pop` as the queue's loop does; also
/// counts what `take_three` answered.
fn by_take_three<R: ChainRing>(ring: &mut R, mem: &mut MemCheck, seen: &mut [u32; 3]) -> Took {
    match ring.take_three(mem, true) {
        Next::Three { id, skip, segs } => {
            seen[0] += 1;
            Ok(Some((id, skip, None, segs.iter().map(seg_tuple).collect())))
        }
        Next::Empty => {
            seen[1] += 1;
            Ok(None)
        }
        Next::Other => {
            seen[2] += 1;
            by_pop(ring, mem)
        }
    }
}

/// Takes chains both ways until the ring is empty or faults, marking each
/// used on both rings; true when both stopped on an empty ring.
fn compare<R: ChainRing>(
    fast: &mut R,
    fast_mem: &mut MemCheck,
    general: &mut R,
    general_mem: &mut MemCheck,
    seen: &mut [u32; 3],
    what: &str,
) -> bool {
    loop {
        let a = by_take_three(fast, fast_mem, seen);
        let b = by_pop(general, general_mem);
        assert_eq!(a, b, "{what}");
        match a {
            Ok(Some((id, skip, _, _))) => {
                fast.push_used(id, skip, 0);
                general.push_used(id, skip, 0);
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

/// Flags of a split descriptor: the intended ones, or now and then any.
fn split_flags(rng: &mut Rng, intended: SplitDescFlags) -> SplitDescFlags {
    if rng.one_in(12) {
        SplitDescFlags::from_bits_retain(rng.pick(&[0, 1, 2, 3, 4, 5, 6, 7, 0x8001, 0xffff]))
    } else {
        intended
    }
}

/// A buffer length: the common ones, or now and then an odd one.
fn buffer_len(rng: &mut Rng, intended: u32) -> u32 {
    if rng.one_in(12) {
        rng.pick(&[0, 1, 15, 16, 17, 48, 512, 4096, u32::MAX])
    } else {
        intended
    }
}

/// Writes a split descriptor (or table entry) at `d`.
fn put_split(
    d: &virtio_blk_mq::spec::SplitDesc,
    addr: u64,
    len: u32,
    flags: SplitDescFlags,
    next: u16,
) {
    d.addr.store(addr.to_le(), Ordering::Relaxed);
    d.len.store(len.to_le(), Ordering::Relaxed);
    d.flags.store(flags.bits().to_le(), Ordering::Relaxed);
    d.next.store(next.to_le(), Ordering::Relaxed);
}

/// One seeded split ring: up to `size` chains, each a request of three
/// buffers (direct, or through an indirect table) or of some other length,
/// each now and then broken in one place.
fn split_case(size: u16, seed: u64, seen: &mut [u32; 3]) {
    let mut rng = Rng::new(seed);
    let layout = SplitLayout::new(size);
    let ring = Dma::new(layout.total);
    // Indirect tables, 128 bytes apart; now and then room for one whose
    // entry count does not fit 16 bits.
    let huge = rng.one_in(40);
    let tables = Dma::new(if huge { 16 * 65536 + 64 } else { 4096 });
    let base = ring.addr();
    let desc =
        |i: u16| -> &virtio_blk_mq::spec::SplitDesc { ring.at(layout.desc + 16 * usize::from(i)) };
    let any_next = |rng: &mut Rng, n: u16| rng.below(u64::from(n) + 2) as u16;
    let chains = rng.below(u64::from(size) + 1) as u16;
    // Descriptors are handed out as a driver would, from a shuffled free
    // list, and reused at random once it runs dry.
    let mut free: Vec<u16> = (0..size).collect();
    for i in (1..free.len()).rev() {
        free.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut take = |rng: &mut Rng| {
        free.pop()
            .unwrap_or_else(|| rng.below(u64::from(size)) as u16)
    };
    for c in 0..chains {
        let head = take(&mut rng);
        let (header, status) = (SplitDescFlags::empty(), SplitDescFlags::WRITE);
        let data = if rng.one_in(2) {
            SplitDescFlags::WRITE
        } else {
            SplitDescFlags::empty()
        };
        if rng.one_in(3) {
            // Through an indirect table.
            let slot = rng.below(32) as usize;
            let entries = rng.pick(&[3u16, 3, 3, 2, 4]);
            let mut len = 16 * u32::from(entries);
            if rng.one_in(10) {
                len = rng.pick(&[0, 47, 49, 16 * 65536 + 48, 16 * 65536 + 32]);
            }
            let slot = if huge && len > 65536 { 0 } else { slot };
            let addr = if rng.one_in(15) {
                0x1000
            } else {
                tables.addr() + 128 * slot as u64
            };
            for e in 0..entries {
                let last = e + 1 == entries;
                let intended = match e {
                    0 => header,
                    _ if last => status,
                    _ => data,
                } | if last {
                    SplitDescFlags::empty()
                } else {
                    SplitDescFlags::NEXT
                };
                let next = if rng.one_in(10) {
                    any_next(&mut rng, entries)
                } else {
                    e + 1
                };
                put_split(
                    tables.at(128 * slot + 16 * usize::from(e)),
                    0x10_0000 * u64::from(c) + u64::from(e),
                    buffer_len(&mut rng, [16, 4096, 1, 512][usize::from(e.min(3))]),
                    split_flags(&mut rng, intended),
                    next,
                );
            }
            put_split(
                desc(head),
                addr,
                len,
                split_flags(&mut rng, SplitDescFlags::INDIRECT),
                0,
            );
        } else {
            let n = rng.pick(&[3u16, 3, 3, 3, 1, 2, 4]);
            let mut at = head;
            for k in 0..n {
                let last = k + 1 == n;
                let intended = match k {
                    0 => header,
                    _ if last => status,
                    _ => data,
                } | if last {
                    SplitDescFlags::empty()
                } else {
                    SplitDescFlags::NEXT
                };
                let next = if rng.one_in(12) {
                    any_next(&mut rng, size)
                } else if last {
                    0
                } else {
                    take(&mut rng)
                };
                put_split(
                    desc(at),
                    0x10_0000 * u64::from(c) + u64::from(k),
                    buffer_len(&mut rng, [16, 4096, 1, 512][usize::from(k.min(3))]),
                    split_flags(&mut rng, intended),
                    next,
                );
                at = next;
            }
        }
        let entry = if rng.one_in(20) {
            size + rng.below(3) as u16
        } else {
            head
        };
        let word: &core::sync::atomic::AtomicU16 = ring.at(layout.avail + 4 + 2 * usize::from(c));
        word.store(entry.to_le(), Ordering::Relaxed);
    }
    let idx = if rng.one_in(20) { size + 1 } else { chains };
    let word: &core::sync::atomic::AtomicU16 = ring.at(layout.avail + 2);
    word.store(idx.to_le(), Ordering::Release);

    let indirect = !rng.one_in(5);
    let new_ring = |mem: &mut MemCheck| {
        let areas = SplitAreas::new(
            mem,
            size,
            base + layout.desc as u64,
            base + layout.avail as u64,
            base + layout.used as u64,
        )
        .expect("ring areas in DMA memory");
        SplitRing::new(areas, size, false, indirect)
    };
    let (mut fast_mem, mut general_mem) = (MemCheck::new(), MemCheck::new());
    let mut fast = new_ring(&mut fast_mem);
    let mut general = new_ring(&mut general_mem);
    let what = format!("split ring of {size}, seed {seed}");
    compare(
        &mut fast,
        &mut fast_mem,
        &mut general,
        &mut general_mem,
        seen,
        &what,
    );
}

#[test]
fn split_take_three_takes_what_pop_takes() {
    let mut seen = [0u32; 3];
    for size in [2u16, 4, 8, 16] {
        for seed in 0..SEEDS {
            split_case(size, seed, &mut seen);
        }
    }
    // Every answer was exercised, the short one most.
    let [three, empty, other] = seen;
    assert!(three > 5000 && empty > 1000 && other > 5000, "{seen:?}");
}

/// Writes a packed descriptor (or table entry) at `d`.
fn put_packed(d: &PackedDesc, addr: u64, len: u32, id: u16, flags: PackedDescFlags) {
    d.addr.store(addr.to_le(), Ordering::Relaxed);
    d.len.store(len.to_le(), Ordering::Relaxed);
    d.id.store(id.to_le(), Ordering::Relaxed);
    d.flags.store(flags.bits().to_le(), Ordering::Relaxed);
}

/// Flags of a packed descriptor made available in the lap of `wrap`: the
/// intended ones, or now and then others (wrong lap bits, any bits).
fn packed_flags(rng: &mut Rng, intended: PackedDescFlags, wrap: bool) -> PackedDescFlags {
    let lap = if wrap {
        PackedDescFlags::AVAIL
    } else {
        PackedDescFlags::USED
    };
    match rng.below(30) {
        0 => intended | PackedDescFlags::AVAIL | PackedDescFlags::USED,
        1 => intended,
        2 => PackedDescFlags::from_bits_retain(rng.next() as u16),
        3 => intended | lap | PackedDescFlags::INDIRECT,
        _ => intended | lap,
    }
}

/// One seeded packed ring: rounds of chains, each round at most a ring's
/// worth and taken both ways before the next, so chains start at every
/// position of both laps; each chain now and then broken in one place.
fn packed_case(size: u16, seed: u64, seen: &mut [u32; 3]) {
    let mut rng = Rng::new(seed);
    let layout = PackedLayout::new(size);
    let ring = Dma::new(layout.total);
    let tables = Dma::new(4096);
    let base = ring.addr();
    let desc = |i: u16| -> &PackedDesc { ring.at(layout.desc + 16 * usize::from(i)) };
    let indirect = !rng.one_in(5);
    let new_ring = |mem: &mut MemCheck| {
        let areas = PackedAreas::new(
            mem,
            size,
            base + layout.desc as u64,
            base + layout.driver_event as u64,
            base + layout.device_event as u64,
        )
        .expect("ring areas in DMA memory");
        PackedRing::new(areas, size, false, indirect)
    };
    let (mut fast_mem, mut general_mem) = (MemCheck::new(), MemCheck::new());
    let mut fast = new_ring(&mut fast_mem);
    let mut general = new_ring(&mut general_mem);
    let (mut pos, mut wrap) = (0u16, true);
    for round in 0..6 {
        let mut room = size;
        while room > 0 {
            let (header, status) = (PackedDescFlags::empty(), PackedDescFlags::WRITE);
            let data = if rng.one_in(2) {
                PackedDescFlags::WRITE
            } else {
                PackedDescFlags::empty()
            };
            let id = rng.below(u64::from(size) + 1) as u16;
            let tag = 0x10_0000 * u64::from(round * 100 + room);
            if rng.one_in(3) {
                let slot = rng.below(32) as usize;
                let entries = rng.pick(&[3u16, 3, 3, 2, 4]);
                let mut len = 16 * u32::from(entries);
                if rng.one_in(10) {
                    len = rng.pick(&[0, 47, 49]);
                }
                let addr = if rng.one_in(15) {
                    0x1000
                } else {
                    tables.addr() + 128 * slot as u64
                };
                for e in 0..entries {
                    let intended = match e {
                        0 => header,
                        _ if e + 1 == entries => status,
                        _ => data,
                    };
                    let flags = if rng.one_in(12) {
                        PackedDescFlags::from_bits_retain(rng.pick(&[1, 2, 4, 0x80, 0x8000]))
                    } else {
                        intended
                    };
                    put_packed(
                        tables.at(128 * slot + 16 * usize::from(e)),
                        tag + u64::from(e),
                        buffer_len(&mut rng, [16, 4096, 1, 512][usize::from(e.min(3))]),
                        rng.next() as u16,
                        flags,
                    );
                }
                let flags = packed_flags(&mut rng, PackedDescFlags::INDIRECT, wrap);
                put_packed(desc(pos), addr, len, id, flags);
                room -= 1;
                pos += 1;
                if pos == size {
                    pos = 0;
                    wrap = !wrap;
                }
            } else {
                let n = rng.pick(&[3u16, 3, 3, 3, 1, 2, 4]).min(room);
                for k in 0..n {
                    let last = k + 1 == n;
                    let intended = match k {
                        0 => header,
                        _ if last => status,
                        _ => data,
                    } | if last {
                        PackedDescFlags::empty()
                    } else {
                        PackedDescFlags::NEXT
                    };
                    let flags = packed_flags(&mut rng, intended, wrap);
                    let id = if last || rng.one_in(2) {
                        id
                    } else {
                        rng.next() as u16
                    };
                    put_packed(
                        desc(pos),
                        tag + u64::from(k),
                        buffer_len(&mut rng, [16, 4096, 1, 512][usize::from(k.min(3))]),
                        id,
                        flags,
                    );
                    room -= 1;
                    pos += 1;
                    if pos == size {
                        pos = 0;
                        wrap = !wrap;
                    }
                }
            }
        }
        let what = format!("packed ring of {size}, seed {seed}, round {round}");
        if !compare(
            &mut fast,
            &mut fast_mem,
            &mut general,
            &mut general_mem,
            seen,
            &what,
        ) {
            return;
        }
        // A head not marked available leaves both rings waiting there: the
        // rounds after it still compare, as an empty ring.
    }
}

#[test]
fn packed_take_three_takes_what_pop_takes() {
    let mut seen = [0u32; 3];
    for size in [2u16, 3, 4, 6, 8, 16] {
        for seed in 0..SEEDS / 3 {
            packed_case(size, seed, &mut seen);
        }
    }
    let [three, empty, other] = seen;
    assert!(three > 5000 && empty > 1000 && other > 5000, "{seen:?}");
}
