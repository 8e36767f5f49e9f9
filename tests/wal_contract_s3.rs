//! The wal-push / wal-fetch contract with PostgreSQL, against the real Ceph
//! RGW over HTTPS: exit codes, never overwrite, nothing half-written, errors
//! that name the fix, secrets never shown.

mod common;

use std::path::Path;

use common::s3::Rgw;
use common::stop_point::StopPoints;
use common::{fresh_segment, pitr, run, Run, TestDir};

const SEG1: &str = "000000010000000000000001";

fn push(env: &[(String, String)], path: &Path, extra: &[&str]) -> Run {
    run(pitr()
        .envs(env.iter().cloned())
        .arg("wal-push")
        .args(extra)
        .arg(path))
}

fn fetch(env: &[(String, String)], name: &str, dest: &Path, extra: &[&str]) -> Run {
    run(pitr()
        .envs(env.iter().cloned())
        .args([
            "wal-fetch",
            "--retries",
            "1",
            "--retry-wait",
            "0.05",
            "--prefetch",
            "0",
        ])
        .args(extra)
        .arg(name)
        .arg(dest))
}

fn seg_key(server: &str, name: &str) -> String {
    format!("pg/{server}/wals/{}/{name}.gz", &name[..16])
}

/// Nothing at `dest` and no temporary file beside it.
fn assert_nothing_written(dest: &Path) {
    assert!(!dest.exists(), "{} must not exist", dest.display());
    let dir = dest.parent().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("pitr-tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

#[test]
fn push_is_idempotent_and_never_overwrites() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("idem");
    let dir = TestDir::new("idem");
    let seg = fresh_segment(&dir, "a");
    let env = rgw.pitr_env(&bucket, "main");

    let r = push(&env, &seg, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let key = seg_key("main", SEG1);
    assert!(rgw.keys(&bucket, "pg/main/wals/").contains(&key));
    let stored = rgw.get(&bucket, &key);

    let again = push(&env, &seg, &[]);
    assert_eq!(again.code, 0, "same content again must succeed: {again:?}");
    assert!(
        again.stderr.contains("already archived"),
        "{}",
        again.stderr
    );

    // Same name, different bytes (a record in the middle changed).
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[100_000] ^= 0xFF;
    let other_dir = dir.join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = other_dir.join(SEG1);
    std::fs::write(&other, bytes).unwrap();
    let refused = push(&env, &other, &[]);
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(
        refused.stderr.contains("different content"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("refusing to overwrite"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        rgw.get(&bucket, &key),
        stored,
        "the stored object must be unchanged"
    );

    // And what is stored still fetches back as the original.
    let dest = dir.join("back");
    let r = fetch(&env, SEG1, &dest, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&seg).unwrap());
}

#[test]
fn another_clusters_wal_is_refused() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("foreign");
    let dir = TestDir::new("foreign");
    let env = rgw.pitr_env(&bucket, "main");
    assert_eq!(push(&env, &fresh_segment(&dir, "a"), &[]).code, 0);
    // A second initdb has another system identifier; its first segment has
    // a name that is not yet archived only if we move it along: use a
    // .partial of the same segment name so the identity check decides.
    let b = fresh_segment(&dir, "b");
    let partial = b.with_file_name(format!("{SEG1}.partial"));
    std::fs::rename(&b, &partial).unwrap();
    let r = push(&env, &partial, &[]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains("belongs to database system"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--server-name"), "{}", r.stderr);
    assert!(!rgw
        .keys(&bucket, "pg/main/wals/")
        .iter()
        .any(|k| k.contains(".partial")));
}

#[test]
fn fetch_exit_codes_follow_the_contract() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("codes");
    let dir = TestDir::new("codes");
    let env = rgw.pitr_env(&bucket, "main");
    let seg = fresh_segment(&dir, "a");
    assert_eq!(push(&env, &seg, &[]).code, 0);
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();

    // Not in the archive: 1, for segments and for history-file probes.
    for name in ["000000010000000000000002", "00000002.history"] {
        let dest = out.join("RECOVERYXLOG");
        let r = fetch(&env, name, &dest, &[]);
        assert_eq!(r.code, 1, "{name}: {r:?}");
        assert_nothing_written(&dest);
    }

    // A damaged object: retried, then above 125, nothing written.
    let damaged = "000000010000000000000003";
    let mut gz = rgw.get(&bucket, &seg_key("main", SEG1));
    let mid = gz.len() / 2;
    gz[mid] ^= 0x55;
    rgw.put_raw(&bucket, &seg_key("main", damaged), gz);
    let dest = out.join("RECOVERYXLOG");
    let r = fetch(&env, damaged, &dest, &[]);
    assert_eq!(r.code, 255, "{r:?}");
    assert!(
        r.stderr.contains("attempt 1 of 2 failed"),
        "must retry: {}",
        r.stderr
    );
    assert!(r.stderr.contains("not in standby mode"), "{}", r.stderr);
    assert_nothing_written(&dest);

    // Segment 2 is missing but segment 3 is archived: a gap, not the end of
    // the archive. Ending recovery there would lose segment 3 onwards.
    let r = fetch(&env, "000000010000000000000002", &dest, &[]);
    assert_eq!(r.code, 255, "{r:?}");
    assert!(r.stderr.contains("the archive has a gap"), "{}", r.stderr);
    assert!(
        r.stderr.contains(damaged),
        "names the later segment: {}",
        r.stderr
    );
    assert_nothing_written(&dest);
    let r = fetch(&env, "000000010000000000000002", &dest, &["--standby"]);
    assert_eq!(r.code, 1, "standby mode keeps streaming: {r:?}");
    // A later segment on another timeline is no gap.
    let r = fetch(&env, "000000020000000000000002", &dest, &[]);
    assert_eq!(r.code, 1, "{r:?}");

    // The same failure in standby mode (standby.signal in the data
    // directory, or the flag): 1, so PostgreSQL falls back to streaming.
    let pgdata = dir.join("standby-data");
    std::fs::create_dir_all(&pgdata).unwrap();
    std::fs::write(pgdata.join("standby.signal"), "").unwrap();
    let r = fetch(
        &env,
        damaged,
        &dest,
        &["--pgdata", pgdata.to_str().unwrap()],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("standby mode"), "{}", r.stderr);
    assert!(r.stderr.contains("standby.signal exists"), "{}", r.stderr);
    assert_nothing_written(&dest);
    let r = fetch(&env, damaged, &dest, &["--standby"]);
    assert_eq!(r.code, 1, "{r:?}");

    // Unreachable endpoint: above 125 with a message naming the setting.
    let mut down = env.clone();
    down.retain(|(k, _)| k != "PITR_ENDPOINT_URL");
    down.push(("PITR_ENDPOINT_URL".into(), "https://127.0.0.1:9".into()));
    let r = fetch(&down, SEG1, &dest, &[]);
    assert_eq!(r.code, 255, "{r:?}");
    assert!(r.stderr.contains("PITR_ENDPOINT_URL"), "{}", r.stderr);
    assert_nothing_written(&dest);

    // An invalid name outside standby mode is a real failure too.
    let r = fetch(&env, "RECOVERYXLOG", &dest, &[]);
    assert_eq!(r.code, 255, "{r:?}");
    assert!(r.stderr.contains("is not a WAL file name"), "{}", r.stderr);
}

#[test]
fn client_side_encryption_round_trips_and_wrong_key_fails() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("cse");
    let dir = TestDir::new("cse");
    let key_a = dir.join("a.key");
    let key_b = dir.join("b.key");
    std::fs::write(&key_a, "11".repeat(32)).unwrap();
    std::fs::write(&key_b, "22".repeat(32)).unwrap();
    let seg = fresh_segment(&dir, "a");
    let mut env = rgw.pitr_env(&bucket, "main");
    env.push((
        "PITR_ENCRYPTION_KEY_FILE".into(),
        key_a.display().to_string(),
    ));
    assert_eq!(push(&env, &seg, &[]).code, 0);

    // Stored bytes are neither the segment nor plain gzip.
    let stored = rgw.get(&bucket, &seg_key("main", SEG1));
    assert!(
        stored.starts_with(b"PITRENC"),
        "object must carry pitr's encryption header"
    );

    let dest = dir.join("back");
    let r = fetch(&env, SEG1, &dest, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&seg).unwrap());
    std::fs::remove_file(&dest).unwrap();

    let mut wrong = env.clone();
    wrong.retain(|(k, _)| k != "PITR_ENCRYPTION_KEY_FILE");
    wrong.push((
        "PITR_ENCRYPTION_KEY_FILE".into(),
        key_b.display().to_string(),
    ));
    let r = fetch(&wrong, SEG1, &dest, &[]);
    assert_eq!(r.code, 255, "{r:?}");
    assert!(
        r.stderr.contains("encrypted with another key"),
        "{}",
        r.stderr
    );
    assert_nothing_written(&dest);

    let mut none = env.clone();
    none.retain(|(k, _)| k != "PITR_ENCRYPTION_KEY_FILE");
    let r = fetch(&none, SEG1, &dest, &[]);
    assert_eq!(r.code, 255, "{r:?}");
    assert!(
        r.stderr.contains("PITR_ENCRYPTION_KEY_FILE"),
        "{}",
        r.stderr
    );
    assert_nothing_written(&dest);
}

#[test]
fn server_side_encryption_needs_https() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("sse");
    let dir = TestDir::new("sse");
    let seg = fresh_segment(&dir, "a");

    // SSE-S3 over HTTPS: RGW accepts it.
    let mut env = rgw.pitr_env(&bucket, "aes");
    env.push(("PITR_SSE".into(), "AES256".into()));
    let r = push(&env, &seg, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(rgw
        .keys(&bucket, "pg/aes/wals/")
        .contains(&seg_key("aes", SEG1)));

    // SSE-KMS over HTTPS: RGW encrypts with the named key and says so.
    let mut kms = rgw.pitr_env(&bucket, "kms");
    kms.push(("PITR_SSE".into(), "aws:kms".into()));
    kms.push(("PITR_SSE_KMS_KEY_ID".into(), rgw.kms_key_id.clone()));
    let r = push(&kms, &seg, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let (sse, key_id) = rgw.sse_of(&bucket, &seg_key("kms", SEG1));
    assert_eq!(sse.as_deref(), Some("aws:kms"));
    assert_eq!(key_id.as_deref(), Some(rgw.kms_key_id.as_str()));
    let dest = dir.join("back");
    assert_eq!(fetch(&kms, SEG1, &dest, &[]).code, 0);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&seg).unwrap());

    // Over plain HTTP pitr refuses before sending anything.
    let mut http = rgw.pitr_env(&bucket, "plain");
    http.retain(|(k, _)| k != "PITR_ENDPOINT_URL");
    http.push(("PITR_ENDPOINT_URL".into(), rgw.http_endpoint.clone()));
    http.push(("PITR_SSE".into(), "AES256".into()));
    let r = push(&http, &seg, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("over plain HTTP"), "{}", r.stderr);
    assert!(
        r.stderr.contains("use an https:// endpoint, or --sse none"),
        "{}",
        r.stderr
    );
    assert!(
        rgw.keys(&bucket, "pg/plain/").is_empty(),
        "nothing may reach the store"
    );

    // Without SSE, plain HTTP works (for stores without TLS).
    http.retain(|(k, _)| k != "PITR_SSE");
    assert_eq!(push(&http, &seg, &[]).code, 0);
}

