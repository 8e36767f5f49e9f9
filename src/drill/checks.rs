//! The drill's checks on the restored server: built-in ones, and the SQL
//! files given with `--check`.
//!
//! A check file passes when psql runs it without an error and it prints
//! at least one row, and no row's first column is false (`f`) or empty:
//! write queries that return `true` when what they check holds.

use std::path::Path;

use super::report::CheckResult;
use super::server::ScratchServer;
use crate::restore::Target;

fn result(name: &str, passed: bool, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        name: name.to_string(),
        passed,
        detail: detail.into(),
    }
}

/// Whether psql's unaligned, tuples-only output is a pass: some rows, and
/// none whose first column is false or NULL.
pub fn output_passes(stdout: &str) -> Result<(), String> {
    let rows: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    if rows.is_empty() {
        return Err("returned no rows".into());
    }
    for row in &rows {
        let first = row.split('|').next().unwrap_or_default().trim();
        if first.is_empty() || first == "f" || first.eq_ignore_ascii_case("false") {
            return Err(format!("returned {row:?}"));
        }
    }
    Ok(())
}

/// The restored server answers, and recovery ended where it was asked to:
/// for a target other than the end of the archive, PostgreSQL's log says
/// where it stopped.
pub fn target_reached(target: &Target, log: &str) -> CheckResult {
    let name = "target-reached";
    let stopped = log
        .lines()
        .find(|l| l.contains("recovery stopping"))
        .map(|l| l.split("LOG:").last().unwrap_or(l).trim().to_string());
    match (target, stopped) {
        (Target::Latest, _) => match log.contains("archive recovery complete") {
            true => result(name, true, "replayed to the end of the archived WAL"),
            false => result(
                name,
                false,
                "the log does not say archive recovery completed",
            ),
        },
        (_, Some(line)) => result(name, true, line),
        (_, None) => result(
            name,
            false,
            format!("the server's log has no \"recovery stopping\" line for {target}"),
        ),
    }
}

/// `pg_amcheck` over every database's catalog (where the binaries have
/// it): B-tree indexes and heaps of pg_catalog.
pub async fn amcheck(server: &ScratchServer) -> Option<CheckResult> {
    let r = server
        .client(
            "pg_amcheck",
            &["--all", "--schema", "pg_catalog", "--install-missing"],
        )
        .await?;
    Some(match r {
        Ok(out) if out.ok => result(
            "amcheck",
            true,
            "pg_amcheck found no corruption in the catalogs",
        ),
        Ok(out) => result(
            "amcheck",
            false,
            format!("pg_amcheck: {}{}", out.stdout.trim(), out.stderr.trim()),
        ),
        Err(e) => result("amcheck", false, e.to_string()),
    })
}

/// Runs one `--check` file.
pub async fn check_file(server: &ScratchServer, file: &Path) -> CheckResult {
    let name = file.display().to_string();
    let r = match server.psql(&["-f", &name]).await {
        Ok(r) => r,
        Err(e) => return result(&name, false, e.to_string()),
    };
    if !r.ok {
        return result(&name, false, format!("psql failed: {}", r.stderr.trim()));
    }
    match output_passes(&r.stdout) {
        Ok(()) => result(
            &name,
            true,
            format!("{} rows, all true", r.stdout.lines().count()),
        ),
        Err(why) => result(&name, false, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_passes_only_on_rows_that_are_all_true() {
        assert!(output_passes("t\n").is_ok());
        assert!(output_passes("t\nt|x\n42\n").is_ok());
        assert!(output_passes("").is_err());
        assert!(output_passes("\n\n").is_err());
        assert!(output_passes("t\nf\n").is_err());
        assert!(output_passes("|3\n").is_err(), "NULL first column");
        assert!(output_passes("false\n").is_err());
    }

    #[test]
    fn the_target_is_reached_when_the_log_says_so() {
        let t = Target::Name { name: "x".into() };
        let log = "LOG:  starting point-in-time recovery\n\
                   LOG:  recovery stopping at restore point \"x\", time 2026-12-01\n";
        let r = target_reached(&t, log);
        assert!(r.passed, "{r:?}");
        assert!(
            r.detail.starts_with("recovery stopping at restore point"),
            "{r:?}"
        );
        assert!(!target_reached(&t, "LOG:  redo done\n").passed);
        assert!(target_reached(&Target::Latest, "LOG:  archive recovery complete\n").passed);
        assert!(!target_reached(&Target::Latest, "LOG:  redo done\n").passed);
    }
}
