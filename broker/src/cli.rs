//! The `edgemq` binary's command line, parsed by hand (part of the binary,
//! not of the library).
//!
//! A gateway binary pays for every dependency in flash and download time:
//! clap is a large dependency for five options
//! and three subcommands (issue 16's 4 MiB budget). The grammar is small
//! and fixed:
//!
//! ```text
//! edgemq [--config FILE] [--listen ADDR]... [--data-dir DIR] [--log-level LEVEL]
//! edgemq --print-default-config
//! edgemq check-config FILE
//! edgemq import-mosquitto FILE
//! edgemq passwd [--pbkdf2] FILE USER
//! edgemq --help | --version
//! ```
//!
//! Options take their value as the next argument or after `=`. Anything
//! else (an unknown option, a missing or malformed value, a missing or
//! extra operand) is a [`CliError`] naming the argument; the binary prints
//! it with the usage and exits with status 2, as clap did.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// What to run: the broker (with its options) or a subcommand.
#[derive(Debug, Default, PartialEq)]
pub struct Cli {
    /// Configuration file (TOML), merged over the embedded defaults.
    pub config: Option<PathBuf>,
    /// Listen on these addresses; replaces the configured listeners.
    pub listen: Vec<SocketAddr>,
    /// Directory for durable data (sets `[storage] dir`).
    pub data_dir: Option<PathBuf>,
    /// Log level or filter (overrides `[log] level`).
    pub log_level: Option<String>,
    /// Print the commented default configuration and exit.
    pub print_default_config: bool,
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// Validate a configuration file and exit (non-zero on error).
    CheckConfig { file: PathBuf },
    /// Translate a mosquitto.conf to edgemq TOML.
    ImportMosquitto { file: PathBuf },
    /// Create or update a user in a password file.
    Passwd {
        pbkdf2: bool,
        file: PathBuf,
        user: String,
    },
}

/// The result of parsing: run, or answer `--help`/`--version`.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Run(Cli),
    Help,
    Version,
}

