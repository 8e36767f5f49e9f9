//! `kill -9` at every stage, on a real PostgreSQL 15 and the real Ceph RGW
//! over HTTPS. Each pitr process is frozen at a named stop point (a debug
//! build's `fault_point`), killed there, and then the data is checked:
//! PostgreSQL's archiver retries and every segment is stored by one PUT;
//! a killed backup is never listed as usable and the next one succeeds; a
//! killed restore leaves a PGDATA PostgreSQL refuses to start and that a
//! rerun replaces; a killed `expire` never shows a half-deleted backup and
//! a rerun finishes it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::pg::{self, Pg};
use common::s3::Rgw;
use common::stop_point::StopPoints;
use common::{pitr, pitr_bin, run, Run, TestDir};

const WAIT: Duration = Duration::from_secs(90);

fn pitr_cmd(env: &[(String, String)], args: &[&str]) -> Run {
    run(pitr().envs(env.iter().cloned()).args(args))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `pitr backup`, frozen at `point` and killed there; returns the killed
/// backup's id.
fn kill_backup_at(env: &[(String, String)], pg: &Pg, stops: &StopPoints, point: &str) -> String {
    stops.kill_at(
        pitr().envs(env.iter().cloned()).args([
            "backup",
            "-d",
            &pg.conninfo(),
            "--wal-timeout",
            "60",
        ]),
        point,
        WAIT,
    );
    let listed = json(&pitr_cmd(env, &["backup", "list", "--format", "json"]).stdout);
    let newest = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|b| b["backup_id"].as_str().unwrap().to_string())
        .unwrap()
        .clone();
    assert_eq!(newest["status"], "STARTED", "killed at {point}: {newest}");
    assert_eq!(newest["usable"], false, "killed at {point}: {newest}");
    newest["backup_id"].as_str().unwrap().to_string()
}

