//! WAL archive and restore through the sidecar, the way CloudNativePG
//! drives it: a real PostgreSQL 15 whose archive_command and
//! restore_command run the test instance manager (a new socket connection
//! and the full load sequence per call), against the real Ceph RGW over
//! HTTPS that tests/run.sh starts.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::path::Path;
use std::time::Duration;

use common::pg::{start_restored, Pg};
use common::s3::Rgw;
use common::{chown_postgres, fresh_segment, running_as_root, TestDir};
use serde_json::{json, Value};
use support::{cluster_json, manager, manager_bin, write_json, Sidecar};

const SEG1: &str = "000000010000000000000001";

fn params(rgw: &Rgw, bucket: &str) -> Value {
    json!({
        "repository": format!("s3://{bucket}/pg"),
        "endpointURL": rgw.endpoint,
        "region": rgw.region,
        "caFile": rgw.ca,
    })
}

fn sidecar_env(rgw: &Rgw, pgdata: &Path, pod: &str) -> Vec<(String, String)> {
    vec![
        ("S3_ACCESS_KEY_ID".into(), rgw.access_key.clone()),
        ("S3_SECRET_ACCESS_KEY".into(), rgw.secret_key.clone()),
        ("POD_NAME".into(), pod.into()),
        ("PGDATA".into(), pgdata.display().to_string()),
    ]
}

fn seg_key(server: &str, name: &str) -> String {
    format!("pg/{server}/wals/{}/{name}.gz", &name[..16])
}

/// A directory the `postgres` user (the sidecar) can write.
fn pg_dir(dir: &TestDir, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    if running_as_root() {
        chown_postgres(&p);
    }
    p
}

/// Nothing at `dest` and no temporary file beside it (the prefetch spool,
/// a directory of complete, verified segments, may be there).
fn assert_nothing_written(dest: &Path) {
    assert!(!dest.exists(), "{} must not exist", dest.display());
    let left: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".pitr-prefetch")
        .collect();
    assert!(
        left.is_empty(),
        "files left beside the destination: {left:?}"
    );
}

fn archive_conf() -> String {
    format!(
        "archive_mode = on\narchive_command = '{} wal-archive %p'\nwal_keep_size = '2GB'\n",
        manager_bin().display()
    )
}