#[test]
fn store_errors_name_the_setting_and_hide_secrets() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("errs");
    let dir = TestDir::new("errs");
    let seg = fresh_segment(&dir, "a");
    let base = rgw.pitr_env(&bucket, "main");
    let with = |k: &str, v: &str| {
        let mut e = base.clone();
        e.retain(|(n, _)| n != k);
        if !v.is_empty() {
            e.push((k.to_string(), v.to_string()));
        }
        e
    };

    let r = push(
        &with("S3_SECRET_ACCESS_KEY", "not-the-secret-key-0000"),
        &seg,
        &[],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("rejected the credentials"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("S3_SECRET_ACCESS_KEY"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("not-the-secret-key-0000"),
        "secret leaked: {}",
        r.stderr
    );
    assert!(
        !r.stderr.contains(&rgw.secret_key),
        "secret leaked: {}",
        r.stderr
    );

    let r = push(&with("PITR_CA_BUNDLE", ""), &seg, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("not trusted"), "{}", r.stderr);
    assert!(
        r.stderr.contains("--ca-bundle / PITR_CA_BUNDLE"),
        "{}",
        r.stderr
    );

    let r = push(&with("PITR_REPO", "s3://no-such-bucket-pitr/pg"), &seg, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    assert!(r.stderr.contains("PITR_REPO"), "{}", r.stderr);

    let r = push(&with("S3_ACCESS_KEY_ID", ""), &seg, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no S3 credentials"), "{}", r.stderr);

    assert!(
        rgw.keys(&bucket, "").is_empty(),
        "nothing may be stored by a failed push"
    );
}

#[test]
fn every_archive_file_kind_round_trips() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("kinds");
    let dir = TestDir::new("kinds");
    let env = rgw.pitr_env(&bucket, "main");
    let seg = fresh_segment(&dir, "a");
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let history = files.join("00000002.history");
    std::fs::write(&history, "1\t0/3000000\tno recovery target specified\n").unwrap();
    let backup = files.join(format!("{SEG1}.00000028.backup"));
    std::fs::write(
        &backup,
        "START WAL LOCATION: 0/1000028 (file 000000010000000000000001)\n",
    )
    .unwrap();
    let partial = files.join(format!("{SEG1}.partial"));
    std::fs::copy(&seg, &partial).unwrap();

    for f in [&seg, &history, &backup, &partial] {
        let r = push(&env, f, &[]);
        assert_eq!(r.code, 0, "{}: {r:?}", f.display());
    }
    let keys = rgw.keys(&bucket, "pg/main/wals/");
    assert!(
        keys.contains(&"pg/main/wals/00000002.history.gz".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&format!(
            "pg/main/wals/0000000100000000/{SEG1}.00000028.backup.gz"
        )),
        "{keys:?}"
    );
    assert!(
        keys.contains(&format!("pg/main/wals/0000000100000000/{SEG1}.partial.gz")),
        "{keys:?}"
    );

    for f in [&seg, &history, &backup, &partial] {
        let name = f.file_name().unwrap().to_str().unwrap();
        let dest = dir.join("back");
        let r = fetch(&env, name, &dest, &[]);
        assert_eq!(r.code, 0, "{name}: {r:?}");
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(f).unwrap(),
            "{name}"
        );
    }

    // A history file is never overwritten with different content.
    std::fs::write(&history, "1\t0/4000000\tno recovery target specified\n").unwrap();
    assert_eq!(push(&env, &history, &[]).code, 3);

    // A file whose content does not match its name is refused.
    let renamed = files.join("000000010000000000000007");
    std::fs::copy(&seg, &renamed).unwrap();
    let r = push(&env, &renamed, &[]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains("not the segment its name claims"),
        "{}",
        r.stderr
    );

    // A name that is not a WAL file name is a usage error.
    let junk = files.join("notwal");
    std::fs::write(&junk, "x").unwrap();
    let r = push(&env, &junk, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("is not a WAL file name"), "{}", r.stderr);
}

/// Waits until the prefetcher has spooled segments 2 and 3.
fn wait_spooled_2_and_3(spool: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(spool.join("000000010000000000000002").exists()
        && spool.join("000000010000000000000003").exists())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the prefetcher did not spool 2 and 3"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Segments 1 to `n` of one cluster, archived: the first segment of a
/// fresh cluster and renamed copies whose page headers say they are 2, 3,
/// ... Returns their directory and the first segment's bytes.
fn pushed_segments(
    env: &[(String, String)],
    dir: &TestDir,
    n: u64,
) -> (std::path::PathBuf, Vec<u8>) {
    let seg = fresh_segment(dir, "a");
    let bytes = std::fs::read(&seg).unwrap();
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    for i in 1..=n {
        let mut b = bytes.clone();
        b[8..16].copy_from_slice(&(i * (16 << 20)).to_le_bytes());
        let f = files.join(format!("0000000100000000000000{i:02X}"));
        std::fs::write(&f, &b).unwrap();
        assert_eq!(push(env, &f, &[]).code, 0);
    }
    (files, bytes)
}

#[test]
fn wal_fetch_prefetches_the_next_segments() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("prefetch");
    let dir = TestDir::new("prefetch");
    let env = rgw.pitr_env(&bucket, "main");
    let (files, bytes) = pushed_segments(&env, &dir, 4);
    let pg_wal = dir.join("pgdata/pg_wal");
    std::fs::create_dir_all(&pg_wal).unwrap();
    let dest = pg_wal.join("RECOVERYXLOG");
    let fetch_pf = |name: &str| {
        run(pitr()
            .envs(env.iter().cloned())
            .args(["wal-fetch", "--prefetch", "2", name])
            .arg(&dest))
    };

    let r = fetch_pf("000000010000000000000001");
    assert_eq!(r.code, 0, "{r:?}");
    let spool = pg_wal.join(".pitr-prefetch");
    wait_spooled_2_and_3(&spool);
    let r = fetch_pf("000000010000000000000002");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("restored from the prefetch spool"),
        "{}",
        r.stderr
    );
    let mut expected = bytes.clone();
    expected[8..16].copy_from_slice(&(2u64 * (16 << 20)).to_le_bytes());
    assert!(
        std::fs::read(&dest).unwrap() == expected,
        "the spooled copy is the archived segment"
    );
    // A spool filled from another repository is never used.
    std::fs::write(spool.join(".source"), "s3://elsewhere (other)").unwrap();
    let r = fetch_pf("000000010000000000000003");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stderr.contains("prefetch spool"), "{}", r.stderr);
    // At the end of the archive the spool is removed.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let r = fetch_pf("000000010000000000000009");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(!spool.exists(), "spool cleared at the end of the archive");

    // After promotion the server archives again: that push removes a spool
    // the last fetch left behind.
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::write(spool.join("000000010000000000000005"), "left over").unwrap();
    let in_pg_wal = pg_wal.join("000000010000000000000001");
    std::fs::copy(files.join("000000010000000000000001"), &in_pg_wal).unwrap();
    assert_eq!(push(&env, &in_pg_wal, &[]).code, 0);
    assert!(!spool.exists(), "wal-push removes the prefetch spool");
}

