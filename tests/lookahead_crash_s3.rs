//! `kill -9` of a `wal-push` in the middle of a look-ahead batch, on a real
//! PostgreSQL 15 and the real Ceph RGW over HTTPS. The push is frozen (a
//! debug build's stop point) just after the store acknowledged one of the
//! batch's objects and before its marker was written, with other uploads of
//! the batch under way, then killed. PostgreSQL's archiver retries; the
//! archive ends up complete, every segment byte-identical, and no object
//! was stored twice (every retried PUT is conditional): the one stored before the kill is found by the
//! conditional PUT (412), compared, and kept.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::pg::Pg;
use common::s3::Rgw;
use common::stop_point::StopPoints;
use common::{pitr, pitr_bin, run, TestDir};

const SEGMENTS: usize = 24;

#[test]
fn a_wal_push_killed_mid_batch_loses_nothing_and_stores_nothing_twice() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("ahead-kill");
    let dir = TestDir::new("ahead-kill");
    let mut env = rgw.pitr_env(&bucket, "main");
    env.push(("PITR_LOG_LEVEL".into(), "debug".into()));

    let (pg, last) = Pg::with_ready_backlog(dir.join("primary"), &env, SEGMENTS);

    // Archive with a push that freezes itself once an object is stored.
    let stops = StopPoints::new(dir.join("stops"));
    pg.sql(&format!(
        "alter system set archive_command = '{} {} wal-push %p'",
        stops.shell_prefix("push-stored-before-marker"),
        pitr_bin().display()
    ));
    pg.sql("select pg_reload_conf()");
    let frozen = stops.wait("push-stored-before-marker", Duration::from_secs(60));
    let frozen_segment = frozen.detail.clone();
    frozen.kill();

    // The archiver retries with a normal push.
    pg.sql(&format!(
        "alter system set archive_command = '{} wal-push %p'",
        pitr_bin().display()
    ));
    pg.sql("select pg_reload_conf()");
    pg.wait_archived(&last, Duration::from_secs(300));

    // Each object was stored by exactly one PUT (the store's answers are in
    // pitr's debug log); the frozen one was answered 412 when pushed again.
    let log = pg.log();
    let mut stored: BTreeMap<String, usize> = BTreeMap::new();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines() {
        let Some(rest) = line.split("store answer: PUT ").nth(1) else {
            continue;
        };
        let (key, answer) = rest.split_once(": ").unwrap();
        if !key.contains("/wals/") {
            continue;
        }
        let counts = match answer.starts_with("stored") {
            true => &mut stored,
            false => &mut refused,
        };
        *counts.entry(key.to_string()).or_default() += 1;
    }
    let keys: Vec<String> = rgw
        .keys(&bucket, "pg/main/wals/")
        .into_iter()
        .filter(|k| k.ends_with(".gz"))
        .collect();
    assert!(keys.len() >= SEGMENTS, "{} objects", keys.len());
    // An upload under way when the push froze may have reached the store
    // without the frozen process seeing the answer: then the retry's
    // conditional PUT is refused (412) and the object stays the first one.
    for key in &keys {
        let (s, r) = (
            stored.get(key).copied().unwrap_or(0),
            refused.get(key).copied().unwrap_or(0),
        );
        assert!(s <= 1, "{key} was stored {s} times");
        assert!(
            s == 1 || r >= 1,
            "{key}: no PUT stored it and none found it"
        );
    }
    let frozen_key = keys
        .iter()
        .find(|k| k.contains(frozen_segment.trim()))
        .unwrap_or_else(|| panic!("{frozen_segment} is in the archive"));
    assert!(
        refused.get(frozen_key).copied().unwrap_or(0) >= 1,
        "{frozen_key}, stored before the kill, was found by the conditional PUT"
    );

    // Nothing lost: every segment fetches byte-identical.
    let out = dir.join("fetched");
    std::fs::create_dir_all(&out).unwrap();
    for key in &keys {
        let name = key.rsplit('/').next().unwrap().trim_end_matches(".gz");
        let dest = out.join(name);
        let r = run(pitr()
            .envs(env.iter().cloned())
            .args(["wal-fetch", "--prefetch", "0", name])
            .arg(&dest));
        assert_eq!(r.code, 0, "{r:?}");
        let original = std::fs::read(pg.data.join("pg_wal").join(name)).unwrap();
        assert!(std::fs::read(&dest).unwrap() == original, "{name} differs");
    }
}