#[test]
fn a_backup_killed_at_any_stage_is_never_usable_and_the_next_succeeds() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("crash-bk");
    let dir = TestDir::new("crash-bk");
    let env = rgw.pitr_env(&bucket, "main");
    let pg = Pg::archiving(dir.join("primary"), &env);
    pg.pgbench(&["-i", "-s", "2", "-q"]);
    let stops = StopPoints::new(dir.join("stops"));
    // Uncompressed, in 5 MiB parts: a multipart upload with several parts.
    let mut parts = env.clone();
    parts.push(("PITR_COMPRESSION".into(), "none".into()));
    parts.push(("PITR_S3_PART_SIZE".into(), "5".into()));

    let mut killed = Vec::new();
    for point in [
        "backup-streaming",
        "multipart-part-stored",
        "backup-waiting-for-wal",
        "backup-writing-done-info",
    ] {
        let id = kill_backup_at(&parts, &pg, &stops, point);
        // Killed before its tar was complete: nothing under its final key.
        if point == "backup-streaming" || point == "multipart-part-stored" {
            let keys = rgw.keys(&bucket, &format!("pg/main/base/{id}/"));
            assert!(
                !keys.iter().any(|k| k.contains("data.tar")),
                "killed at {point}, yet a data.tar is visible: {keys:?}"
            );
        }
        let r = pitr_cmd(&env, &["backup", "show", "latest"]);
        assert_eq!(r.code, 4, "killed at {point}: no usable backup: {r:?}");
        killed.push(id);
    }

    // The next backup runs while the killed ones are still STARTED.
    let r = pitr_cmd(
        &env,
        &["backup", "-d", &pg.conninfo(), "--wal-timeout", "60"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let good = r.stdout.trim().to_string();
    assert!(!killed.contains(&good));
    let latest = json(&pitr_cmd(&env, &["backup", "show", "latest", "--format", "json"]).stdout);
    assert_eq!(latest["backup_id"], good.as_str());
    let r = pitr_cmd(&env, &["backup", "verify", &good]);
    assert_eq!(r.code, 0, "{r:?}");
    // A killed backup cannot be restored, and says so.
    let target = dir.join("restore-killed");
    let r = pitr_cmd(
        &env,
        &[
            "restore",
            "--pgdata",
            target.to_str().unwrap(),
            "--backup-id",
            &killed[3],
        ],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains(&killed[3]), "{}", r.stderr);
    assert!(!target.join("PG_VERSION").exists());
}

/// A primary with pgbench data at `scale`, backed up, then changed in
/// `segments` rounds each ending a segment, all archived, stopped. Returns
/// the rows a restore to the end must hold.
fn backed_up_then_changed(
    dir: &TestDir,
    env: &[(String, String)],
    scale: u32,
    segments: usize,
) -> String {
    let mut primary = Pg::archiving(dir.join("primary"), env);
    primary.pgbench(&["-i", "-s", &scale.to_string(), "-q"]);
    let r = pitr_cmd(
        env,
        &["backup", "-d", &primary.conninfo(), "--wal-timeout", "60"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    for _ in 0..segments {
        primary.pgbench(&["-n", "-t", "200"]);
        primary.switch_wal();
    }
    let want = state(&primary);
    let last = primary.switch_wal();
    primary.wait_archived(&last, WAIT);
    primary.stop();
    want
}

/// Reads the rows a restored server must hold.
fn state(pg: &Pg) -> String {
    pg.sql("select count(*) || ':' || sum(abalance) from pgbench_accounts")
}

#[test]
fn a_restore_killed_midway_cannot_be_started_and_a_rerun_replaces_it() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("crash-rs");
    let dir = TestDir::new("crash-rs");
    let env = rgw.pitr_env(&bucket, "main");
    let want = backed_up_then_changed(&dir, &env, 2, 1);
    let stops = StopPoints::new(dir.join("stops"));

    for point in ["restore-extracting", "restore-writing-recovery-settings"] {
        let data = dir.join(format!("restored-{point}"));
        stops.kill_at(
            pitr()
                .envs(env.iter().cloned())
                .args(["restore", "--jobs", "1", "--pgdata"])
                .arg(&data),
            point,
            WAIT,
        );

        // Marked, and without PG_VERSION: PostgreSQL refuses it.
        let note = std::fs::read_to_string(data.join("pitr-restore-incomplete")).unwrap();
        assert!(note.contains("run the same `pitr restore` again"), "{note}");
        assert!(!data.join("PG_VERSION").exists(), "killed at {point}");
        // Early on, postgresql.conf is not there yet either; once it is,
        // the missing PG_VERSION is what stops PostgreSQL.
        refuses_to_start(
            &data,
            match point {
                "restore-extracting" => "postgres: could not access the server configuration file",
                _ => "File \"{data}/PG_VERSION\" is missing",
            }
            .replace("{data}", &data.display().to_string())
            .as_str(),
        );

        // The rerun needs no --force, and the result recovers.
        let r = pitr_cmd(&env, &["restore", "--pgdata", data.to_str().unwrap()]);
        assert_eq!(r.code, 0, "rerun after a kill at {point}: {r:?}");
        assert!(
            r.stderr.contains("interrupted pitr restore"),
            "{}",
            r.stderr
        );
        assert!(!data.join("pitr-restore-incomplete").exists());
        assert!(data.join("PG_VERSION").is_file());
        let mut restored = pg::start_restored(&data, &env, "archive_mode = off\n");
        assert_eq!(state(&restored), want, "restored after a kill at {point}");
        restored.stop();
    }

    // A directory that is not an interrupted restore still needs --force.
    let other = dir.join("not-ours");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("PG_VERSION"), "15\n").unwrap();
    let r = pitr_cmd(&env, &["restore", "--pgdata", other.to_str().unwrap()]);
    assert_eq!(r.code, 2, "a usage error: {r:?}");
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
}

#[test]
fn a_wal_fetch_killed_during_recovery_never_feeds_postgresql_half_a_segment() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("crash-ft");
    let dir = TestDir::new("crash-ft");
    let env = rgw.pitr_env(&bucket, "main");
    let want = backed_up_then_changed(&dir, &env, 1, 3);
    let stops = StopPoints::new(dir.join("stops"));

    for point in ["fetch-before-rename", "fetch-after-rename"] {
        let data = dir.join(format!("restored-{point}"));
        let r = pitr_cmd(&env, &["restore", "--pgdata", data.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{r:?}");
        let auto = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
        let command = auto
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("restore_command = '"))
            .and_then(|l| l.strip_suffix('\''))
            .expect("pitr restore wrote a restore_command")
            .to_string();
        // No prefetcher: the fetch PostgreSQL called is the one frozen.
        let frozen_command = format!(
            "{} {}",
            stops.shell_prefix(point),
            command.replacen(" wal-fetch ", " wal-fetch --prefetch 0 ", 1)
        );
        if common::running_as_root() {
            common::chown_postgres(&data);
        }
        let mut pg = Pg::existing(data.clone());
        pg.conf("archive_mode = off\n");
        // postgresql.auto.conf is read last: the setting goes there.
        let set_command = |c: &str| {
            let auto = data.join("postgresql.auto.conf");
            let text = std::fs::read_to_string(&auto).unwrap();
            std::fs::write(&auto, format!("{text}restore_command = '{c}'\n")).unwrap();
        };
        set_command(&frozen_command);
        // PostgreSQL ends recovery on a restore_command killed by a signal:
        // it stops, it does not promote.
        let (log, segment) = std::thread::scope(|s| {
            let killer = s.spawn(|| {
                let frozen = stops.wait(point, WAIT);
                let segment = frozen.detail.clone();
                frozen.kill();
                segment
            });
            let log = pg.start_expecting_stop(&env, WAIT);
            (log, killer.join().unwrap())
        });
        // (Through the shell of the command line, the kill is exit code 137.)
        assert!(
            log.contains(&format!("could not restore file \"{segment}\""))
                && (log.contains("signal 9") || log.contains("exit code 137")),
            "killed at {point} ({segment}):\n{log}"
        );
        assert!(
            !log.contains("database system is ready to accept connections"),
            "{log}"
        );

        // Started again with the normal command, it replays to the end.
        set_command(&command);
        pg.start_nowait(&env);
        pg.wait_promoted(Duration::from_secs(180));
        assert_eq!(state(&pg), want, "recovered after a kill at {point}");
        pg.stop();
    }
}

/// PostgreSQL itself (not only pg_ctl) refuses `data`, saying `why`.
fn refuses_to_start(data: &Path, why: &str) {
    if common::running_as_root() {
        common::chown_postgres(data);
    }
    let r = run(common::as_postgres("timeout")
        .arg("30")
        .arg(pg::bin_dir().join("postgres"))
        .arg("-D")
        .arg(data)
        .args(["-c", "listen_addresses=", "-c", "unix_socket_directories="]));
    assert_ne!(r.code, 0, "PostgreSQL ran on a half-restored PGDATA");
    assert_ne!(r.code, 124, "PostgreSQL ran on a half-restored PGDATA");
    assert!(r.stderr.contains(why), "{}", r.stderr);
}

/// Archiving with a wal-push frozen and killed at `point`, then with the
/// normal command: the archive is complete, and every object was stored by
/// one PUT (the store's answers are in pitr's debug log).
fn archive_through_a_killed_push(tag: &str, point: &str) {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket(tag);
    let dir = TestDir::new(tag);
    let mut env = rgw.pitr_env(&bucket, "main");
    env.push(("PITR_LOG_LEVEL".into(), "debug".into()));
    let (pg, last) = Pg::with_ready_backlog(dir.join("primary"), &env, 6);
    let stops = StopPoints::new(dir.join("stops"));
    pg.sql(&format!(
        "alter system set archive_command = '{} {} wal-push %p'",
        stops.shell_prefix(point),
        pitr_bin().display()
    ));
    pg.sql("select pg_reload_conf()");
    let frozen = stops.wait(point, WAIT);
    let key = frozen.detail.clone();
    frozen.kill();
    let stored_before = rgw.keys(&bucket, "pg/main/wals/").contains(&key);
    assert_eq!(
        stored_before,
        point == "push-stored",
        "killed at {point}: is {key} stored?"
    );

    pg.sql(&format!(
        "alter system set archive_command = '{} wal-push %p'",
        pitr_bin().display()
    ));
    pg.sql("select pg_reload_conf()");
    pg.wait_archived(&last, Duration::from_secs(300));

    let mut stored: BTreeMap<String, usize> = BTreeMap::new();
    for line in pg.log().lines() {
        if let Some(rest) = line.split("store answer: PUT ").nth(1) {
            let (k, answer) = rest.split_once(": ").unwrap();
            if answer.starts_with("stored") {
                *stored.entry(k.to_string()).or_default() += 1;
            }
        }
    }
    assert!(
        stored.values().all(|n| *n == 1),
        "an object was stored twice: {stored:?}"
    );
    assert!(stored.contains_key(&key), "{key} never stored: {stored:?}");
    let r = pitr_cmd(&env, &["archive", "verify", "--deep"]);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn a_wal_push_killed_before_its_upload_loses_nothing() {
    archive_through_a_killed_push("crash-push-a", "push-before-upload");
}

#[test]
fn a_wal_push_killed_between_its_upload_and_its_exit_stores_nothing_twice() {
    archive_through_a_killed_push("crash-push-b", "push-stored");
}

/// The backup directories `backup list` shows.
fn listed(env: &[(String, String)]) -> Vec<String> {
    let l = json(&pitr_cmd(env, &["backup", "list", "--format", "json"]).stdout);
    l["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["backup_id"].as_str().unwrap().to_string())
        .collect()
}

/// `pitr expire` frozen at `point` and killed there.
fn kill_expire_at(env: &[(String, String)], stops: &StopPoints, policy: &str, point: &str) {
    stops.kill_at(
        pitr().envs(env.iter().cloned()).args([
            "expire",
            "--retention-policy",
            policy,
            "--minimum-redundancy",
            "1",
        ]),
        point,
        WAIT,
    );
}

#[test]
fn an_expire_killed_midway_never_shows_half_a_backup_and_a_rerun_finishes() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("crash-ex");
    let dir = TestDir::new("crash-ex");
    let env = rgw.pitr_env(&bucket, "main");
    let pg = Pg::archiving(dir.join("primary"), &env);
    pg.sql("create table t (id int)");
    let mut ids = Vec::new();
    for n in 0..3 {
        pg.sql(&format!("insert into t values ({n})"));
        pg.switch_wal();
        let r = pitr_cmd(
            &env,
            &["backup", "-d", &pg.conninfo(), "--wal-timeout", "60"],
        );
        assert_eq!(r.code, 0, "{r:?}");
        ids.push(r.stdout.trim().to_string());
    }
    pg.sql("insert into t values (99)");
    let last = pg.switch_wal();
    pg.wait_archived(&last, WAIT);
    let stops = StopPoints::new(dir.join("stops"));
    let base = |id: &str| rgw.keys(&bucket, &format!("pg/main/base/{id}/"));

    // Killed once the backup.info files are gone, before the tars: the
    // oldest backup is no longer listed at all, not listed as usable.
    kill_expire_at(&env, &stops, "REDUNDANCY 2", "expire-backup-infos-deleted");
    assert_eq!(listed(&env), ids[1..].to_vec());
    assert!(!base(&ids[0]).is_empty(), "its tars are still there");
    let r = pitr_cmd(
        &env,
        &[
            "expire",
            "--retention-policy",
            "REDUNDANCY 2",
            "--format",
            "json",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        json(&r.stdout)["deleted"]["leftover_directories"],
        1,
        "{}",
        r.stdout
    );
    assert!(base(&ids[0]).is_empty(), "the rerun removed the leftovers");

    // Killed before the WAL goes: the backups are gone, the WAL is not yet.
    let wal_before = rgw.keys(&bucket, "pg/main/wals/").len();
    kill_expire_at(&env, &stops, "REDUNDANCY 1", "expire-deleting-wal");
    assert_eq!(listed(&env), ids[2..].to_vec());
    assert!(base(&ids[1]).is_empty());
    assert_eq!(rgw.keys(&bucket, "pg/main/wals/").len(), wal_before);
    let r = pitr_cmd(
        &env,
        &[
            "expire",
            "--retention-policy",
            "REDUNDANCY 1",
            "--format",
            "json",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        rgw.keys(&bucket, "pg/main/wals/").len() < wal_before,
        "the rerun deleted the WAL: {}",
        r.stdout
    );
    // What is left restores: the backup and its WAL chain are whole.
    let r = pitr_cmd(&env, &["backup", "verify", &ids[2]]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = pitr_cmd(&env, &["archive", "verify"]);
    assert_eq!(r.code, 0, "{r:?}");
}
