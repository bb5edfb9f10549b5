//! firmware-sim: a site full of simulated sensor devices, for demos, fault
//! drills and end-to-end delivery checks against any MQTT broker.
//!
//! The fleet comes from a TOML scenario (`--scenario`) or from flags. Each
//! device is one task running a firmware model (`device.rs`); faults are
//! injected per device (`faults.rs`); `--verify` subscribes and checks that
//! every QoS 1 reading the broker acknowledged was delivered (`verify.rs`).
//! Exit codes: 0 ok, 1 acknowledged readings lost (with --verify), 2 usage,
//! 3 broker unreachable (for the verifier, or for every device).

mod device;
mod faults;
mod mqtt;
mod reading;
mod report;
mod scenario;
mod sensors;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tracing::Instrument;

use crate::device::DeviceConfig;
use crate::faults::FaultPlan;
use crate::report::{Counters, Progress, Report, Verification};
use crate::scenario::Scenario;
use crate::verify::{AckLog, Verifier};

/// Simulate a fleet of MQTT sensor devices.
#[derive(Debug, Parser)]
#[command(name = "firmware-sim", version)]
struct Args {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Scenario file (TOML); flags below override it.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Number of devices (with a scenario: of its first group).
    #[arg(long)]
    devices: Option<u32>,
    /// Seconds of readings (then devices drain their buffers).
    #[arg(long)]
    duration: Option<u64>,
    /// QoS of every group (0 or 1).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: Option<u8>,
    /// Use MQTT 5.
    #[arg(long)]
    mqtt5: bool,
    /// Check end-to-end delivery with a subscriber; exit 1 on loss.
    #[arg(long)]
    verify: bool,
    /// Broker the verifier subscribes to (default: --host).
    #[arg(long)]
    verify_host: Option<String>,
    /// Port the verifier subscribes to (default: --port).
    #[arg(long)]
    verify_port: Option<u16>,
    /// Topic filter of the verifier (default: `<topic_prefix>/#`).
    #[arg(long)]
    verify_filter: Option<String>,
    /// Seconds to wait for the last deliveries after the devices stopped.
    #[arg(long, default_value_t = 15)]
    drain_secs: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// No progress display.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let scenario = match build_scenario(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Thousands of sockets: raise the soft limit to the hard one.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open file limit");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(args, scenario))
}

fn build_scenario(args: &Args) -> anyhow::Result<Scenario> {
    let mut s = match &args.scenario {
        Some(path) => Scenario::load(path)?,
        None => Scenario::simple(args.devices.unwrap_or(10)),
    };
    if let (Some(n), Some(_)) = (args.devices, &args.scenario) {
        if let Some(g) = s.groups.first_mut() {
            g.devices = n;
        }
    }
    if let Some(d) = args.duration {
        s.duration_secs = d;
    }
    if let Some(q) = args.qos {
        s.groups.iter_mut().for_each(|g| g.qos = q);
    }
    s.mqtt5 |= args.mqtt5;
    s.validate()?;
    Ok(s)
}

async fn run(args: Args, scenario: Scenario) -> ExitCode {
    let addr = format!("{}:{}", args.host, args.port);
    let counters = Arc::new(Counters::default());
    let acks = args.verify.then(|| Arc::new(AckLog::default()));
    let verifier = match start_verifier(&args, &scenario).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(3);
        }
    };

    let started = Instant::now();
    let cpu_start = report::cpu_time();
    let ramp = Duration::from_secs_f64(
        f64::from(scenario.device_count()) / f64::from(scenario.connect_rate),
    );
    let produce_until = started + ramp + Duration::from_secs(scenario.duration_secs);
    let stop_at = produce_until + Duration::from_secs(args.drain_secs);
    spawn_slow_consumers(&scenario, &addr, stop_at);
    let mut tasks = tokio::task::JoinSet::new();
    let mut id = 0u32;
    let gap = Duration::from_secs_f64(1.0 / f64::from(scenario.connect_rate));
    let mut progress = Progress::new(args.quiet || args.json);
    for group in &scenario.groups {
        for index in 0..group.devices {
            let cfg = DeviceConfig {
                id,
                client_id: format!("{}-{index}", group.name),
                topic: format!("{}/{}/{index}", scenario.topic_prefix, group.name),
                addr: addr.clone(),
                mqtt5: scenario.mqtt5,
                group: group.clone(),
                faults: FaultPlan::new(&scenario.faults),
                produce_until,
                stop_at,
            };
            let span = tracing::debug_span!("device", id, client_id = %cfg.client_id);
            tasks.spawn(device::run(cfg, counters.clone(), acks.clone()).instrument(span));
            id += 1;
            // Staggered start: a real site does not power up in one instant.
            tokio::time::sleep_until((started + gap * id).into()).await;
            progress.update(&counters, started, args.quiet || args.json);
        }
    }
    loop {
        tokio::select! {
            done = tasks.join_next() => if done.is_none() { break },
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                progress.update(&counters, started, args.quiet || args.json);
            }
        }
    }
    let verification = verify(verifier.as_ref(), acks.as_deref(), args.drain_secs).await;
    progress.finish();
    let elapsed = started.elapsed();
    let cpu = match (cpu_start, report::cpu_time()) {
        (Some(a), Some(b)) => 100.0 * (b - a).as_secs_f64() / elapsed.as_secs_f64().max(0.001),
        _ => 0.0,
    };
    let report = Report::new(
        scenario.device_count(),
        &counters,
        elapsed,
        cpu,
        verification,
    );
    print_report(&report, args.json);
    match &report.verify {
        Some(v) if v.lost > 0 => ExitCode::from(1),
        _ if report.connects == 0 => {
            eprintln!("error: no device could connect to {addr}");
            ExitCode::from(3)
        }
        _ => ExitCode::SUCCESS,
    }
}

/// With `--verify`, connects the verifier (to `--verify-host/--verify-port`
/// or the devices' broker) and subscribes it before any device starts.
async fn start_verifier(args: &Args, scenario: &Scenario) -> anyhow::Result<Option<Verifier>> {
    if !args.verify {
        return Ok(None);
    }
    let vaddr = format!(
        "{}:{}",
        args.verify_host.as_deref().unwrap_or(&args.host),
        args.verify_port.unwrap_or(args.port)
    );
    let filter = args
        .verify_filter
        .clone()
        .unwrap_or(format!("{}/#", scenario.topic_prefix));
    Ok(Some(Verifier::start(vaddr, filter, scenario.mqtt5).await?))
}

/// The verifier's result once every acknowledged reading arrived or
/// `drain_secs` passed (deliveries can trail the last PUBACK).
async fn verify(
    verifier: Option<&Verifier>,
    acks: Option<&AckLog>,
    drain_secs: u64,
) -> Option<Verification> {
    let (v, log) = verifier.zip(acks)?;
    let deadline = Instant::now() + Duration::from_secs(drain_secs);
    while v.missing(log) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(v.result(log))
}

/// Prints the report as text, or as JSON with `--json`.
fn print_report(report: &Report, json: bool) {
    if json {
        match serde_json::to_string_pretty(report) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("error: {e}"),
        }
    } else {
        print!("{}", report.text());
    }
}

fn spawn_slow_consumers(scenario: &Scenario, addr: &str, stop_at: Instant) {
    let f = &scenario.faults;
    for i in 0..f.slow_consumers {
        tokio::spawn(faults::slow_consumer(
            addr.to_string(),
            i,
            format!("{}/#", scenario.topic_prefix),
            Duration::from_millis(f.slow_consumer_delay_ms),
            stop_at,
        ));
    }
}