#[test]
fn pgbench_wal_is_archived_through_the_sidecar_and_recovers_a_copy() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("cnpg-wal");
    let dir = TestDir::new("cnpg-wal");
    let server = "pg-main";
    let cluster = dir.join("cluster.json");
    write_json(&cluster, &cluster_json(server, params(&rgw, &bucket)));
    let data = dir.join("data");
    let sidecar = Sidecar::start(&dir, "instance", &sidecar_env(&rgw, &data, "pg-main-1"));

    let mut pg = Pg::init(data.clone());
    pg.conf(&archive_conf());
    pg.start(&sidecar.manager_env(&cluster, &data));
    // A copy taken before the load: all of it must come from the archive.
    let copy = dir.join("copy");
    pg.basebackup_without_wal(&copy);

    pg.pgbench(&["-i", "-s", "1", "-q"]);
    let mut last = String::new();
    for _ in 0..50 {
        pg.pgbench(&["-n", "-t", "20"]);
        last = pg.switch_wal();
    }
    pg.wait_archived(&last, Duration::from_secs(300));
    let stats = pg.sql("select archived_count, failed_count from pg_stat_archiver");
    let (archived, failed) = stats.split_once('|').unwrap();
    assert_eq!(
        failed,
        "0",
        "archive failures: {stats}\n{}",
        sidecar.log_text()
    );
    assert!(archived.parse::<u32>().unwrap() >= 50, "{stats}");
    let expected_rows = pg.sql("select count(*), sum(abalance) from pgbench_accounts; ");
    let expected_history = pg.sql("select count(*) from pgbench_history");

    // Every segment up to the last is stored exactly once, under its Barman key.
    let keys = rgw.keys(&bucket, &format!("pg/{server}/wals/"));
    let segments: Vec<String> = keys
        .iter()
        .filter_map(|k| k.rsplit('/').next())
        .filter(|f| f.len() == 24 + 3 && f.ends_with(".gz"))
        .map(|f| f[..24].to_string())
        .collect();
    assert!(
        segments.len() >= 50,
        "{} segments: {keys:?}",
        segments.len()
    );
    assert_eq!(segments.first().map(String::as_str), Some(SEG1), "{keys:?}");
    assert_eq!(segments.last(), Some(&last), "{keys:?}");
    for (i, seg) in segments.iter().enumerate() {
        assert_eq!(
            u64::from_str_radix(&seg[16..], 16).unwrap(),
            i as u64 + 1,
            "segments are contiguous: {segments:?}"
        );
        // Any object holding this segment, whatever its suffix.
        let copies: Vec<_> = keys
            .iter()
            .filter(|k| {
                let file = k.rsplit('/').next().unwrap();
                file.split('.').next() == Some(seg.as_str())
                    && !file.contains(".backup")
                    && !file.contains(".partial")
            })
            .collect();
        assert_eq!(copies, vec![&seg_key(server, seg)], "{seg} stored once");
    }
    assert!(
        keys.iter().any(|k| k.ends_with(".backup.gz")),
        "pg_basebackup's .backup file is archived too: {keys:?}"
    );

    // Each comes back through the sidecar byte for byte.
    let fetched = pg_dir(&dir, "fetched");
    let env = sidecar.manager_env(&cluster, &data);
    for seg in &segments {
        let dest = fetched.join(seg);
        let r = manager(&env, &["wal-restore", seg, &dest.display().to_string()]);
        assert_eq!(r.code, 0, "{seg}: {r:?}\n{}", sidecar.log_text());
        let original = std::fs::read(data.join("pg_wal").join(seg)).unwrap();
        assert!(
            std::fs::read(&dest).unwrap() == original,
            "{seg} differs from pg_wal"
        );
        std::fs::remove_file(&dest).unwrap();
    }

    // barman-cloud reads what the sidecar stored.
    let seg = &segments[segments.len() / 2];
    let dest = dir.join("barman-seg");
    let r = common::run(
        rgw.barman("barman-cloud-wal-restore")
            .args(["--endpoint-url", &rgw.endpoint])
            .arg(format!("s3://{bucket}/pg"))
            .arg(server)
            .arg(seg)
            .arg(&dest),
    );
    assert_eq!(r.code, 0, "barman-cloud-wal-restore {seg}: {r:?}");
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(data.join("pg_wal").join(seg)).unwrap());

    // The copy recovers through the sidecar's Restore, to the same rows.
    pg.stop();
    std::fs::write(copy.join("recovery.signal"), "").unwrap();
    let restored = start_restored(
        &copy,
        &sidecar.manager_env(&cluster, &copy),
        &format!(
            "archive_mode = off\nrestore_command = '{} wal-restore %f %p'\n",
            manager_bin().display()
        ),
    );
    assert_eq!(
        restored.sql("select count(*), sum(abalance) from pgbench_accounts"),
        expected_rows
    );
    assert_eq!(
        restored.sql("select count(*) from pgbench_history"),
        expected_history
    );
    assert!(
        restored.log().contains("restored log file"),
        "WAL came from restore_command:\n{}",
        restored.log()
    );
    // The sidecar prefetched ahead of replay and served from its spool.
    let served = sidecar
        .log_text()
        .matches("from the prefetch spool")
        .count();
    assert!(served > 0, "no segment came from the prefetch spool");
}