#[test]
fn a_fetch_killed_before_its_rename_leaves_no_segment_and_the_next_cleans_up() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("fetch-kill");
    let dir = TestDir::new("fetch-kill");
    let env = rgw.pitr_env(&bucket, "main");
    let seg = fresh_segment(&dir, "a");
    assert_eq!(push(&env, &seg, &[]).code, 0);
    let pg_wal = dir.join("pg_wal");
    let stops = StopPoints::new(dir.join("stops"));
    std::fs::create_dir_all(&pg_wal).unwrap();
    let dest = pg_wal.join("RECOVERYXLOG");

    // Frozen after the segment is written, verified and fsynced, before
    // the rename that makes it visible; then killed.
    stops.kill_at(
        pitr()
            .envs(env.iter().cloned())
            .args(["wal-fetch", "--prefetch", "0", SEG1])
            .arg(&dest),
        "fetch-before-rename",
        std::time::Duration::from_secs(60),
    );
    assert!(!dest.exists(), "PostgreSQL never sees the segment");
    let left: Vec<String> = std::fs::read_dir(&pg_wal)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left.len(),
        1,
        "the killed fetch's hidden temporary file: {left:?}"
    );
    assert!(left[0].starts_with(".RECOVERYXLOG.pitr-tmp-"), "{left:?}");

    // PostgreSQL asks again: it restores, and the stale file is gone.
    let r = fetch(&env, SEG1, &dest, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(&seg).unwrap());
    let left: Vec<String> = std::fs::read_dir(&pg_wal)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["RECOVERYXLOG".to_string()]);
}

