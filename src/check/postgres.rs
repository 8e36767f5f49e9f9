//! The PostgreSQL side: the server is the repository's cluster, its WAL
//! settings archive with pitr, a replication connection works for
//! backups, and a switched segment reaches the archive.

use super::{CheckLine, CheckOptions, CheckReport, Status, Step};
use crate::backup::wal_check::wait_for_segment;
use crate::error::Result;
use crate::pgwire::{ConnectParams, ReplicationConnection};
use crate::repo::Repo;
use crate::wal::{identity, WalFileName};

async fn show(conn: &mut ReplicationConnection, setting: &str) -> Result<String> {
    let rows = conn.simple_query(&format!("SHOW {setting}")).await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten())
        .unwrap_or_default())
}

const ROLE_FIX: &str = "connect as a role with REPLICATION (sql/pitr_role.sql creates one) \
                        and allow it in pg_hba.conf on a `replication` line";

/// Whether `command` archives with pitr: runs `pitr ... wal-push ... %p`.
pub fn archives_with_pitr(command: &str) -> bool {
    let words: Vec<&str> = command.split_whitespace().collect();
    let pitr = words
        .iter()
        .position(|w| w.trim_matches(['\'', '"']).rsplit('/').next() == Some("pitr"));
    let push = words.iter().position(|w| *w == "wal-push");
    matches!((pitr, push), (Some(a), Some(b)) if a < b) && words.contains(&"%p")
}

pub(super) async fn check(
    repo: Option<&Repo>,
    params: &ConnectParams,
    opts: &CheckOptions,
    report: &mut CheckReport,
) {
    let later = [
        Step::SystemIdentifier,
        Step::WalLevel,
        Step::ArchiveMode,
        Step::ArchiveCommand,
        Step::ArchiveEndToEnd,
    ];
    let mut conn = match ReplicationConnection::connect(params).await {
        Ok(c) => c,
        Err(e) => {
            report
                .lines
                .push(CheckLine::fail(Step::Connection, e.to_string(), ROLE_FIX));
            for step in later {
                report.lines.push(CheckLine::skip(
                    step,
                    "no replication connection to the server",
                ));
            }
            return;
        }
    };
    let system = match conn.identify_system().await {
        Ok(s) => s,
        Err(e) => {
            report
                .lines
                .push(CheckLine::fail(Step::Connection, e.to_string(), ROLE_FIX));
            return;
        }
    };
    report.lines.push(CheckLine::ok(
        Step::Connection,
        format!(
            "{} as {}: PostgreSQL {}, timeline {}, at {} (backups can stream)",
            conn.describe(),
            params.user,
            conn.parameter("server_version").unwrap_or("?"),
            system.timeline.get(),
            system.xlogpos
        ),
    ));

    report.lines.push(match repo {
        None => CheckLine::skip(Step::SystemIdentifier, "the store does not answer"),
        Some(repo) => match identity::load(repo).await {
            Ok(Some(id)) if id.system_identifier == system.system_identifier.to_string() => {
                CheckLine::ok(
                    Step::SystemIdentifier,
                    format!(
                        "the server is database system {}, as the repository records",
                        id.system_identifier
                    ),
                )
            }
            Ok(Some(id)) => CheckLine::fail(
                Step::SystemIdentifier,
                format!(
                    "the server is database system {}, but {} holds WAL of database system {}: \
                     another cluster's repository",
                    system.system_identifier,
                    repo.describe(),
                    id.system_identifier
                ),
                "give this cluster its own --server-name / PITR_SERVER_NAME (or repository)",
            ),
            Ok(None) => CheckLine::ok(
                Step::SystemIdentifier,
                format!(
                    "the server is database system {}; the repository records none yet",
                    system.system_identifier
                ),
            ),
            Err(e) => CheckLine::skip(Step::SystemIdentifier, e.to_string()),
        },
    });

    let settings_fix = |what: &str| {
        format!(
            "cannot read {what}: grant pg_read_all_settings to {} (sql/pitr_role.sql)",
            params.user
        )
    };
    report.lines.push(match show(&mut conn, "wal_level").await {
        Ok(v) if v == "replica" || v == "logical" => {
            CheckLine::ok(Step::WalLevel, format!("wal_level = {v}"))
        }
        Ok(v) => CheckLine::fail(
            Step::WalLevel,
            format!("wal_level = {v}: the WAL cannot restore a base backup"),
            "set wal_level = replica in postgresql.conf and restart",
        ),
        Err(e) => CheckLine::fail(Step::WalLevel, e.to_string(), settings_fix("wal_level")),
    });
    report
        .lines
        .push(match show(&mut conn, "archive_mode").await {
            Ok(v) if v == "on" || v == "always" => {
                CheckLine::ok(Step::ArchiveMode, format!("archive_mode = {v}"))
            }
            Ok(v) => CheckLine::fail(
                Step::ArchiveMode,
                format!("archive_mode = {v}: nothing is archived"),
                "set archive_mode = on in postgresql.conf and restart",
            ),
            Err(e) => CheckLine::fail(
                Step::ArchiveMode,
                e.to_string(),
                settings_fix("archive_mode"),
            ),
        });
    // PostgreSQL 15 and later ignore archive_command when archive_library is set.
    let library = match conn.server_version_num() >= 150_000 {
        true => show(&mut conn, "archive_library").await.unwrap_or_default(),
        false => String::new(),
    };
    let pitr_line = "set archive_command = 'pitr --config /etc/pitr/<server>.env wal-push %p' \
                     and reload (SELECT pg_reload_conf())";
    report
        .lines
        .push(match show(&mut conn, "archive_command").await {
            Ok(_) if !library.is_empty() => CheckLine::fail(
                Step::ArchiveCommand,
                format!("archive_library = '{library}' is set, so archive_command is not used"),
                format!("set archive_library = '' and {pitr_line}"),
            ),
            Ok(v) if archives_with_pitr(&v) => {
                CheckLine::ok(Step::ArchiveCommand, format!("archive_command = '{v}'"))
            }
            Ok(v) => CheckLine::fail(
                Step::ArchiveCommand,
                format!("archive_command = '{v}' does not run pitr wal-push %p"),
                pitr_line,
            ),
            Err(e) => CheckLine::fail(
                Step::ArchiveCommand,
                e.to_string(),
                settings_fix("archive_command"),
            ),
        });
    let _ = conn.close().await;

    let ready = [
        Step::WalLevel,
        Step::ArchiveMode,
        Step::ArchiveCommand,
        Step::SystemIdentifier,
    ]
    .iter()
    .all(|s| !report.failed(*s))
        && repo.is_some();
    report.lines.push(match (ready, repo, opts.switch_wal) {
        (_, _, false) => CheckLine::skip(Step::ArchiveEndToEnd, "--no-switch-wal"),
        (false, _, _) | (_, None, _) => {
            CheckLine::skip(Step::ArchiveEndToEnd, "the settings above must pass first")
        }
        (true, Some(repo), true) => end_to_end(repo, params, opts).await,
    });
    debug_assert!(report
        .lines
        .iter()
        .all(|l| l.status != Status::Fail || l.fix.is_some()));
}

