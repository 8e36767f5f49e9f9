//! The README's main command, docker/drill.sh, run natively: a throw-away
//! PostgreSQL archives into a file:// repository, pitr takes a base backup,
//! and the backup is recovered from the repository alone with the same rows.
//! Sabotaged (a segment deleted from the middle), it must fail loudly.

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
        .env_remove("PITR_SERVER_NAME");
    if let Some(b) = brk {
        cmd.env("PITR_DRILL_BREAK", b);
    }
    run(&mut cmd)
}

#[test]
fn the_drill_restores_the_primarys_rows() {
    let r = drill(None);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("restored server holds the same rows as the primary"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("drill passed"), "{}", r.stdout);
}

#[test]
fn the_drill_fails_on_a_gap_in_the_archive() {
    let r = drill(Some("delete-segment"));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("the archive has a gap"), "{}", r.stderr);
    assert!(!r.stdout.contains("drill passed"), "{}", r.stdout);
}
