//! edgemq-pub: publish one message, a file, or stdin lines, with mosquitto_pub's flags.
//!
//! QoS 1/2 messages go through the client's outbox: the tool exits 0 only
//! after the broker acknowledged every one of them. Exit codes: see
//! `edgemq_client::cli` and client/README.md.

use std::io::BufRead;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Parser;
use edgemq_client::cli::{self, ConnArgs};
use edgemq_client::{Client, Event, OutMessage};

/// Publish MQTT messages (flags as mosquitto_pub).
#[derive(Debug, Parser)]
#[command(
    name = "edgemq-pub",
    version,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct Args {
    #[command(flatten)]
    conn: ConnArgs,
    /// Topic to publish on.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Message payload.
    #[arg(short = 'm', long = "message", group = "source")]
    message: Option<String>,
    /// Send the contents of a file as one message.
    #[arg(short = 'f', long = "file", group = "source")]
    file: Option<std::path::PathBuf>,
    /// Send each line of stdin as a message.
    #[arg(short = 'l', long = "stdin-line", group = "source")]
    lines: bool,
    /// Send a zero-length message.
    #[arg(short = 'n', long = "null-message", group = "source")]
    null: bool,
    /// QoS 0, 1 or 2.
    #[arg(short = 'q', long = "qos", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Retain the message.
    #[arg(short = 'r', long = "retain")]
    retain: bool,
    /// v5 content type.
    #[arg(long = "content-type")]
    content_type: Option<String>,
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Print version.
    #[arg(long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    args.conn.init_tracing();
    if args.message.is_none() && args.file.is_none() && !args.lines && !args.null {
        return cli::fail(cli::EXIT_USAGE, "one of -m, -f, -l or -n is required");
    }
    match run(&args).await {
        Ok(()) => ExitCode::from(cli::EXIT_OK),
        Err((code, message)) => cli::fail(code, message),
    }
}

async fn run(args: &Args) -> Result<(), (u8, String)> {
    if !edgemq::protocol::topic::valid_topic_name(&args.topic) {
        return Err((
            cli::EXIT_USAGE,
            format!("invalid topic name {:?}", args.topic),
        ));
    }
    let payload = match (&args.message, &args.file) {
        (Some(m), _) => Some(Bytes::from(m.clone())),
        (None, Some(path)) => Some(Bytes::from(std::fs::read(path).map_err(|e| {
            (
                cli::EXIT_ERROR,
                format!("cannot read {}: {e}", path.display()),
            )
        })?)),
        (None, None) => args.null.then(Bytes::new),
    };
    let (client, mut events) =
        Client::connect(args.conn.options()).map_err(|e| (cli::error_code(&e), e.to_string()))?;
    cli::wait_connected(&mut events).await?;
    let message = |payload: Bytes| {
        let mut m = OutMessage::new(&args.topic, args.qos, payload).retain(args.retain);
        m.content_type = args.content_type.clone();
        m
    };
    if let Some(payload) = payload {
        publish(&client, message(payload)).await?;
    } else {
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| (cli::EXIT_ERROR, format!("reading stdin: {e}")))?;
            publish(&client, message(Bytes::from(line))).await?;
        }
    }
    finish(&client, &mut events).await
}

async fn publish(client: &Client, m: OutMessage) -> Result<(), (u8, String)> {
    client
        .publish(m)
        .await
        .map_err(|e| (cli::error_code(&e), e.to_string()))
}

/// Waits for every acknowledgement, reporting rejections, then disconnects.
async fn finish(client: &Client, events: &mut edgemq_client::Events) -> Result<(), (u8, String)> {
    let mut rejected = None;
    let flushed = client.flush();
    tokio::pin!(flushed);
    loop {
        tokio::select! {
            result = &mut flushed => {
                result.map_err(|e| (cli::error_code(&e), e.to_string()))?;
                break;
            }
            event = events.recv() => match event {
                Some(Event::Rejected { topic, reason }) => {
                    rejected = Some(format!("broker rejected message on {topic}: {reason}"));
                }
                Some(Event::Disconnected(f)) => tracing::warn!(%f, "reconnecting to deliver"),
                Some(_) => {}
                None => return Err((cli::EXIT_LOST, "client closed".into())),
            }
        }
    }
    cli::close(client, events).await;
    match rejected {
        Some(reason) => Err((cli::EXIT_ERROR, reason)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn flags_are_consistent() {
        use clap::CommandFactory;
        super::Args::command().debug_assert();
    }
}
