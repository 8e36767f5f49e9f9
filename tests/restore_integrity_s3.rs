//! `pitr restore` refuses a damaged base backup whatever its size, against
//! Ceph RGW over HTTPS: an uncompressed, unencrypted data.tar bigger than
//! one S3 part (so the object carries no checksum metadata and only
//! pitr.json records its SHA-256 and size) with one byte flipped inside a
//! file, or cut at a member boundary, with or without pitr.json; and a
//! client-side encrypted backup restores and starts.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::pg::{start_restored, Pg};
use common::s3::Rgw;
use common::{pitr, run, Run, TestDir};

fn pitr_run(env: &[(String, String)], args: &[&str]) -> Run {
    run(pitr().envs(env.iter().cloned()).args(args))
}

/// A primary archiving into the repository `env` points at.
fn primary(dir: &TestDir, env: &[(String, String)]) -> Pg {
    Pg::archiving(dir.join("primary"), env)
}

/// `pitr restore --pgdata <dir>/<name>`: the run and the directory.
fn restore(env: &[(String, String)], dir: &TestDir, name: &str) -> (Run, PathBuf) {
    let data = dir.join(name);
    let r = pitr_run(env, &["restore", "--pgdata", data.to_str().unwrap()]);
    (r, data)
}

fn entries_in(path: &Path) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

/// Asserts a restore was refused with `what` (and the object's key) in its
/// message, and left nothing in PGDATA.
fn assert_refused(r: &Run, data: &Path, key: &str, what: &[&str]) {
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains(key), "names {key}: {}", r.stderr);
    for w in what {
        assert!(r.stderr.contains(w), "says {w:?}: {}", r.stderr);
    }
    assert_eq!(entries_in(data), 0, "nothing left in {}", data.display());
}

/// Where each member's content lies in `tar`: (name, header offset,
/// content offset, size), read with the `tar` crate.
fn members(tar: &[u8]) -> Vec<(String, u64, u64, u64)> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().display().to_string(),
                e.raw_header_position(),
                e.raw_file_position(),
                e.size(),
            )
        })
        .collect()
}

#[test]
fn a_damaged_multipart_uncompressed_backup_is_refused() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("ri-damage");
    let dir = TestDir::new("ri-damage");
    let env = rgw.pitr_env(&bucket, "main");
    let pg = primary(&dir, &env);
    pg.pgbench(&["-i", "-s", "3", "-q"]);
    let b = pitr_run(
        &env,
        &[
            "backup",
            "-d",
            &pg.conninfo(),
            "--compression",
            "none",
            "--s3-part-size",
            "5",
        ],
    );
    assert_eq!(b.code, 0, "{b:?}");
    let id = b.stdout.trim().to_string();
    let key = format!("pg/main/base/{id}/data.tar");
    let details_key = format!("pg/main/pitr/backups/{id}/pitr.json");

    // The premise: a multipart object without pitr's checksum metadata.
    let original = rgw.get(&bucket, &key);
    assert!(
        original.len() > 20 << 20,
        "data.tar is {} bytes",
        original.len()
    );
    let (etag, metadata) = rgw.head(&bucket, &key);
    assert!(etag.contains('-'), "multipart upload, ETag {etag}");
    assert!(
        !metadata.contains_key("pitr-sha256"),
        "a multipart object carries no checksum: {metadata:?}"
    );

    // (a) One byte flipped inside the biggest file: the tar stays valid, so
    // only pitr.json's SHA-256 can catch it.
    let list = members(&original);
    let (name, _, content_at, size) = list.iter().max_by_key(|m| m.3).unwrap().clone();
    assert!(size > 1 << 20, "{name} is {size} bytes");
    let mut flipped = original.clone();
    flipped[(content_at + size / 2) as usize] ^= 0x01;
    assert_eq!(members(&flipped).len(), list.len(), "still a valid tar");
    rgw.put_raw(&bucket, &key, flipped);
    let (r, data) = restore(&env, &dir, "flipped");
    assert_refused(&r, &data, &key, &["pitr.json records", "SHA-256"]);

    // (b) Cut at a member boundary in the middle: no end-of-archive marker.
    let (cut_name, cut, _, _) = list
        .iter()
        .find(|m| m.1 > original.len() as u64 / 2)
        .unwrap()
        .clone();
    assert_eq!(cut % 512, 0);
    rgw.put_raw(&bucket, &key, original[..cut as usize].to_vec());
    let (r, data) = restore(&env, &dir, "cut");
    assert_refused(&r, &data, &key, &["truncated"]);

    // (c) The same cut with pitr.json gone (as for a backup Barman took):
    // the tar walker alone refuses it.
    let details = rgw.get(&bucket, &details_key);
    rgw.delete(&bucket, &details_key);
    let (r, data) = restore(&env, &dir, "cut-no-details");
    assert_refused(
        &r,
        &data,
        &key,
        &[
            "without the end-of-archive marker",
            &format!("at byte {cut}"),
        ],
    );
    assert!(!cut_name.is_empty());

    // The same backup, repaired, restores: the checks refuse only damage.
    rgw.put_raw(&bucket, &key, original);
    rgw.put_raw(&bucket, &details_key, details);
    let (r, data) = restore(&env, &dir, "repaired");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(data.join("PG_VERSION").exists());
    assert!(data.join("recovery.signal").exists());
}

