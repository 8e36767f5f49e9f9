//! A real PostgreSQL server archives through `archive_command = pitr
//! wal-push %p` into Ceph RGW over HTTPS; every segment is in the bucket
//! under Barman's key and fetches back byte-identical; a copy of the cluster
//! taken before the load replays the archive through `pitr wal-fetch` and
//! ends up with the same rows.

mod common;

use std::time::Duration;

use common::pg::Pg;
use common::s3::Rgw;
use common::{pitr, pitr_bin, run, TestDir};

fn is_segment_name(n: &str) -> bool {
    n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn archives_pgbench_load_and_replays_it_on_a_copy() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("archive");
    let dir = TestDir::new("archive");
    let env = rgw.pitr_env(&bucket, "primary");

    let mut primary = Pg::init(dir.join("primary"));
    primary.conf(&format!(
        "archive_mode = on\narchive_command = '{} wal-push %p'\nwal_keep_size = '4GB'\n\
         max_wal_size = '4GB'\ncheckpoint_timeout = '1h'\narchive_timeout = 0\n",
        pitr_bin().display()
    ));
    primary.start(&env);
    primary.sql("create table marker (id int primary key, note text)");
    primary.basebackup_without_wal(&dir.join("copy"));

    primary.pgbench(&["-i", "-s", "3", "-q"]);
    for round in 0..50 {
        primary.pgbench(&["-t", "40", "-c", "2", "-n"]);
        primary.sql(&format!(
            "insert into marker values ({round}, 'round {round}')"
        ));
        primary.switch_wal();
    }
    let last = primary.switch_wal();
    primary.wait_archived(&last, Duration::from_secs(300));

    let stats = primary.sql("select archived_count, failed_count from pg_stat_archiver");
    let (archived, failed) = stats.split_once('|').unwrap();
    assert_eq!(failed, "0", "archive failures: {stats}\n{}", primary.log());
    assert!(
        archived.parse::<u32>().unwrap() >= 50,
        "only {archived} archived"
    );

    let expected = primary.sql("select count(*), sum(abalance) from pgbench_accounts");
    let expected_markers = primary.sql("select count(*), sum(id) from marker");
    let expected_history = primary.sql("select count(*) from pgbench_history");

    // Every segment up to the last archived one is in the bucket under
    // Barman's key, and fetches back byte-identical to pg_wal's copy.
    let keys = rgw.keys(&bucket, "pg/primary/wals/");
    let mut segments: Vec<String> = std::fs::read_dir(primary.data.join("pg_wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| is_segment_name(n) && n.as_str() <= last.as_str())
        .collect();
    segments.sort();
    assert!(
        segments.len() >= 50,
        "only {} segments kept in pg_wal",
        segments.len()
    );
    let out = dir.join("fetched");
    std::fs::create_dir_all(&out).unwrap();
    for name in &segments {
        let key = format!("pg/primary/wals/{}/{name}.gz", &name[..16]);
        assert!(keys.contains(&key), "{key} is not in the bucket");
        let dest = out.join(name);
        let r = run(pitr()
            .envs(env.iter().cloned())
            .arg("wal-fetch")
            .arg(name)
            .arg(&dest));
        assert_eq!(r.code, 0, "{name}: {r:?}");
        let original = std::fs::read(primary.data.join("pg_wal").join(name)).unwrap();
        assert!(
            std::fs::read(&dest).unwrap() == original,
            "{name} differs after the round trip"
        );
        std::fs::remove_file(&dest).unwrap();
    }
    primary.stop();

    // Replay: the copy has no WAL of its own; everything comes from pitr.
    let mut copy = Pg::existing(dir.join("copy"));
    copy.conf(&format!(
        "archive_mode = off\nrestore_command = '{} wal-fetch %f %p'\n",
        pitr_bin().display()
    ));
    std::fs::write(copy.data.join("recovery.signal"), "").unwrap();
    if common::running_as_root() {
        common::chown_postgres(&copy.data);
    }
    copy.start_nowait(&env);
    copy.wait_promoted(Duration::from_secs(300));

    assert_eq!(
        copy.sql("select count(*), sum(abalance) from pgbench_accounts"),
        expected
    );
    assert_eq!(
        copy.sql("select count(*), sum(id) from marker"),
        expected_markers
    );
    assert_eq!(
        copy.sql("select count(*) from pgbench_history"),
        expected_history
    );
    let log = copy.log();
    assert!(
        log.contains(&format!("restored log file \"{last}\" from archive")),
        "{log}"
    );
}
