//! Counters shared by every simulated device, the live progress display and
//! the final report (text or `--json`).
//!
//! Devices only bump atomics; the verifier owns its own bookkeeping
//! (`verify.rs`). Loss is counted only for QoS 1 readings the broker
//! acknowledged: readings that died in RAM at a power cut or were pushed
//! out of a full ring are reported separately, as the firmware's own losses.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Live counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Devices currently connected.
    pub connected: AtomicU64,
    /// Successful CONNACKs (first connects and reconnects).
    pub connects: AtomicU64,
    /// Failed connect attempts.
    pub connect_failures: AtomicU64,
    /// Readings taken by sensors.
    pub readings: AtomicU64,
    /// PUBLISH packets written (retransmissions included).
    pub sent: AtomicU64,
    /// QoS 1 readings acknowledged by the broker.
    pub acked: AtomicU64,
    /// Readings lost in RAM at a power cut (never acknowledged).
    pub lost_in_power_cut: AtomicU64,
    /// Readings dropped from a full ring while offline.
    pub ring_overflow: AtomicU64,
    /// Readings still unsent when the run ended.
    pub unsent_at_end: AtomicU64,
    /// Power cuts injected.
    pub power_cuts: AtomicU64,
    /// Network flaps injected.
    pub flaps: AtomicU64,
    /// Connections lost for other reasons.
    pub disconnects: AtomicU64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: u64,
    /// 99th percentile.
    pub p99_ms: u64,
    /// Maximum.
    pub max_ms: u64,
}

impl Latency {
    /// Percentiles of `samples` (sorted in place).
    pub fn from_samples(samples: &mut [u32]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |q: f64| u64::from(samples[((samples.len() - 1) as f64 * q).round() as usize]);
        Latency {
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// What the verifier found.
#[derive(Debug, Default, Serialize)]
pub struct Verification {
    /// Distinct readings delivered to the verifier.
    pub delivered: u64,
    /// Acknowledged QoS 1 readings never delivered: must be 0.
    pub lost: u64,
    /// Deliveries of a reading already seen.
    pub duplicated: u64,
    /// Deliveries with a lower sequence number than one already seen (same device and boot).
    pub out_of_order: u64,
    /// Reading age when delivered (sensor time to verifier).
    pub latency: Latency,
}

/// The final report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Devices simulated.
    pub devices: u32,
    /// Wall time of the run.
    pub elapsed_secs: f64,
    /// Successful connects.
    pub connects: u64,
    /// Failed connect attempts.
    pub connect_failures: u64,
    /// Readings taken.
    pub readings: u64,
    /// PUBLISH packets written.
    pub sent: u64,
    /// QoS 1 readings acknowledged.
    pub acked: u64,
    /// Readings lost in RAM at power cuts (by design, not broker loss).
    pub lost_in_power_cut: u64,
    /// Readings pushed out of full rings.
    pub ring_overflow: u64,
    /// Readings not sent before the end.
    pub unsent_at_end: u64,
    /// Power cuts injected.
    pub power_cuts: u64,
    /// Network flaps injected.
    pub flaps: u64,
    /// Other connection losses.
    pub disconnects: u64,
    /// The simulator's own CPU use, percent of one core.
    pub sim_cpu_percent: f64,
    /// Present with `--verify`.
    pub verify: Option<Verification>,
}

impl Report {
    /// Collects the counters.
    pub fn new(
        devices: u32,
        c: &Counters,
        elapsed: Duration,
        cpu: f64,
        verify: Option<Verification>,
    ) -> Report {
        Report {
            devices,
            elapsed_secs: elapsed.as_secs_f64(),
            connects: c.connects.load(Relaxed),
            connect_failures: c.connect_failures.load(Relaxed),
            readings: c.readings.load(Relaxed),
            sent: c.sent.load(Relaxed),
            acked: c.acked.load(Relaxed),
            lost_in_power_cut: c.lost_in_power_cut.load(Relaxed),
            ring_overflow: c.ring_overflow.load(Relaxed),
            unsent_at_end: c.unsent_at_end.load(Relaxed),
            power_cuts: c.power_cuts.load(Relaxed),
            flaps: c.flaps.load(Relaxed),
            disconnects: c.disconnects.load(Relaxed),
            sim_cpu_percent: cpu,
            verify,
        }
    }

    /// Human-readable summary.
    pub fn text(&self) -> String {
        let mut s = format!(
            "devices {}  elapsed {:.1} s  connects {} (failed {})\n\
             readings {}  sent {}  acked {}\n\
             firmware losses: power cut {}  ring overflow {}  unsent at end {}\n\
             faults: power cuts {}  flaps {}  other disconnects {}\n\
             simulator CPU {:.0}% of one core\n",
            self.devices,
            self.elapsed_secs,
            self.connects,
            self.connect_failures,
            self.readings,
            self.sent,
            self.acked,
            self.lost_in_power_cut,
            self.ring_overflow,
            self.unsent_at_end,
            self.power_cuts,
            self.flaps,
            self.disconnects,
            self.sim_cpu_percent,
        );
        if let Some(v) = &self.verify {
            s.push_str(&format!(
                "verify: delivered {}  LOST {}  duplicated {}  out of order {}  \
                 latency p50 {} ms  p99 {} ms  max {} ms\n",
                v.delivered,
                v.lost,
                v.duplicated,
                v.out_of_order,
                v.latency.p50_ms,
                v.latency.p99_ms,
                v.latency.max_ms
            ));
        }
        s
    }
}

/// Live progress: a spinner line on a terminal, a plain line every 5 s otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: Instant,
}

impl Progress {
    /// Picks the display for stderr.
    pub fn new(quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            last_line: Instant::now(),
        }
    }

    /// Shows the current counters.
    pub fn update(&mut self, c: &Counters, started: Instant, quiet: bool) {
        let line = format!(
            "{:>5.0}s  connected {}  sent {}  acked {}  power cuts {}  flaps {}",
            started.elapsed().as_secs_f64(),
            c.connected.load(Relaxed),
            c.sent.load(Relaxed),
            c.acked.load(Relaxed),
            c.power_cuts.load(Relaxed),
            c.flaps.load(Relaxed),
        );
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None if !quiet && self.last_line.elapsed() >= Duration::from_secs(5) => {
                eprintln!("{line}");
                self.last_line = Instant::now();
            }
            None => {}
        }
    }

    /// Removes the spinner.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// CPU time (user + system) of this process, from /proc/self/stat.
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Linux reports clock ticks; USER_HZ is 100 on every architecture we target.
    Some(Duration::from_millis((utime + stime) * 10))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut samples: Vec<u32> = (1..=100).collect();
        let l = Latency::from_samples(&mut samples);
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (51, 99, 100));
        assert_eq!(Latency::from_samples(&mut []).max_ms, 0);
    }

    #[test]
    fn cpu_time_is_readable() {
        assert!(cpu_time().is_some());
    }
}