#[test]
fn an_encrypted_backup_restores_and_starts() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("ri-cse");
    let dir = TestDir::new("ri-cse");
    let key_file = dir.join("repo.key");
    std::fs::write(&key_file, "5a".repeat(32)).unwrap();
    let mut env = rgw.pitr_env(&bucket, "main");
    env.push((
        "PITR_ENCRYPTION_KEY_FILE".into(),
        key_file.display().to_string(),
    ));
    let pg = primary(&dir, &env);
    pg.sql("create table t (id int primary key, v text)");
    pg.sql("insert into t select g, md5(g::text) from generate_series(1, 5000) g");
    let b = pitr_run(&env, &["backup", "-d", &pg.conninfo()]);
    assert_eq!(b.code, 0, "{b:?}");
    let id = b.stdout.trim().to_string();
    let stored = rgw.get(&bucket, &format!("pg/main/base/{id}/data.tar.gz"));
    assert!(stored.starts_with(b"PITRENC"), "data.tar.gz is encrypted");
    pg.sql("insert into t select g, 'after' from generate_series(5001, 5100) g");
    let last = pg.switch_wal();
    pg.wait_archived(&last, Duration::from_secs(120));

    let (r, data) = restore(&env, &dir, "restored");
    assert_eq!(r.code, 0, "{r:?}");
    let restored = start_restored(&data, &env, "archive_mode = off\n");
    assert_eq!(
        restored.sql("select count(*) || '/' || count(*) filter (where v = 'after') from t"),
        "5100/100"
    );

    // Without the key the same restore is refused, and leaves nothing.
    let mut no_key = env.clone();
    no_key.retain(|(k, _)| k != "PITR_ENCRYPTION_KEY_FILE");
    let (r, data) = restore(&no_key, &dir, "no-key");
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("PITR_ENCRYPTION_KEY_FILE"),
        "{}",
        r.stderr
    );
    assert_eq!(entries_in(&data), 0);
}

/// Every file under `root` with its content, for comparing two trees.
fn tree(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if p.is_dir() {
                out.insert(rel, Vec::new());
                stack.push(p);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn a_ranged_parallel_restore_is_byte_identical_to_one_range_at_a_time() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("ri-ranged");
    let dir = TestDir::new("ri-ranged");
    let env = rgw.pitr_env(&bucket, "main");
    let pg = primary(&dir, &env);
    pg.pgbench(&["-i", "-s", "3", "-q"]);
    for compression in ["none", "gzip"] {
        let b = pitr_run(
            &env,
            &[
                "backup",
                "-d",
                &pg.conninfo(),
                "--compression",
                compression,
                "--s3-part-size",
                "5",
            ],
        );
        assert_eq!(b.code, 0, "{b:?}");
        let id = b.stdout.trim().to_string();
        let v = pitr_run(&env, &["backup", "verify", &id]);
        assert_eq!(v.code, 0, "backup verify: {v:?}");

        let mut debug = env.clone();
        debug.push(("PITR_LOG_LEVEL".into(), "debug".into()));
        let restore_with = |jobs: &str| {
            let data = dir.join(format!("{compression}-jobs-{jobs}"));
            let r = pitr_run(
                &debug,
                &[
                    "restore",
                    "--backup-id",
                    &id,
                    "--jobs",
                    jobs,
                    "--pgdata",
                    data.to_str().unwrap(),
                ],
            );
            assert_eq!(r.code, 0, "{r:?}");
            (r, data)
        };
        let (one, one_data) = restore_with("1");
        let (four, four_data) = restore_with("4");
        let ranged_gets = |r: &Run| {
            r.stderr
                .lines()
                .filter(|l| l.contains("store request: GET") && l.contains("(bytes "))
                .count()
        };
        if compression == "none" {
            // Both in ranges (so a range that fails half way is fetched
            // again): one at a time with --jobs 1, four in flight with 4.
            assert!(
                ranged_gets(&one) >= 3,
                "--jobs 1 reads the data.tar in ranges, one at a time: {}",
                ranged_gets(&one)
            );
            assert!(
                ranged_gets(&four) >= 3,
                "--jobs 4 reads the {compression} data.tar in ranges: {}",
                ranged_gets(&four)
            );
        }
        let (a, b) = (tree(&one_data), tree(&four_data));
        assert!(a.len() > 900, "{} entries", a.len());
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "the same files"
        );
        for (path, content) in &a {
            // The recovery settings are the restore's own (they carry the
            // time of the restore), not the backup's.
            if path.as_os_str() != "postgresql.auto.conf" {
                assert!(b[path] == *content, "{} differs", path.display());
            }
        }
    }
}