/// Forces a WAL switch and waits until the closed segment is archived.
async fn end_to_end(repo: &Repo, params: &ConnectParams, opts: &CheckOptions) -> CheckLine {
    let switched = async {
        let mut sql = ReplicationConnection::connect_sql(params).await?;
        let in_recovery = sql.simple_query("SELECT pg_is_in_recovery()").await?;
        if in_recovery
            .first()
            .and_then(|r| r.first().cloned().flatten())
            == Some("t".into())
        {
            let _ = sql.close().await;
            return Ok(None);
        }
        // The byte before the switch point is in the segment just closed
        // (on every version, whatever pg_walfile_name does at a boundary).
        let rows = sql
            .simple_query("SELECT pg_walfile_name(pg_switch_wal() - 1)")
            .await?;
        let _ = sql.close().await;
        Ok::<_, crate::error::Error>(rows.first().and_then(|r| r.first().cloned().flatten()))
    }
    .await;
    let name = match switched {
        Ok(Some(n)) => n,
        Ok(None) => {
            return CheckLine::skip(
                Step::ArchiveEndToEnd,
                "the server is in recovery: its primary archives",
            )
        }
        Err(e) => {
            return CheckLine::fail(
                Step::ArchiveEndToEnd,
                e.to_string(),
                format!(
                    "GRANT EXECUTE ON FUNCTION pg_switch_wal() TO {} (sql/pitr_role.sql), or \
                     pass --no-switch-wal",
                    params.user
                ),
            )
        }
    };
    let segment = match name.parse::<WalFileName>() {
        Ok(WalFileName::Segment(s)) => s,
        _ => {
            return CheckLine::fail(
                Step::ArchiveEndToEnd,
                format!("the server named segment '{name}'"),
                "report this",
            )
        }
    };
    match wait_for_segment(repo, &segment, opts.archive_timeout).await {
        Ok(()) => CheckLine::ok(
            Step::ArchiveEndToEnd,
            format!(
                "switched WAL; segment {segment} reached {}",
                repo.describe()
            ),
        ),
        Err(e) => CheckLine::fail(
            Step::ArchiveEndToEnd,
            e.to_string(),
            "look at the server log and pg_stat_archiver (last_failed_wal) for the \
             archive_command's error; --archive-timeout sets the wait",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_pitr_archive_commands() {
        for ok in [
            "pitr wal-push %p",
            "/usr/local/bin/pitr --config /etc/pitr/main.env wal-push %p",
            "'/opt/pitr' wal-push --archive-concurrency 4 %p",
        ] {
            assert!(archives_with_pitr(ok), "{ok}");
        }
        for bad in [
            "",
            "/bin/true",
            "cp %p /mnt/archive/%f",
            "barman-cloud-wal-archive s3://b main %p",
            "pitr wal-fetch %f %p",
            "pitr wal-push",
            "pitrx wal-push %p",
        ] {
            assert!(!archives_with_pitr(bad), "{bad}");
        }
    }
}