/// A command line that does not follow the grammar.
#[derive(Debug, PartialEq)]
pub struct CliError(String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub const USAGE: &str = "\
Usage: edgemq [OPTIONS]
       edgemq check-config FILE
       edgemq import-mosquitto FILE
       edgemq passwd [--pbkdf2] FILE USER
Try 'edgemq --help' for more.";

pub const HELP: &str = "\
A small, fast MQTT 3.1.1/5.0 broker for edge gateways.

Usage: edgemq [OPTIONS] [COMMAND]

With no options it listens on 127.0.0.1:1883 with the embedded defaults.

Commands:
  check-config FILE        Validate a configuration file and exit (non-zero on error)
  import-mosquitto FILE    Translate a mosquitto.conf to edgemq TOML on standard output;
                           options that cannot be translated are listed, with the reason,
                           on standard error
  passwd [--pbkdf2] FILE USER
                           Create or update USER in a mosquitto_passwd-compatible password
                           file (argon2id entries; --pbkdf2 writes a $7$ PBKDF2-SHA512 entry,
                           which Mosquitto 2.0 can read too); the password is read from the
                           first line of standard input

Options:
      --config FILE          Configuration file (TOML), merged over the embedded defaults
      --listen ADDR          Listen on ADDR (repeatable); replaces the configured listeners
      --data-dir DIR         Directory for durable data (sets [storage] dir)
      --log-level LEVEL      Log level or filter (overrides [log] level)
      --print-default-config Print the default configuration, fully commented, and exit
  -h, --help                 Print help
  -V, --version              Print version
";

/// Parses the arguments after the program name.
pub fn parse<I>(args: I) -> Result<Parsed, CliError>
where
    I: IntoIterator<Item = OsString>,
{
    let mut args = args.into_iter().map(|a| a.into_string());
    let mut cli = Cli::default();
    let mut operands: Vec<String> = Vec::new();
    let mut pbkdf2 = false;
    while let Some(arg) = args.next() {
        let arg = arg.map_err(|a| CliError(format!("argument {a:?} is not valid UTF-8")))?;
        if !arg.starts_with('-') || arg == "-" {
            operands.push(arg);
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, CliError> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => match args.next() {
                    Some(Ok(v)) => Ok(v),
                    Some(Err(v)) => Err(CliError(format!("{name} {v:?}: not valid UTF-8"))),
                    None => Err(CliError(format!("{name} needs a value ({what})"))),
                },
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "--config" => cli.config = Some(PathBuf::from(value("FILE")?)),
            "--data-dir" => cli.data_dir = Some(PathBuf::from(value("DIR")?)),
            "--log-level" => cli.log_level = Some(value("LEVEL")?),
            "--listen" => {
                let v = value("ADDR")?;
                let addr = v.parse().map_err(|e| {
                    CliError(format!(
                        "--listen {v:?}: {e} (expected IP:PORT, e.g. 127.0.0.1:1883)"
                    ))
                })?;
                cli.listen.push(addr);
            }
            "--print-default-config" if inline.is_none() => cli.print_default_config = true,
            "--pbkdf2" if inline.is_none() => pbkdf2 = true,
            _ => return Err(CliError(format!("unexpected argument {arg:?}"))),
        }
    }
    cli.command = command(operands, pbkdf2)?;
    Ok(Parsed::Run(cli))
}

/// The subcommand named by the operands (none: run the broker).
fn command(operands: Vec<String>, pbkdf2: bool) -> Result<Option<Command>, CliError> {
    let mut operands = operands.into_iter();
    let Some(name) = operands.next() else {
        return match pbkdf2 {
            true => Err(CliError("--pbkdf2 belongs to the passwd command".into())),
            false => Ok(None),
        };
    };
    let rest: Vec<String> = operands.collect();
    if pbkdf2 && name != "passwd" {
        return Err(CliError("--pbkdf2 belongs to the passwd command".into()));
    }
    let exactly = |n: usize, shape: &str| -> Result<(), CliError> {
        match rest.len() == n {
            true => Ok(()),
            false => Err(CliError(format!("usage: edgemq {name} {shape}"))),
        }
    };
    let command = match name.as_str() {
        "check-config" => {
            exactly(1, "FILE")?;
            Command::CheckConfig {
                file: PathBuf::from(&rest[0]),
            }
        }
        "import-mosquitto" => {
            exactly(1, "FILE")?;
            Command::ImportMosquitto {
                file: PathBuf::from(&rest[0]),
            }
        }
        "passwd" => {
            exactly(2, "[--pbkdf2] FILE USER")?;
            Command::Passwd {
                pbkdf2,
                file: PathBuf::from(&rest[0]),
                user: rest[1].clone(),
            }
        }
        other => return Err(CliError(format!("unknown command {other:?}"))),
    };
    Ok(Some(command))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Parsed, CliError> {
        parse(args.iter().map(OsString::from))
    }

    fn run(args: &[&str]) -> Cli {
        match p(args) {
            Ok(Parsed::Run(cli)) => cli,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn no_arguments_run_the_broker_with_defaults() {
        assert_eq!(run(&[]), Cli::default());
    }

    #[test]
    fn options_take_their_value_next_or_after_an_equals_sign() {
        let cli = run(&[
            "--config",
            "a.toml",
            "--listen=127.0.0.1:1",
            "--listen",
            "[::1]:2",
            "--data-dir",
            "/d",
            "--log-level=debug,edgemq=trace",
        ]);
        assert_eq!(cli.config, Some(PathBuf::from("a.toml")));
        assert_eq!(cli.listen.len(), 2);
        assert_eq!(cli.listen[1].port(), 2);
        assert_eq!(cli.data_dir, Some(PathBuf::from("/d")));
        assert_eq!(cli.log_level.as_deref(), Some("debug,edgemq=trace"));
        assert!(run(&["--print-default-config"]).print_default_config);
    }

    #[test]
    fn subcommands_and_their_operands() {
        assert_eq!(
            run(&["check-config", "x.toml"]).command,
            Some(Command::CheckConfig {
                file: PathBuf::from("x.toml")
            })
        );
        assert_eq!(
            run(&["import-mosquitto", "m.conf"]).command,
            Some(Command::ImportMosquitto {
                file: PathBuf::from("m.conf")
            })
        );
        assert_eq!(
            run(&["passwd", "--pbkdf2", "pw", "alice"]).command,
            Some(Command::Passwd {
                pbkdf2: true,
                file: PathBuf::from("pw"),
                user: "alice".into()
            })
        );
        assert_eq!(p(&["-h"]), Ok(Parsed::Help));
        assert_eq!(p(&["check-config", "--version"]), Ok(Parsed::Version));
    }

    #[test]
    fn bad_command_lines_name_what_is_wrong() {
        let err = |args: &[&str]| match p(args) {
            Err(e) => e.to_string(),
            other => panic!("{args:?} was accepted: {other:?}"),
        };
        assert!(err(&["--bogus"]).contains("\"--bogus\""));
        assert!(err(&["--config"]).contains("--config needs a value"));
        assert!(err(&["--listen", "localhost"]).contains("--listen \"localhost\""));
        assert!(err(&["check-config"]).contains("usage: edgemq check-config FILE"));
        assert!(err(&["check-config", "a", "b"]).contains("usage"));
        assert!(err(&["passwd", "pw"]).contains("[--pbkdf2] FILE USER"));
        assert!(err(&["frobnicate"]).contains("unknown command \"frobnicate\""));
        assert!(err(&["--pbkdf2"]).contains("passwd"));
        assert!(err(&["--print-default-config=yes"]).contains("unexpected argument"));
    }
}
