//! What a kernel's command line can ask of the kext once the devices are
//! probed (`vblk.` options, as Linux passes `module.option` to a module).
//! Kerla's kext API gives kexts no command line, so the kernel hands it
//! over: [`crate::boot`].

use alloc::string::String;

use crate::selftest;

/// The `vblk.` options of a command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootOptions {
    /// `vblk.selftest=GENERATION`: run the boot self-test with that stamp.
    pub self_test: Option<u32>,
}

impl BootOptions {
    /// Reads the `vblk.` options of `cmdline` (space-separated `key=value`
    /// words; other words are the kernel's). A malformed value is an error
    /// naming it.
    pub fn parse(cmdline: &str) -> Result<BootOptions, String> {
        let mut options = BootOptions::default();
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
                _ => return Err(alloc::format!("unknown option vblk.{key}")),
            }
        }
        Ok(options)
    }
}

/// Runs what `options` asks on every disk; prints one line per result
/// (`vblk-selftest: PASS ...` / `FAIL ...`). Returns whether all passed.
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
    all_passed
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
