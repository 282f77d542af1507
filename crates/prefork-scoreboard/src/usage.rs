//! The process's own CPU time and resident memory, for a worker to sample into its slot.

use nix::sys::resource::{UsageWho, getrusage};

/// CPU time used by this process so far (user + system), µs.
pub fn cpu_micros() -> u64 {
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|usage| {
            let micros = |tv: nix::sys::time::TimeVal| tv.tv_sec() as u64 * 1_000_000 + tv.tv_usec() as u64;
            micros(usage.user_time()) + micros(usage.system_time())
        })
        .unwrap_or(0)
}

/// Resident memory of this process now, bytes (from `/proc/self/statm`; 0 if unreadable).
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as u64;
    pages * page_size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_process_has_cpu_time_and_resident_memory() {
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(cpu_micros() > 0);
        assert!(rss_bytes() > 1024 * 1024, "{}", rss_bytes());
    }
}
