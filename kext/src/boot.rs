//! What a kernel's command line can ask of the kext once the devices are
//! probed (`vblk.` options, as Linux passes `module.option` to a module).
//! Kerla's kext API gives kexts no command line, so the kernel hands it
//! over: [`crate::boot`].

use alloc::format;
use alloc::string::String;

use vblk_report::units::parse_bytes;
use vblk_report::workload::Rw;

use crate::job::{self, JobOptions};
use crate::selftest;

/// The `vblk.` options of a command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootOptions {
    /// `vblk.selftest=GENERATION`: run the boot self-test with that stamp.
    pub self_test: Option<u32>,
    /// `vblk.job=RW` (randread, randwrite, randrw, read, write): run the
    /// fio-style job on the first disk, this CPU's queue; `vblk.bs=`,
    /// `vblk.iodepth=`, `vblk.runtime=` (seconds), `vblk.size=`,
    /// `vblk.rwmixread=`, `vblk.verify=1` shape it.
    pub job: Option<JobOptions>,
}

impl BootOptions {
    /// Reads the `vblk.` options of `cmdline` (space-separated `key=value`
    /// words; other words are the kernel's). A malformed value is an error
    /// naming it.
    pub fn parse(cmdline: &str) -> Result<BootOptions, String> {
        let mut options = BootOptions::default();
        // The job's shape may come before or after vblk.job=.
        let mut shape = JobOptions::new(Rw::Randread);
        let mut rw = None;
        for word in cmdline.split_ascii_whitespace() {
            let Some(option) = word.strip_prefix("vblk.") else {
                continue;
            };
            let (key, value) = option.split_once('=').unwrap_or((option, ""));
            match key {
                "selftest" => {
                    let generation =
                        value
                            .parse::<u32>()
                            .ok()
                            .filter(|&g| g != 0)
                            .ok_or_else(|| {
                                alloc::format!(
                                    "vblk.selftest={value}: want a generation number, 1 to {}",
                                    u32::MAX
                                )
                            })?;
                    options.self_test = Some(generation);
                }
                "job" => {
                    rw = Some(Rw::from_name(value).ok_or_else(|| {
                        format!("vblk.job={value}: want randread, randwrite, randrw, read or write")
                    })?)
                }
                "bs" => shape.block_size = bytes(key, value)?,
                "size" => shape.region_bytes = bytes(key, value)?,
                "iodepth" => shape.iodepth = number(key, value)?,
                "rwmixread" => shape.rwmixread = number::<u8>(key, value)?.min(100),
                "verify" => shape.verify = number::<u8>(key, value)? != 0,
                "runtime" => {
                    let seconds: f64 = value
                        .parse()
                        .ok()
                        .filter(|s: &f64| s.is_finite() && *s > 0.0)
                        .ok_or_else(|| format!("vblk.runtime={value}: want seconds"))?;
                    shape.runtime_ms = (seconds * 1000.0) as u64;
                }
                _ => return Err(alloc::format!("unknown option vblk.{key}")),
            }
        }
        options.job = rw.map(|rw| JobOptions { rw, ..shape });
        Ok(options)
    }
}

fn number<T: core::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("vblk.{key}={value}: want a number"))
}

fn bytes(key: &str, value: &str) -> Result<u64, String> {
    parse_bytes(value).map_err(|_| format!("vblk.{key}={value}: want a size (4k, 1m, ...)"))
}

/// Runs what `options` asks: the self-test on every disk (one line per
/// result, `vblk-selftest: PASS ...` / `FAIL ...`), then the job on the
/// first disk (its fio-style report, each line prefixed `vblk-job: `, and
/// `vblk-job-json: ` with the JSON report). Returns whether all passed.
pub fn run(options: &BootOptions) -> bool {
    let mut all_passed = true;
    if let Some(generation) = options.self_test {
        let disks = crate::disks();
        if disks.is_empty() {
            kerla_api::warn!("vblk-selftest: FAIL: the kext took no virtio-blk device");
            return false;
        }
        for disk in disks {
            match selftest::run(disk, generation) {
                Ok(what) => kerla_api::info!("vblk-selftest: PASS {}: {what}", disk.name()),
                Err(why) => {
                    all_passed = false;
                    kerla_api::warn!("vblk-selftest: FAIL {}: {why}", disk.name());
                }
            }
        }
    }
    if let Some(job) = &options.job {
        all_passed &= run_job(job);
    }
    all_passed
}

fn run_job(options: &JobOptions) -> bool {
    let Some(&disk) = crate::disks().first() else {
        kerla_api::warn!("vblk-job: FAIL: the kext took no virtio-blk device");
        return false;
    };
    match job::run(disk, options) {
        Ok(summary) => {
            for line in vblk_report::normal::normal(&summary, 1).lines() {
                kerla_api::info!("vblk-job: {line}");
            }
            let json = vblk_report::json::report(&summary, "virtio-blk-mq-kext");
            kerla_api::info!("vblk-job-json: {json}");
            !summary.failed()
        }
        Err(why) => {
            kerla_api::warn!("vblk-job: FAIL: {why}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vblk_options_are_read() {
        let options = BootOptions::parse("dhcp=off vblk.selftest=7 pci=on /kerla.elf").unwrap();
        assert_eq!(options.self_test, Some(7));
        assert_eq!(
            BootOptions::parse("dhcp=off").unwrap(),
            BootOptions::default()
        );
    }

    #[test]
    fn bad_values_are_named() {
        for bad in [
            "vblk.selftest=0",
            "vblk.selftest=x",
            "vblk.selftest",
            "vblk.bogus=1",
        ] {
            let error = BootOptions::parse(bad).unwrap_err();
            assert!(error.contains("vblk."), "{bad}: {error}");
        }
    }
}
