//! Runs a random read/write/verify workload against the simulated device and
//! prints what it did: the main job until the bench CLI exists.
//!
//! `cargo run --release --example verify -- [--ring split|packed|both] [--requests N] [--iodepth N]`

use std::time::Instant;

use virtio_blk_mq::{BlkDevice, Config, DmaBuffer, Features, RingKind};
use virtio_blk_sim::{CompletionOrder, DiskKind, SimConfig, SimDevice, SimHal};

const SECTORS_PER_BLOCK: u64 = 8;
const BLOCKS: u64 = 4096;

struct Options {
    rings: Vec<RingKind>,
    requests: u64,
    iodepth: usize,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        rings: vec![RingKind::Split, RingKind::Packed],
        requests: 200_000,
        iodepth: 32,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--ring" => {
                options.rings = match value.as_str() {
                    "split" => vec![RingKind::Split],
                    "packed" => vec![RingKind::Packed],
                    "both" => vec![RingKind::Split, RingKind::Packed],
                    other => return Err(format!("--ring {other}: expected split, packed or both")),
                }
            }
            "--requests" => {
                options.requests = value
                    .parse()
                    .map_err(|_| format!("--requests {value}: not a number"))?
            }
            "--iodepth" => {
                options.iodepth = value
                    .parse()
                    .map_err(|_| format!("--iodepth {value}: not a number"))?;
                if !(1..=256).contains(&options.iodepth) {
                    return Err("--iodepth must be 1..=256".into());
                }
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(options)
}

/// Every 4 KiB block carries its number and how often it was written.
fn fill(buf: &mut [u8], block: u64, generation: u64) {
    for chunk in buf.chunks_mut(16) {
        chunk[..8].copy_from_slice(&block.to_le_bytes());
        chunk[8..].copy_from_slice(&generation.to_le_bytes());
    }
}

fn run(ring: RingKind, options: &Options) -> Result<(), String> {
    let mut sim_config = SimConfig {
        disk: DiskKind::Ram,
        capacity_sectors: BLOCKS * SECTORS_PER_BLOCK,
        order: CompletionOrder::Shuffled { seed: 7 },
        ..SimConfig::default()
    };
    if ring == RingKind::Split {
        sim_config.features.remove(Features::RING_PACKED);
    }
    let sim = SimDevice::new(sim_config);
    let mut device =
        BlkDevice::new(SimHal, sim.transport(), Config::default()).map_err(|e| e.to_string())?;
    let mut queue = device.take_queues().into_queues().remove(0);

    let mut generation = vec![0u64; BLOCKS as usize];
    let mut busy = vec![false; BLOCKS as usize];
    let mut free: Vec<DmaBuffer<SimHal>> = (0..options.iodepth)
        .map(|_| DmaBuffer::new(&SimHal, 4096).expect("dma"))
        .collect();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let (mut submitted, mut completed, mut verify_errors, mut reads, mut writes) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let start = Instant::now();
    while completed < options.requests {
        while submitted < options.requests {
            let Some(mut buf) = free.pop() else { break };
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let block = rng % BLOCKS;
            if busy[block as usize] {
                free.push(buf);
                break;
            }
            busy[block as usize] = true;
            let tag = block << 1 | (rng >> 40) & 1;
            let result = if tag & 1 == 1 {
                generation[block as usize] += 1;
                fill(buf.as_mut_slice(), block, generation[block as usize]);
                writes += 1;
                queue.write(block * SECTORS_PER_BLOCK, buf, tag)
            } else {
                reads += 1;
                queue.read(block * SECTORS_PER_BLOCK, buf, tag)
            };
            result.map_err(|r| r.error.to_string())?;
            submitted += 1;
        }
        queue.commit();
        sim.step(0);
        let mut failure = None;
        queue.poll(usize::MAX, |c| {
            let block = c.tag >> 1;
            busy[block as usize] = false;
            if let Err(e) = c.result {
                failure = Some(e);
            }
            let buf = c.buffer.expect("buffer comes back");
            if c.tag & 1 == 0 {
                let mut expected = vec![0u8; 4096];
                if generation[block as usize] > 0 {
                    fill(&mut expected, block, generation[block as usize]);
                }
                verify_errors += u64::from(buf.as_slice() != expected.as_slice());
            }
            free.push(buf);
            completed += 1;
        });
        if let Some(e) = failure {
            return Err(format!("request failed: {e}"));
        }
    }
    let elapsed = start.elapsed();
    let stats = queue.stats();
    println!(
        "{:<6} ring: {} requests ({} reads, {} writes) at iodepth {} in {:.3} s = {:.0} IOPS; kicks/IO {:.4}; verify errors {}; device saw {} kicks, {} protocol violations",
        format!("{ring:?}").to_lowercase(),
        completed,
        reads,
        writes,
        options.iodepth,
        elapsed.as_secs_f64(),
        completed as f64 / elapsed.as_secs_f64(),
        stats.kicks as f64 / completed as f64,
        verify_errors,
        sim.stats(0).kicks,
        sim.violations().len(),
    );
    if verify_errors > 0 || !sim.violations().is_empty() {
        return Err("verification failed".into());
    }
    Ok(())
}

fn main() {
    let options = match parse() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("verify: {message}");
            std::process::exit(2);
        }
    };
    for &ring in &options.rings {
        if let Err(message) = run(ring, &options) {
            eprintln!("verify: {message}");
            std::process::exit(1);
        }
    }
}