#[test]
fn parallel_prefetch_across_a_missing_segment_reports_the_gap() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("pf-gap");
    let dir = TestDir::new("pf-gap");
    let env = rgw.pitr_env(&bucket, "main");
    // Segments 1 to 10 of one cluster, then 4 lost from the archive.
    let (files, _) = pushed_segments(&env, &dir, 10);
    let lost_key = seg_key("main", "000000010000000000000004");
    let lost = rgw.get(&bucket, &lost_key);
    rgw.delete(&bucket, &lost_key);

    let pg_wal = dir.join("pgdata/pg_wal");
    std::fs::create_dir_all(&pg_wal).unwrap();
    let dest = pg_wal.join("RECOVERYXLOG");
    let fetch_pf = |name: &str| {
        run(pitr()
            .envs(env.iter().cloned())
            .args(["wal-fetch", "--prefetch", "8", "--retries", "1", name])
            .arg(&dest))
    };
    let r = fetch_pf("000000010000000000000001");
    assert_eq!(r.code, 0, "{r:?}");
    let spool = pg_wal.join(".pitr-prefetch");
    wait_spooled_2_and_3(&spool);
    for name in ["000000010000000000000002", "000000010000000000000003"] {
        let r = fetch_pf(name);
        assert_eq!(r.code, 0, "{r:?}");
    }
    // The prefetcher never made up the missing segment; asking for it is
    // a gap (recovery must not end here), not "not in the archive".
    assert!(!spool.join("000000010000000000000004").exists());
    std::fs::remove_file(&dest).unwrap();
    let r = fetch_pf("000000010000000000000004");
    assert_eq!(r.code, 255, "{r:?}");
    assert!(r.stderr.contains("the archive has a gap"), "{}", r.stderr);
    assert!(
        r.stderr.contains("000000010000000000000005"),
        "{}",
        r.stderr
    );
    assert!(!dest.exists(), "nothing written for the missing segment");
    // In standby mode the same gap is "not found" (PostgreSQL then streams).
    let r = run(pitr()
        .envs(env.iter().cloned())
        .args(["wal-fetch", "--standby", "--retries", "1"])
        .arg("000000010000000000000004")
        .arg(&dest));
    assert_eq!(r.code, 1, "{r:?}");
    // Put back, it restores, and the segments after it still do, from the
    // spool or the archive, byte for byte.
    rgw.put_raw(&bucket, &lost_key, lost);
    for n in 4u64..=10 {
        let name = format!("0000000100000000000000{n:02X}");
        let r = fetch_pf(&name);
        assert_eq!(r.code, 0, "{name}: {r:?}");
        assert!(
            std::fs::read(&dest).unwrap() == std::fs::read(files.join(&name)).unwrap(),
            "{name} differs"
        );
    }
}

