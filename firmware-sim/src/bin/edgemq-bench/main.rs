//! `edgemq-bench`: a lean raw-socket MQTT load generator.
//!
//! Why not rumqttc: a benchmark must measure the broker, not the client. This
//! generator speaks MQTT with edgemq's own IO-free codec over plain tokio
//! sockets, pre-encodes what it sends, and writes in large batches, so one
//! core of load saturates brokers that need several. It reports its own CPU
//! time next to the broker's so a reader can check it was not the bottleneck.
//!
//! Scenarios: `fan-in` (N publishers to M subscribers on a wildcard),
//! `fan-out` (1 publisher to M subscribers), `latency` (a fixed total rate from N publishers, p50/p99),
//! `idle` (N idle connections: memory per connection, connect time),
//! `durable` (QoS 1 into an offline persistent session: PUBACKs per second,
//! which with edgemq's `sync` durability means messages on stable storage).
//! Every flood and durable run ends with a drain and an end-to-end count: each
//! message the broker accepted (PUBACKed at QoS 1, written at QoS 0) that a
//! subscriber never received is reported as `lost` (see `loss.rs`).
//! Output: one JSON object on stdout, consumed by `scripts/bench.py`.

mod conn;
mod loss;
mod proc_stats;
mod scenarios;
mod traffic;

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Scenario {
    FanIn,
    FanOut,
    Latency,
    Idle,
    /// QoS 1 into an offline persistent session: PUBACKs per second.
    Durable,
}

#[derive(Debug, Parser, Clone)]
#[command(
    version,
    about = "Raw-socket MQTT load generator for side-by-side broker benchmarks"
)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Publishing connections.
    #[arg(long, default_value_t = 20)]
    pub publishers: usize,
    /// Subscribing connections.
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// QoS of publishes and subscriptions (0 or 1).
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
    /// Payload size in bytes (at least 16: a timestamp and a sequence number).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Measurement time in seconds (after a short warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Longest wait, in seconds, for queued messages to arrive after the
    /// publishers stop (the run ends earlier once nothing moves for a second).
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Messages per second in total for the latency scenario.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// QoS 1 publish window per publisher (unacknowledged messages in flight).
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Idle connections to open for the idle scenario.
    #[arg(long, default_value_t = 5000)]
    pub connections: usize,
    /// PID of the broker, to sample its RSS and CPU time.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Use MQTT 5 instead of 3.1.1.
    #[arg(long)]
    pub v5: bool,
}

impl Args {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.max(0.1))
    }

    pub fn drain(&self) -> Duration {
        Duration::from_secs_f64(self.drain.clamp(1.0, 3600.0))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.payload >= 16, "--payload must be at least 16 bytes");
    anyhow::ensure!(args.qos <= 1, "--qos must be 0 or 1");
    proc_stats::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let report = runtime.block_on(scenarios::run(&args))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
