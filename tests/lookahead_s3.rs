//! Look-ahead archiving on a real PostgreSQL 15 and the real Ceph RGW over
//! HTTPS: a burst of 120 ready segments is drained with every segment
//! stored exactly once (one PUT each, counted from pitr's request log), zero
//! archiver failures, and byte-identical copies on fetch.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::pg::Pg;
use common::s3::Rgw;
use common::{pitr, pitr_bin, run, TestDir};

const SEGMENTS: usize = 120;

#[test]
fn a_burst_is_drained_with_every_segment_stored_once() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("ahead");
    let dir = TestDir::new("ahead");
    let mut env = rgw.pitr_env(&bucket, "main");
    env.push(("PITR_LOG_LEVEL".into(), "debug".into()));

    let (pg, last) = Pg::with_ready_backlog(dir.join("primary"), &env, SEGMENTS);
    let ready = std::fs::read_dir(pg.data.join("pg_wal/archive_status"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".ready")
        })
        .count();
    assert!(ready >= SEGMENTS, "{ready} ready files");

    // Now archive the backlog through pitr, look-ahead on (the default).
    pg.sql(&format!(
        "alter system set archive_command = '{} wal-push %p'",
        pitr_bin().display()
    ));
    pg.sql("select pg_reload_conf()");
    pg.wait_archived(&last, Duration::from_secs(300));
    let stats = pg.sql("select archived_count, failed_count from pg_stat_archiver");
    let (archived, failed) = stats.split_once('|').unwrap();
    assert_eq!(failed, "0", "archiver failures: {stats}");
    assert!(archived.parse::<usize>().unwrap() >= SEGMENTS);

    // Every segment's key was PUT exactly once (pitr logs each request).
    let log = pg.log();
    let mut puts: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines() {
        if let Some(rest) = line.split("store request: PUT ").nth(1) {
            let key = rest.split_whitespace().next().unwrap().to_string();
            if key.contains("/wals/") {
                *puts.entry(key).or_default() += 1;
            }
        }
    }
    let stored: Vec<String> = rgw
        .keys(&bucket, "pg/main/wals/")
        .into_iter()
        .filter(|k| k.ends_with(".gz"))
        .collect();
    assert!(stored.len() >= SEGMENTS, "{} objects", stored.len());
    for key in &stored {
        assert_eq!(
            puts.get(key),
            Some(&1),
            "{key} was PUT {:?} times",
            puts.get(key)
        );
    }
    // Round trips: once a push verified the repository, later pushes from
    // this pg_wal neither read identity.json again nor LIST a hash
    // directory (the conditional PUT answers); only the first call.s
    // push, which verifies and records what it verified (concurrent pushes
    // wait for it), does.
    let requests: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("store request: ").nth(1))
        .collect();
    let count = |pred: &dyn Fn(&str) -> bool| requests.iter().filter(|r| pred(r)).count();
    let wal_lists = count(&|r| r.starts_with("LIST pg/main/wals/0"));
    let identity_gets = count(&|r| r.starts_with("GET pg/main/pitr/identity.json"));
    let wal_puts = count(&|r| r.starts_with("PUT pg/main/wals/"));
    eprintln!(
        "{} requests for {wal_puts} WAL PUTs: {wal_lists} hash-directory LISTs, \
         {identity_gets} identity GETs",
        requests.len()
    );
    assert!(
        wal_lists <= 2,
        "{wal_lists} hash-directory LISTs for {SEGMENTS} segments"
    );
    assert!(
        identity_gets <= 2,
        "{identity_gets} identity GETs for {SEGMENTS} segments"
    );

    let ahead = log.matches("pushed ahead").count();
    assert!(
        ahead >= SEGMENTS / 2,
        "most of the burst went ahead: {ahead}"
    );

    // Byte-identical on fetch (every tenth segment).
    let out = dir.join("fetched");
    std::fs::create_dir_all(&out).unwrap();
    for key in stored.iter().step_by(10) {
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