/// The first segment of a cluster made with `initdb --wal-segsize 64`.
fn big_segment(dir: &TestDir) -> std::path::PathBuf {
    let data = dir.join("initdb-64");
    common::pg::initdb_segsize(&data, 64);
    let out = dir.join("seg-64");
    std::fs::create_dir_all(&out).unwrap();
    let dst = out.join(SEG1);
    std::fs::copy(data.join("pg_wal").join(SEG1), &dst).unwrap();
    dst
}

#[test]
fn segments_larger_than_a_part_stay_atomic_and_verifiable() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("seg64");
    let dir = TestDir::new("seg64");
    let seg = big_segment(&dir);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 64 << 20);
    let env = rgw.pitr_env(&bucket, "main");
    // Uncompressed, with 5 MiB parts: the object is 13 parts' worth.
    let opts = ["--compression", "none", "--s3-part-size", "5"];
    let key = format!("pg/main/wals/{}/{SEG1}", &SEG1[..16]);

    // Two pushes of different content under one name, at once: exactly one
    // is stored, the other is refused, and the stored object is the winner's.
    let mut other = std::fs::read(&seg).unwrap();
    other[40 << 20] ^= 0xFF;
    let other_path = dir.join("other").join(SEG1);
    std::fs::create_dir_all(other_path.parent().unwrap()).unwrap();
    std::fs::write(&other_path, &other).unwrap();
    let racers: Vec<_> = [seg.clone(), other_path.clone()]
        .into_iter()
        .map(|p| {
            let env = env.clone();
            std::thread::spawn(move || push(&env, &p, &opts))
        })
        .collect();
    let results: Vec<Run> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let codes: Vec<i32> = results.iter().map(|r| r.code).collect();
    assert!(
        codes == [0, 3] || codes == [3, 0],
        "one stored, one refused: {results:?}"
    );
    let winner = if codes[0] == 0 { &seg } else { &other_path };
    let stored = rgw.get(&bucket, &key);
    assert!(
        stored == std::fs::read(winner).unwrap(),
        "the stored object is the winner's"
    );

    // It carries pitr's checksum and size, so every read verifies it.
    let meta = rgw.metadata_of(&bucket, &key);
    assert_eq!(
        meta.get("pitr-size").map(String::as_str),
        Some("67108864"),
        "{meta:?}"
    );
    assert_eq!(
        meta.get("pitr-sha256").map(|s| s.len()),
        Some(64),
        "{meta:?}"
    );

    // A damaged copy in the store is refused on fetch, nothing written.
    let mut damaged = stored.clone();
    damaged[50 << 20] ^= 0x01;
    // put_raw drops pitr's metadata: put the object back with it.
    rgw.put_with_metadata(&bucket, &key, damaged, &meta);
    let dest = dir.join("back").join("RECOVERYXLOG");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let r = fetch(&env, SEG1, &dest, &opts);
    assert_eq!(r.code, 255, "{r:?}");
    assert!(r.stderr.contains("SHA-256"), "{}", r.stderr);
    assert_nothing_written(&dest);
}

