//! The README's main command, docker/drill.sh, run natively: a throw-away
//! PostgreSQL archives into a file:// repository, pitr takes a base backup,
//! the primary changes at known times (t1, t2, t3), and `pitr restore
//! --target-time` recovers a new server to just after t2: it must hold
//! exactly the rows committed by t2 and none of t3's. Sabotaged, it must
//! fail loudly: a segment deleted from the middle makes `pitr restore`
//! itself refuse (the archive has a gap), a corrupted one stops recovery.

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
        "with `pitr restore --target-time` (replayed ",
        "segments through pitr wal-fetch",
        "PostgreSQL: recovery stopping before commit of transaction",
        "restored server holds exactly the rows committed by t2",
        "and none of t3's",
        "no marker t3   OK",
        "drill passed",
    ] {
        assert!(
            r.stdout.contains(line),
            "missing {line:?} in:\n{}",
            r.stdout
        );
    }
}

#[test]
fn the_drill_fails_on_a_gap_in_the_archive() {
    let r = drill(Some("delete-segment"));
    assert_eq!(r.code, 1, "{r:?}");
    // pitr restore proves the chain before touching PGDATA, and refuses.
    assert!(r.stderr.contains("the archive has a gap"), "{}", r.stderr);
    assert!(
        r.stderr.contains("--target-time") && r.stderr.contains("refused, PGDATA untouched"),
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
    // and refuses before touching PGDATA, or wal-fetch exits 255 during
    // recovery so PostgreSQL stops instead of promoting early.
    let refused = r.stderr.contains("refused, PGDATA untouched") && r.stderr.contains("corrupt");
    assert!(
        refused || r.stderr.contains("recovery from the archive failed"),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("drill passed"), "{}", r.stdout);
}
