//! The `edgemq` binary: command line, logging, runtime, signals.
//!
//! With no arguments it listens on 127.0.0.1:1883 with the embedded
//! defaults. `--config FILE` merges a TOML file over the defaults,
//! `--listen ADDR` (repeatable) replaces the listeners, `check-config FILE`
//! validates a file and exits, `--print-default-config` prints the
//! commented defaults.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use edgemq::config::{default_config_text, Config, ListenerConfig};
use edgemq::server;

mod cli;
use cli::{Cli, Command, Parsed};

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(cli)) => cli,
        Ok(Parsed::Help) => {
            print!("{}", cli::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("edgemq {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("edgemq: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgemq: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a subcommand (`check-config`, `import-mosquitto`, `passwd`).
fn run_command(command: &Command) -> anyhow::Result<()> {
    match command {
        Command::CheckConfig { file } => {
            let config = Config::from_file(file)?;
            edgemq::auth::FileAuth::load(&config.auth)?;
            for listener in config.listeners.iter().filter(|l| l.protocol.is_tls()) {
                server::tls::TlsAcceptorCell::new(listener)?;
            }
            for warning in config.security_warnings() {
                eprintln!("{}: warning: {warning}", file.display());
            }
            println!("{}: OK", file.display());
            Ok(())
        }
        Command::ImportMosquitto { file } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let translation = edgemq::import::mosquitto::translate(&text);
            print!("{}", translation.toml);
            for s in &translation.skipped {
                eprintln!(
                    "{}:{}: not translated: {}: {}",
                    file.display(),
                    s.line,
                    s.option,
                    s.reason
                );
            }
            Ok(())
        }
        Command::Passwd { pbkdf2, file, user } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "empty password");
            let format = match pbkdf2 {
                true => edgemq::auth::NewHash::Pbkdf2,
                false => edgemq::auth::NewHash::Argon2id,
            };
            edgemq::auth::passwd::set_password(file, user, password.as_bytes(), format)?;
            println!("{}: password set for {user}", file.display());
            Ok(())
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    if cli.print_default_config {
        print!("{}", default_config_text());
        return Ok(());
    }
    if let Some(command) = &cli.command {
        return run_command(command);
    }
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if !cli.listen.is_empty() {
        config.listeners = cli
            .listen
            .iter()
            .copied()
            .map(ListenerConfig::mqtt)
            .collect();
    }
    if let Some(level) = &cli.log_level {
        config.log.level = level.clone();
    }
    if let Some(dir) = &cli.data_dir {
        config.storage.dir = dir.clone();
    }
    init_logging(&config.log.level)?;
    for warning in config.security_warnings() {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads())
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        edgemq::run(Arc::new(config), shutdown).await?;
        anyhow::Ok(())
    })
}

/// Installs the SIGINT/SIGTERM handlers now (so a signal that arrives
/// while the broker starts is not fatal) and returns a future completing on
/// either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    // rustls warns about every client that sends an IP address as SNI
    // (Mosquitto's clients do): keep that out of the log unless asked for.
    let directives = match level.contains("rustls") {
        true => level.to_string(),
        false => format!("{level},rustls=error"),
    };
    let filter: tracing_subscriber::filter::Targets = directives
        .parse()
        .with_context(|| format!("invalid log level {level:?}"))?;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry().with(fmt).with(filter).init();
    Ok(())
}
