//! edgemq-sub: subscribe and print messages, with mosquitto_sub's flags, plus
//! `--unbatch` to unpack the bridge's envelopes and `--json` output.
//!
//! Exit codes: see `edgemq_client::cli` and client/README.md.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use edgemq_client::cli::{self, ConnArgs, Line};
use edgemq_client::envelope::{self, Format};
use edgemq_client::{Client, Event, Received};

/// Subscribe to MQTT topics and print messages (flags as mosquitto_sub).
#[derive(Debug, Parser)]
#[command(
    name = "edgemq-sub",
    version,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct Args {
    #[command(flatten)]
    conn: ConnArgs,
    /// Topic filter; repeat for several.
    #[arg(short = 't', long = "topic", required = true)]
    topics: Vec<String>,
    /// QoS of the subscriptions.
    #[arg(short = 'q', long = "qos", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Exit after printing this many messages.
    #[arg(short = 'C', long = "count")]
    count: Option<u64>,
    /// Give up after this many seconds in total (exit code 27).
    #[arg(short = 'W', long = "timeout")]
    timeout: Option<u64>,
    /// Print the topic before the payload.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Unpack edgemq envelopes (by v5 content type) and print each message.
    #[arg(long)]
    unbatch: bool,
    /// Envelope format for messages without content type (MQTT 3.1.1), e.g.
    /// "postcard", "json+lz4", "postcard+gzip".
    #[arg(long = "unbatch-format", value_parser = parse_format)]
    unbatch_format: Option<Format>,
    /// One JSON object per message.
    #[arg(long)]
    json: bool,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Print version.
    #[arg(long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
}

fn parse_format(s: &str) -> Result<Format, String> {
    let (enc, comp) = s.split_once('+').unwrap_or((s, "none"));
    Ok(Format {
        encoding: enc
            .parse()
            .map_err(|e: envelope::EnvelopeError| e.to_string())?,
        compression: comp
            .parse()
            .map_err(|e: envelope::EnvelopeError| e.to_string())?,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    args.conn.init_tracing();
    let run = run(&args);
    let result = match args.timeout {
        Some(secs) => match tokio::time::timeout(Duration::from_secs(secs), run).await {
            Ok(r) => r,
            Err(_) => Err((cli::EXIT_TIMEOUT, format!("timed out after {secs} s"))),
        },
        None => run.await,
    };
    match result {
        Ok(()) => ExitCode::from(cli::EXIT_OK),
        Err((code, message)) => cli::fail(code, message),
    }
}

async fn run(args: &Args) -> Result<(), (u8, String)> {
    let (client, mut events) =
        Client::connect(args.conn.options()).map_err(|e| (cli::error_code(&e), e.to_string()))?;
    for topic in &args.topics {
        client
            .subscribe(topic, args.qos)
            .map_err(|e| (cli::error_code(&e), e.to_string()))?;
    }
    cli::wait_connected(&mut events).await?;
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    while args.count.is_none_or(|c| printed < c) {
        match events.recv().await {
            Some(Event::Message(m)) => {
                let remaining = args.count.map(|c| c - printed);
                printed += print(args, &m, &mut out, remaining)?;
            }
            Some(Event::Subscribed { failures }) if failures > 0 => {
                return Err((
                    cli::EXIT_ERROR,
                    format!("broker refused {failures} subscription(s)"),
                ));
            }
            Some(Event::Disconnected(f)) => tracing::warn!(%f, "reconnecting"),
            Some(_) => {}
            None => return Err((cli::EXIT_LOST, "client closed".into())),
        }
    }
    cli::close(&client, &mut events).await;
    Ok(())
}

/// Prints one message, or the messages of an envelope; returns how many lines.
fn print(
    args: &Args,
    m: &Received,
    out: &mut impl Write,
    limit: Option<u64>,
) -> Result<u64, (u8, String)> {
    let io = |e: std::io::Error| (cli::EXIT_ERROR, format!("writing output: {e}"));
    let format = match (&m.content_type, args.unbatch) {
        (Some(ct), true) if ct.starts_with(envelope::CONTENT_TYPE_PREFIX) => {
            Some(Format::from_content_type(ct).map_err(|e| (cli::EXIT_ERROR, e.to_string()))?)
        }
        (None, true) => args.unbatch_format,
        _ => None,
    };
    let Some(format) = format else {
        write_line(args, Line::from(m), out).map_err(io)?;
        return Ok(1);
    };
    let messages = match envelope::decode(&m.payload, format) {
        Ok(messages) => messages,
        Err(e) => {
            tracing::warn!(topic = %m.topic, error = %e, "not a valid envelope, printed as is");
            write_line(args, Line::from(m), out).map_err(io)?;
            return Ok(1);
        }
    };
    let take = limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let mut n = 0;
    for inner in messages.iter().take(take) {
        write_line(args, Line::from(inner), out).map_err(io)?;
        n += 1;
    }
    Ok(n)
}

/// Writes a line: JSON, `topic payload` (-v) or the payload alone.
fn write_line(args: &Args, line: Line<'_>, out: &mut impl Write) -> std::io::Result<()> {
    if args.json {
        writeln!(out, "{}", line.json())?;
    } else {
        if args.verbose {
            write!(out, "{} ", line.topic)?;
        }
        out.write_all(line.payload)?;
        writeln!(out)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    #[test]
    fn flags_are_consistent() {
        use clap::CommandFactory;
        super::Args::command().debug_assert();
    }
}
