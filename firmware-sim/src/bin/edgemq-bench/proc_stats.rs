//! Process figures read from /proc: RSS, peak RSS and CPU seconds of the
//! broker under test and of this generator itself.

use std::fs;

/// CPU seconds (user + system) and RSS figures of one process.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Sample {
    pub cpu_secs: f64,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

/// Samples `pid`, or this process when `pid` is `None`. Missing data reads as zero.
pub fn sample(pid: Option<u32>) -> Sample {
    let dir = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_string(),
    };
    let mut s = Sample::default();
    if let Ok(stat) = fs::read_to_string(format!("{dir}/stat")) {
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| {
                fields
                    .get(i)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            s.cpu_secs = (ticks(11) + ticks(12)) / clock_ticks();
        }
    }
    if let Ok(status) = fs::read_to_string(format!("{dir}/status")) {
        for line in status.lines() {
            let kib = || {
                line.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("VmRSS:") {
                s.rss_kib = kib();
            } else if line.starts_with("VmHWM:") {
                s.peak_rss_kib = kib();
            }
        }
    }
    s
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on Linux for every architecture we target (x86_64,
    // aarch64, armv7); reading it would need libc's sysconf.
    100.0
}

/// Raises the open-file limit to its hard maximum for many connections.
pub fn raise_fd_limit() {
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
}