#[test]
fn the_cnpg_secret_keys_stand_in_for_repository_settings() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("s3keys");
    let dir = TestDir::new("s3keys");
    let seg = fresh_segment(&dir, "a");
    // Only what a CloudNativePG object-store Secret holds, plus the CA and
    // the server name.
    let env: Vec<(String, String)> = vec![
        ("S3_BUCKET".into(), bucket.clone()),
        ("S3_PATH".into(), "/team/prod/".into()),
        ("S3_ENDPOINT".into(), rgw.endpoint.clone()),
        ("S3_REGION".into(), rgw.region.clone()),
        ("S3_ACCESS_KEY_ID".into(), rgw.access_key.clone()),
        ("S3_SECRET_ACCESS_KEY".into(), rgw.secret_key.clone()),
        ("PITR_CA_BUNDLE".into(), rgw.ca.clone()),
        ("PITR_SERVER_NAME".into(), "main".into()),
    ];
    let r = push(&env, &seg, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let key = format!("team/prod/main/wals/{}/{SEG1}.gz", &SEG1[..16]);
    assert!(
        rgw.keys(&bucket, "team/").contains(&key),
        "{:?}",
        rgw.keys(&bucket, "")
    );
    // Flags still win over the Secret's keys.
    let mut flagged = env.clone();
    flagged.push(("PITR_REPO".into(), format!("s3://{bucket}/other")));
    assert_eq!(push(&flagged, &seg, &[]).code, 0);
    assert!(rgw
        .keys(&bucket, "other/main/wals/")
        .iter()
        .any(|k| k.ends_with(".gz")));
}
