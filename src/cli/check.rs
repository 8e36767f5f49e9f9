//! `pitr check [-d CONNINFO]`: one line per check, OK or FAIL with the fix.

use std::time::Duration;

use clap::Args;

use super::backup::ConnArgs;
use super::backup_output::Format;
use super::exit;
use super::repo_args::RepoArgs;
use pitr::check::{check, CheckLine, CheckOptions, CheckReport, Status, Step};
use pitr::config::redact;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// PostgreSQL to check too (-d, --host, -p, -U as for `pitr backup`)
    #[command(flatten)]
    pub conn: ConnArgs,

    /// Seconds to wait for the segment of the forced WAL switch to be archived
    #[arg(long, default_value_t = 60)]
    pub archive_timeout: u64,

    /// Do not force a WAL switch (then archiving end to end is not checked)
    #[arg(long)]
    pub no_switch_wal: bool,

    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

impl CheckArgs {
    fn wants_postgres(&self) -> bool {
        let c = &self.conn;
        c.dbname.is_some() || c.host.is_some() || c.port.is_some() || c.username.is_some()
    }
}

fn print(report: &CheckReport, format: Format, secrets: &[String]) {
    match format {
        Format::Json => {
            let text = serde_json::to_string_pretty(report).expect("report serialises");
            println!("{}", redact(&text, secrets));
        }
        Format::Text => {
            for l in &report.lines {
                let status = match l.status {
                    Status::Ok => "OK",
                    Status::Fail => "FAIL",
                    Status::Skip => "SKIP",
                };
                let fix = l
                    .fix
                    .as_ref()
                    .map(|f| format!(" -> fix: {f}"))
                    .unwrap_or_default();
                let line = format!("{status:<4} {:<22} {}{fix}", l.step.name(), l.detail);
                println!("{}", redact(&line, secrets));
            }
            println!(
                "{}",
                if report.passed() {
                    "all checks passed"
                } else {
                    "some checks FAILED"
                }
            );
        }
    }
}

pub async fn run(args: CheckArgs, repo_args: &RepoArgs) -> u8 {
    let cfg = match repo_args.to_config() {
        Ok(c) => c,
        Err(e) => {
            let report = CheckReport {
                lines: vec![CheckLine::fail(
                    Step::Settings,
                    e.to_string(),
                    "set it as a flag, in the environment or in the settings file",
                )],
            };
            print(&report, args.format, &[]);
            return exit::PROBLEMS;
        }
    };
    let secrets = cfg.secrets();
    let params = match args.wants_postgres() {
        false => None,
        true => match args.conn.to_params() {
            Ok(p) => Some(p),
            Err(e) => {
                let report = CheckReport {
                    lines: vec![CheckLine::fail(
                        Step::Connection,
                        e.to_string(),
                        "fix the connection string",
                    )],
                };
                print(&report, args.format, &secrets);
                return exit::PROBLEMS;
            }
        },
    };
    let opts = CheckOptions {
        archive_timeout: Duration::from_secs(args.archive_timeout),
        switch_wal: !args.no_switch_wal,
    };
    let report = check(&cfg, params.as_ref(), &opts).await;
    print(&report, args.format, &secrets);
    if report.passed() {
        exit::OK
    } else {
        exit::PROBLEMS
    }
}
