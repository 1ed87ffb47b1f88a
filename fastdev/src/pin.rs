//! Thread placement: the one place this crate calls into the kernel itself.
#![allow(unsafe_code)]

/// Pins the calling thread to CPU `cpu`; returns whether the kernel agreed.
pub(crate) fn pin_current_thread(cpu: usize) -> bool {
    if cpu >= libc::CPU_SETSIZE as usize {
        return false;
    }
    // SAFETY: cpu_set_t is plain data for which all zeros is the empty set;
    // CPU_SET writes inside it (cpu < CPU_SETSIZE, checked above), and
    // sched_setaffinity only reads the set it is given, with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_thread_can_be_pinned_to_cpu_0_and_not_past_the_set() {
        std::thread::spawn(|| {
            assert!(super::pin_current_thread(0));
            assert!(!super::pin_current_thread(1 << 20));
        })
        .join()
        .unwrap();
    }
}
