//! No misconfiguration of restore_command reads as "the end of the
//! archive". A real PostgreSQL 15 copy, which holds the WAL to become
//! consistent but not the rows committed after it was taken (those are only
//! in the archive, on the real Ceph RGW), is started with each broken
//! restore_command: it must stop with FATAL instead of promoting without
//! them. Then the setting is fixed, and the same copy recovers every row.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::pg::Pg;
use common::s3::Rgw;
use common::{chown_postgres, pitr_bin, TestDir};

#[test]
fn every_broken_restore_command_stops_recovery_and_loses_nothing() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("misconf");
    let dir = TestDir::new("misconf");
    let env = rgw.pitr_env(&bucket, "main");
    let pitr = pitr_bin().display().to_string();

    let mut primary = Pg::init(dir.join("primary"));
    primary.conf(&format!(
        "archive_mode = on\narchive_command = '{pitr} wal-push %p'\n"
    ));
    primary.start(&env);
    primary.sql("create table t (id int primary key); insert into t values (1)");
    let copy_dir = dir.join("copy");
    primary.basebackup_with_wal(&copy_dir);
    primary.sql("insert into t values (2), (3)");
    let last = primary.switch_wal();
    primary.wait_archived(&last, Duration::from_secs(60));
    primary.stop();

    // The settings file the server's restore_command reads (the server's
    // own environment carries no PITR_* or S3_* variables).
    let good = dir.join("pitr.env");
    let lines: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(&good, lines).unwrap();
    chown_postgres(&good);
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o600)).unwrap();
    // One the postgres user cannot read.
    let unreadable = dir.join("root-only.env");
    std::fs::copy(&good, &unreadable).unwrap();
    std::fs::set_permissions(&unreadable, std::fs::Permissions::from_mode(0o600)).unwrap();
    let missing_repo = dir.join("no-such-archive");

    let mut copy = Pg::existing(copy_dir.clone());
    copy.conf("archive_mode = off\nrecovery_target_timeline = 'latest'\n");
    std::fs::write(copy_dir.join("recovery.signal"), "").unwrap();
    chown_postgres(&copy_dir);

    let g = good.display();
    let broken = [
        (
            "a settings file that does not exist",
            format!(
                "{pitr} --config {}/nope.env wal-fetch %f %p",
                dir.path.display()
            ),
        ),
        (
            "a settings file postgres cannot read",
            format!("{pitr} --config {} wal-fetch %f %p", unreadable.display()),
        ),
        (
            "an unknown option before the subcommand",
            format!("{pitr} --config {g} --no-such-option wal-fetch %f %p"),
        ),
        (
            "a mistyped subcommand",
            format!("{pitr} --config {g} wal-fecth %f %p"),
        ),
        (
            "a mistyped server name",
            format!("{pitr} --config {g} --server-name mian wal-fetch %f %p"),
        ),
        (
            "a file:// repository that does not exist",
            format!(
                "{pitr} --config {g} --repo file://{} wal-fetch %f %p",
                missing_repo.display()
            ),
        ),
    ];
    for (what, command) in &broken {
        copy.conf(&format!("restore_command = '{command}'"));
        let log = copy.start_expecting_stop(&[], Duration::from_secs(60));
        assert!(
            log.contains("could not restore file") && log.contains("exit code 255"),
            "{what}: recovery must stop on restore_command's exit code 255\n{log}"
        );
        assert!(
            copy_dir.join("recovery.signal").exists(),
            "{what}: the server must not have left recovery"
        );
        assert!(
            !copy_dir.join("pg_wal/00000002.history").exists(),
            "{what}: no new timeline may have been created"
        );
    }
    assert!(
        !missing_repo.exists(),
        "wal-fetch must never create a repository"
    );

    // Fixed: the same copy recovers every committed row.
    copy.conf(&format!(
        "restore_command = '{pitr} --config {g} wal-fetch %f %p'"
    ));
    copy.start_nowait(&[]);
    copy.wait_promoted(Duration::from_secs(120));
    assert_eq!(
        copy.sql("select string_agg(id::text, ',' order by id) from t"),
        "1,2,3"
    );
}
