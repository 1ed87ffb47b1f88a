//! `vblk-fastdev`: serve a busy-polling vhost-user-blk device on a socket
//! until killed.
//!
//! ```text
//! vblk-fastdev --socket /tmp/vblk.sock [--size 1g] [--queues 2] [--disk null|ram]
//!              [--idle auto|spin|yield] [--pin-pollers]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use vblk_fastdev::{DiskKind, FastConfig, FastDevice, Idle};

const USAGE: &str = "usage: vblk-fastdev --socket PATH [--size BYTES (k/m/g)] [--queues N] \
                     [--disk null|ram] [--idle auto|spin|yield] [--pin-pollers]";

fn size(text: &str) -> Option<u64> {
    let lower = text.to_ascii_lowercase();
    let (digits, shift) = match lower.as_bytes().last()? {
        b'k' => (&lower[..lower.len() - 1], 10),
        b'm' => (&lower[..lower.len() - 1], 20),
        b'g' => (&lower[..lower.len() - 1], 30),
        b't' => (&lower[..lower.len() - 1], 40),
        _ => (&lower[..], 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

fn parse(args: &[String]) -> Result<(PathBuf, FastConfig), String> {
    let mut socket = None;
    let mut config = FastConfig::default();
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        if flag == "--pin-pollers" {
            config.pin_pollers = true;
            continue;
        }
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--socket" => socket = Some(PathBuf::from(value)),
            "--size" => config.size = size(value).ok_or(format!("--size {value}: not a size"))?,
            "--queues" => {
                config.queues = value
                    .parse()
                    .map_err(|_| format!("--queues {value}: not a number"))?
            }
            "--disk" => {
                config.disk = match value.as_str() {
                    "null" => DiskKind::Null,
                    "ram" => DiskKind::Ram,
                    _ => return Err(format!("--disk {value}: null or ram")),
                }
            }
            "--idle" => {
                config.idle = match value.as_str() {
                    "auto" => Idle::Auto,
                    "spin" => Idle::Spin,
                    "yield" => Idle::Yield,
                    _ => return Err(format!("--idle {value}: auto, spin or yield")),
                }
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok((socket.ok_or("--socket is required")?, config))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (socket, config) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(why) => {
            eprintln!("vblk-fastdev: {why}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match FastDevice::serve_at(&config, &socket) {
        Ok(device) => {
            eprintln!(
                "vblk-fastdev: {} disk of {} bytes, {} queues, on {}",
                config.disk,
                config.size,
                config.queues,
                socket.display()
            );
            device.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
