//! `pitr`: parse the command line, set up logging, run one command, map the
//! result to an exit code.

mod cli;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{exit, wal_fetch, Cli};

/// The subcommand named on the command line, found before clap parses it,
/// so that even a usage error of `wal-fetch` gets wal-fetch's exit codes.
fn subcommand(args: &[OsString]) -> Option<String> {
    args.iter()
        .skip(1)
        .map(|a| a.to_string_lossy())
        .find(|a| !a.starts_with('-'))
        .map(|a| a.into_owned())
}

fn init_logging(level: &str) {
    let filter =
        EnvFilter::try_new(format!("pitr={level}")).unwrap_or_else(|_| EnvFilter::new("pitr=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let is_fetch = subcommand(&args).as_deref() == Some("wal-fetch");
    let usage_failure = |message: &str| -> ExitCode {
        if is_fetch {
            init_logging("info");
            let standby =
                wal_fetch::standby_reason(std::env::var_os("PITR_STANDBY").is_some(), None);
            ExitCode::from(wal_fetch::failure_exit("wal-fetch", message, standby))
        } else {
            eprintln!("pitr: {message}");
            ExitCode::from(exit::USAGE)
        }
    };

    if let Err(message) = cli::config_file::load(&args) {
        return usage_failure(&message);
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print(); // --help, --version
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_failure(e.to_string().trim_end()),
    };
    init_logging(&cli.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return usage_failure(&format!("cannot start the async runtime: {e}")),
    };
    ExitCode::from(runtime.block_on(cli::run(cli)))
}