#[test]
fn the_empty_archive_check() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("cnpg-empty");
    let dir = TestDir::new("cnpg-empty");
    let server = "pg-empty";
    let pgdata = dir.join("pgdata");
    let pg_wal = pgdata.join("pg_wal");
    std::fs::create_dir_all(&pg_wal).unwrap();
    std::fs::copy(fresh_segment(&dir, "a"), pg_wal.join(SEG1)).unwrap();
    for tli in [2, 3, 4] {
        std::fs::write(
            pg_wal.join(format!("0000000{tli}.history")),
            format!("{}\t0/3000000\tno recovery target specified\n", tli - 1),
        )
        .unwrap();
    }
    if running_as_root() {
        chown_postgres(&pgdata);
    }
    let cluster = dir.join("cluster.json");
    write_json(&cluster, &cluster_json(server, params(&rgw, &bucket)));
    let sidecar = Sidecar::start(&dir, "instance", &sidecar_env(&rgw, &pgdata, "pg-empty-1"));
    let with = |mode: &str, cluster: &Path| {
        let mut env = sidecar.manager_env(cluster, &pgdata);
        env.push(("CNPG_CHECK_EMPTY".into(), mode.into()));
        env
    };
    let archive = |mode: &str, file: &str| {
        manager(
            &with(mode, &cluster),
            &["wal-archive", &format!("pg_wal/{file}")],
        )
    };
    let stored = || rgw.keys(&bucket, &format!("pg/{server}/wals/"));
    let refused = |r: &common::Run| {
        assert_eq!(r.code, 1, "{r:?}");
        assert!(r.stderr.contains("FailedPrecondition"), "{}", r.stderr);
        assert!(r.stderr.contains("Expected empty archive"), "{}", r.stderr);
        assert!(r.stderr.contains(server), "names the server: {}", r.stderr);
    };

    // The first push of a new cluster into an empty archive: allowed.
    let r = archive("true", SEG1);
    assert_eq!(r.code, 0, "{r:?}\n{}", sidecar.log_text());
    assert_eq!(stored(), vec![seg_key(server, SEG1)]);

    // Now it holds WAL: with the check on, refused before pushing, even
    // the identical file again.
    refused(&archive("true", SEG1));
    refused(&archive("true", "00000002.history"));
    assert_eq!(stored(), vec![seg_key(server, SEG1)], "nothing pushed");

    // An old operator (field unset): the marker file in PGDATA decides.
    let marker = pgdata.join(".check-empty-wal-archive");
    std::fs::write(&marker, "").unwrap();
    refused(&archive("unset", "00000002.history"));
    // ... unless the Cluster skips the check.
    let mut skipping = cluster_json(server, params(&rgw, &bucket));
    skipping["metadata"]["annotations"] = json!({"cnpg.io/skipEmptyWalArchiveCheck": "enabled"});
    let skip_file = dir.join("cluster-skip.json");
    write_json(&skip_file, &skipping);
    let r = manager(
        &with("unset", &skip_file),
        &["wal-archive", "pg_wal/00000002.history"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    // Current CloudNativePG computes the same from the marker.
    refused(&archive("auto", "00000003.history"));
    assert!(marker.exists(), "a refused push keeps the marker");
    std::fs::remove_file(&marker).unwrap();
    let r = archive("unset", "00000003.history");
    assert_eq!(r.code, 0, "no marker, no check: {r:?}");

    // With the check off, an identical push is fine (a repeated .ready).
    let r = archive("false", SEG1);
    assert_eq!(r.code, 0, "{r:?}");
    // Another database system's segment under the same name: refused with
    // pitr's message, the stored object left alone.
    let before = rgw.get(&bucket, &seg_key(server, SEG1));
    let foreign = pgdata.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::copy(fresh_segment(&dir, "b"), foreign.join(SEG1)).unwrap();
    if running_as_root() {
        chown_postgres(&foreign);
    }
    let r = manager(
        &with("false", &cluster),
        &["wal-archive", &format!("foreign/{SEG1}")],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("AlreadyExists"), "{}", r.stderr);
    assert!(r.stderr.contains("database system"), "{}", r.stderr);
    assert!(rgw.get(&bucket, &seg_key(server, SEG1)) == before);
    let mut want = vec![
        seg_key(server, SEG1),
        format!("pg/{server}/wals/00000002.history.gz"),
        format!("pg/{server}/wals/00000003.history.gz"),
    ];
    want.sort();
    assert_eq!(stored(), want);
}

#[test]
fn restore_misses_gaps_and_failures() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("cnpg-miss");
    let dir = TestDir::new("cnpg-miss");
    let server = "pg-miss";
    let cluster = dir.join("cluster.json");
    write_json(&cluster, &cluster_json(server, params(&rgw, &bucket)));
    let data = dir.join("data");
    let sidecar = Sidecar::start(&dir, "instance", &sidecar_env(&rgw, &data, "pg-miss-1"));
    let mut pg = Pg::init(data.clone());
    pg.conf(&archive_conf());
    let env = sidecar.manager_env(&cluster, &data);
    pg.start(&env);
    let mut last = String::new();
    for _ in 0..4 {
        pg.sql("create table if not exists t(x int); insert into t values (1)");
        last = pg.switch_wal();
    }
    pg.wait_archived(&last, Duration::from_secs(60));
    pg.stop();
    let seg = |n: u32| format!("00000001000000000000{n:04X}");
    assert!(last >= seg(4), "{last}");
    rgw.delete(&bucket, &seg_key(server, &seg(2)));

    let out = pg_dir(&dir, "restore");
    let dest = out.join("RECOVERYXLOG");
    let dest_s = dest.display().to_string();
    let no_secret = |r: &common::Run| {
        assert!(!r.stderr.contains(&rgw.secret_key), "{}", r.stderr);
        assert!(!sidecar.log_text().contains(&rgw.secret_key));
    };

    // A gap: the error names the later segment that is archived.
    let r = manager(&env, &["wal-restore", &seg(2), &dest_s]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("DataLoss"), "{}", r.stderr);
    assert!(
        r.stderr.contains(&seg(3)),
        "names the later segment: {}",
        r.stderr
    );
    assert_nothing_written(&dest);

    // Past the end of the archive: NotFound.
    let r = manager(&env, &["wal-restore", &seg(0x63), &dest_s]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("NotFound"), "{}", r.stderr);
    assert_nothing_written(&dest);

    // Present: restored whole, in recovery and in rewind mode.
    for mode in [&[][..], &["--rewind"][..]] {
        let mut args = vec!["wal-restore"];
        args.extend_from_slice(mode);
        let three = seg(3);
        args.extend_from_slice(&[three.as_str(), dest_s.as_str()]);
        let r = manager(&env, &args);
        assert_eq!(r.code, 0, "{r:?}\n{}", sidecar.log_text());
        assert!(
            std::fs::read(&dest).unwrap()
                == std::fs::read(data.join("pg_wal").join(seg(3))).unwrap()
        );
        std::fs::remove_file(&dest).unwrap();
    }

    // A bad setting: InvalidArgument naming the parameter, nothing written.
    let bad = dir.join("bad.json");
    let mut p = params(&rgw, &bucket);
    p["repository"] = json!("s3://B");
    write_json(&bad, &cluster_json(server, p));
    let r = manager(
        &sidecar.manager_env(&bad, &data),
        &["wal-restore", &seg(3), &dest_s],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("InvalidArgument") && r.stderr.contains("repository"),
        "{}",
        r.stderr
    );
    assert_nothing_written(&dest);

    // An unreachable store: retried as the parameters say, then Unavailable.
    let down = dir.join("down.json");
    let mut p = params(&rgw, &bucket);
    p["endpointURL"] = json!("https://127.0.0.1:9");
    p["restoreRetries"] = json!("1");
    p["restoreRetryWaitSeconds"] = json!("0.01");
    write_json(&down, &cluster_json(server, p));
    let r = manager(
        &sidecar.manager_env(&down, &data),
        &["wal-restore", &seg(3), &dest_s],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("Unavailable"), "{}", r.stderr);
    assert!(r.stderr.contains("after 2 tries"), "{}", r.stderr);
    assert_nothing_written(&dest);
    no_secret(&r);
}
