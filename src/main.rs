//! `pitr`: parse the command line, set up logging, run one command, map the
//! result to an exit code.

mod cli;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{exit, wal_fetch, Cli};

/// Whether this command line is a `restore_command` (`wal-fetch`), found
/// before clap parses it, so that even a usage or settings error gets
/// wal-fetch's exit codes: exit 1 there would read as "not in the archive"
/// and end recovery early. True when any argument is `wal-fetch` (options
/// may stand before it), is a near miss of it (`wal-fecth`), or names the
/// files PostgreSQL restores into (`%p` is `pg_wal/RECOVERYXLOG` or
/// `pg_wal/RECOVERYHISTORY`).
fn is_fetch_command(args: &[OsString]) -> bool {
    args.iter().skip(1).any(|a| {
        let a = a.to_string_lossy();
        let file = a.rsplit('/').next().unwrap_or_default();
        a == "wal-fetch"
            || file == "RECOVERYXLOG"
            || file == "RECOVERYHISTORY"
            || (!a.starts_with('-') && edit_distance(&a, "wal-fetch") <= 2)
    })
}

/// Levenshtein distance, for spotting a mistyped subcommand.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
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
    // Copied: a password in them is no longer needed where `ps` shows it.
    cli::argv_mask::hide_passwords_from_ps();
    let is_fetch = is_fetch_command(&args);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn finds_wal_fetch_wherever_it_stands() {
        for line in [
            "pitr wal-fetch 000000010000000000000001 pg_wal/RECOVERYXLOG",
            "pitr --config /etc/pitr.env wal-fetch 00000002.history pg_wal/RECOVERYHISTORY",
            "pitr --log-level debug --repo file:///x wal-fetch a b",
            "pitr wal-fecth 000000010000000000000001 pg_wal/RECOVERYXLOG",
            "pitr wal-fech a b",
            "pitr --bogus x 000000010000000000000001 pg_wal/RECOVERYXLOG",
        ] {
            assert!(is_fetch_command(&args(line)), "{line}");
        }
        for line in [
            "pitr wal-push pg_wal/000000010000000000000001",
            "pitr --config /etc/pitr.env backup list",
            "pitr restore --pgdata /srv/x",
        ] {
            assert!(!is_fetch_command(&args(line)), "{line}");
        }
    }
}
