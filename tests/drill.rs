//! The README's main command, docker/drill.sh, run natively: a throw-away
//! PostgreSQL archives into a file:// repository, pitr takes a base backup,
//! the primary changes at known times (t1, t2, t3), and `pitr drill
//! --target-time` restores a scratch copy to just after t2 with a check file
//! the script wrote at t2: the copy must hold exactly the rows committed by
//! t2 and none of t3's. Sabotaged, it must fail loudly: a segment deleted
//! from the middle makes `pitr drill` fail while planning (the archive has a
//! gap), a corrupted one fails the plan or the recovery, and a target moved
//! to t3 fails the check file.

mod common;

use std::path::Path;
use std::process::Command;

use common::{pitr_bin, run};

fn drill(brk: Option<&str>) -> common::Run {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/drill.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .env("PITR_BIN", pitr_bin())
        .env_remove("PITR_REPO")
        .env_remove("PITR_SERVER_NAME")
        .env_remove("PITR_DRILL_DIR")
        .env_remove("PITR_DRILL_KEEP");
    if let Some(b) = brk {
        cmd.env("PITR_DRILL_BREAK", b);
    }
    run(&mut cmd)
}

#[test]
fn the_drill_restores_to_a_point_in_time() {
    let r = drill(None);
    assert_eq!(r.code, 0, "{r:?}");
    for line in [
        "running: pitr drill --target-time ",
        "OK   target-reached       recovery stopping before commit of transaction",
        "t2_rows.sql 4 rows, all true",
        "drill passed: backup ",
        "restored copy holds exactly the rows committed by t2 and none of t3's",
    ] {
        assert!(
            r.stdout.contains(line),
            "missing {line:?} in:\n{}",
            r.stdout
        );
    }
}

#[test]
fn the_drill_fails_its_check_when_it_restores_past_t2() {
    // The target moved to t3's commit: recovery brings t3 back, and the
    // check file written at t2 must say so.
    let r = drill(Some("target-t3"));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("OK   target-reached"),
        "recovery itself succeeds: {}",
        r.stdout
    );
    assert!(
        r.stdout.contains("t2_rows.sql returned \"f|")
            && r.stdout.contains("drill FAILED: checks ")
            && r.stdout.contains("t2_rows.sql failed"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("drill passed"), "{}", r.stdout);
}

#[test]
fn the_drill_fails_on_a_gap_in_the_archive() {
    let r = drill(Some("delete-segment"));
    assert_eq!(r.code, 1, "{r:?}");
    // pitr drill proves the chain while planning, before restoring anything.
    assert!(
        r.stdout.contains("drill FAILED at Plan") && r.stdout.contains("the archive has a gap"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains("FAILED: pitr drill --target-time"),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("drill passed"), "{}", r.stdout);
}

#[test]
fn the_drill_fails_on_a_corrupt_segment() {
    let r = drill(Some("corrupt-segment"));
    assert_eq!(r.code, 1, "{r:?}");
    // Either the planner reads the damaged segment while proving the target
    // and fails before restoring, or wal-fetch exits 255 during recovery so
    // PostgreSQL stops instead of promoting early.
    let planned = r.stdout.contains("drill FAILED at Plan") && r.stdout.contains("damaged");
    assert!(
        planned
            || r.stdout.contains("drill FAILED at Recovery")
            || r.stdout.contains("drill FAILED at Start"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("drill passed"), "{}", r.stdout);
}
