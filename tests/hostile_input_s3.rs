//! Hostile and broken input, against Ceph RGW over HTTPS with the real
//! binary: damaged objects planted under every kind of key pitr reads (WAL
//! segments, history files, backup.info, pitr.json, the backup manifest,
//! data.tar, identity and state records), and tars built to escape the
//! restore target. Each must be refused with an error naming the object,
//! with nothing written outside the target and nothing left in pg_wal;
//! wal-fetch exits 255 (never 1, "not found") outside standby mode.
//! The table of damage, behaviour and test is in docs/reliability.md
//! ("Hostile input").

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use common::pg::Pg;
use common::s3::Rgw;
use common::{pitr, run, Run, TestDir};

fn pitr_run(env: &[(String, String)], args: &[&str]) -> Run {
    run(pitr().envs(env.iter().cloned()).args(args))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).unwrap();
    out
}

/// A ustar header block (checksum set).
fn tar_header(name: &str, size: u64, kind: u8, link: &str) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000600\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn tar_file(name: &str, body: &[u8]) -> Vec<u8> {
    let mut v = tar_header(name, body.len() as u64, b'0', "");
    v.extend_from_slice(body);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

fn tar_end(mut v: Vec<u8>) -> Vec<u8> {
    v.extend([0u8; 1024]);
    v
}

/// The repository a test damages: a primary's archive and one backup.
struct Fixture {
    rgw: Rgw,
    bucket: String,
    env: Vec<(String, String)>,
    dir: TestDir,
    backup_id: String,
    /// The first archived segment, its key and its plain content.
    segment: String,
    segment_key: String,
    segment_plain: Vec<u8>,
    /// Another archived segment's plain content.
    other_plain: Vec<u8>,
}

impl Fixture {
    fn new() -> (Fixture, Pg) {
        let rgw = Rgw::from_env();
        let bucket = rgw.new_bucket("hostile");
        let dir = TestDir::new("hostile");
        let env = rgw.pitr_env(&bucket, "main");
        let pg = Pg::archiving(dir.join("primary"), &env);
        pg.sql("create table t as select generate_series(1, 1000) as id");
        let b = pitr_run(&env, &["backup", "-d", &pg.conninfo()]);
        assert_eq!(b.code, 0, "{b:?}");
        let backup_id = b.stdout.trim().to_string();
        pg.sql("insert into t select generate_series(1, 1000)");
        let last = pg.switch_wal();
        pg.wait_archived(&last, std::time::Duration::from_secs(60));
        let segment = "000000010000000000000001".to_string();
        let segment_key = format!("pg/main/wals/0000000100000000/{segment}.gz");
        let segment_plain = gunzip(&rgw.get(&bucket, &segment_key));
        let other_plain = gunzip(&rgw.get(
            &bucket,
            "pg/main/wals/0000000100000000/000000010000000000000002.gz",
        ));
        (
            Fixture {
                rgw,
                bucket,
                env,
                dir,
                backup_id,
                segment,
                segment_key,
                segment_plain,
                other_plain,
            },
            pg,
        )
    }

    /// Replaces `key` by `body` (no metadata, as Barman's objects or an
    /// intruder's), runs `check`, and puts the original back.
    fn with_damage(&self, key: &str, body: Vec<u8>, check: impl FnOnce()) {
        let original = self.rgw.get(&self.bucket, key);
        let (_, metadata) = self.rgw.head(&self.bucket, key);
        self.rgw.put_raw(&self.bucket, key, body);
        check();
        let metadata: HashMap<String, String> = metadata.into_iter().collect();
        self.rgw
            .put_with_metadata(&self.bucket, key, original, &metadata);
    }

    fn fetch(&self, name: &str, case: &str) -> (Run, std::path::PathBuf) {
        let pg_wal = self.dir.join(format!("fetch-{case}/pg_wal"));
        std::fs::create_dir_all(&pg_wal).unwrap();
        let r = pitr_run(
            &self.env,
            &[
                "wal-fetch",
                name,
                pg_wal.join("RECOVERYXLOG").to_str().unwrap(),
            ],
        );
        (r, pg_wal)
    }
}

fn entries(path: &Path) -> Vec<String> {
    std::fs::read_dir(path)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// wal-fetch exits 255 naming `key`, and leaves nothing in pg_wal.
fn assert_fetch_refused(r: &Run, pg_wal: &Path, key: &str, case: &str) {
    assert_eq!(r.code, 255, "{case}: {r:?}");
    assert!(r.stderr.contains(key), "{case}: names {key}: {}", r.stderr);
    assert!(
        entries(pg_wal).is_empty(),
        "{case}: left {:?} in pg_wal",
        entries(pg_wal)
    );
}

#[test]
fn damaged_wal_and_history_objects_are_refused_by_name() {
    let (f, _pg) = Fixture::new();
    // The same segment encrypted with a key this repository does not use:
    // pushed by the real binary into a local repository.
    let enc_dir = f.dir.join("enc");
    std::fs::create_dir_all(enc_dir.join("repo")).unwrap();
    std::fs::write(enc_dir.join("key"), "5a".repeat(32)).unwrap();
    let seg_file = enc_dir.join(&f.segment);
    std::fs::write(&seg_file, &f.segment_plain).unwrap();
    let enc_env = vec![
        (
            "PITR_REPO".to_string(),
            format!("file://{}", enc_dir.join("repo").display()),
        ),
        ("PITR_SERVER_NAME".into(), "main".into()),
        (
            "PITR_ENCRYPTION_KEY_FILE".into(),
            enc_dir.join("key").display().to_string(),
        ),
    ];
    let p = pitr_run(&enc_env, &["wal-push", seg_file.to_str().unwrap()]);
    assert_eq!(p.code, 0, "{p:?}");
    let encrypted = std::fs::read(
        enc_dir
            .join("repo/main/wals/0000000100000000")
            .join(format!("{}.gz", f.segment)),
    )
    .unwrap();
    let mut zstd_body = Vec::new();
    zstd::stream::copy_encode(&f.segment_plain[..], &mut zstd_body, 1).unwrap();
    let full = gzip(&f.segment_plain);
    let mut lying = f.segment_plain.clone();
    lying[32..36].copy_from_slice(&(64u32 << 20).to_le_bytes());
    let mut half = f.segment_plain.clone();
    half.truncate(half.len() / 2);
    let mut flipped = full.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated", full[..full.len() / 2].to_vec()),
        ("bit-flip", flipped),
        ("garbage", b"this is not a gzip stream".repeat(100)),
        ("zstd-under-gz", zstd_body),
        ("another-segment", gzip(&f.other_plain)),
        ("half-a-segment", gzip(&half)),
        ("header-lies-about-size", gzip(&lying)),
        ("wrong-key", encrypted),
    ];
    for (case, body) in cases {
        f.with_damage(&f.segment_key, body, || {
            let (r, pg_wal) = f.fetch(&f.segment, case);
            assert_fetch_refused(&r, &pg_wal, &f.segment_key, case);
            // archive verify --deep reads it back and reports it (code 5).
            let v = pitr_run(&f.env, &["archive", "verify", "--deep", "--full"]);
            assert_eq!(v.code, 5, "{case}: {v:?}");
            assert!(
                v.stdout.contains(&f.segment) || v.stderr.contains(&f.segment),
                "{case}: {v:?}"
            );
        });
    }
    // The original is back and restores.
    let (r, pg_wal) = f.fetch(&f.segment, "restored");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        std::fs::read(pg_wal.join("RECOVERYXLOG")).unwrap(),
        f.segment_plain
    );

    // History files: planted for a timeline 2 that has none.
    let hist_key = "pg/main/wals/00000002.history.gz";
    for (case, text) in [
        ("history-garbage", &b"\x00\x01\x02 not a history file"[..]),
        ("history-loop", b"1\t0/1000000\tr\n1\t0/2000000\tr\n"),
        ("history-self", b"2\t0/1000000\tr\n"),
        ("history-future", b"3\t0/1000000\tr\n"),
    ] {
        f.rgw.put_raw(&f.bucket, hist_key, gzip(text));
        let (r, pg_wal) = f.fetch("00000002.history", case);
        assert_fetch_refused(&r, &pg_wal, hist_key, case);
        let v = pitr_run(&f.env, &["archive", "verify", "--deep", "--full"]);
        assert_eq!(v.code, 5, "{case}: {v:?}");
        assert!(v.stdout.contains("00000002.history"), "{case}: {v:?}");
    }
    f.rgw.delete(&f.bucket, hist_key);

    // A damaged identity record: wal-push refuses (3) naming it; wal-fetch
    // of a present segment still works (it does not need the record).
    let id_key = "pg/main/pitr/identity.json";
    f.with_damage(id_key, b"{\"system_identifier\": 12".to_vec(), || {
        let seg = f.dir.join("push/000000010000000000000099");
        std::fs::create_dir_all(seg.parent().unwrap()).unwrap();
        let mut bytes = f.segment_plain.clone();
        let lsn = 0x99u64 * (16 << 20);
        bytes[8..16].copy_from_slice(&lsn.to_le_bytes());
        std::fs::write(&seg, bytes).unwrap();
        let r = pitr_run(&f.env, &["wal-push", seg.to_str().unwrap()]);
        assert_eq!(r.code, 3, "{r:?}");
        assert!(r.stderr.contains(id_key), "{r:?}");
        assert!(f
            .rgw
            .keys(
                &f.bucket,
                "pg/main/wals/0000000100000000/000000010000000000000099"
            )
            .is_empty());
    });
    // A damaged state record is ignored (logged), never fatal.
    let state_key = "pg/main/pitr/state/verify.json";
    f.rgw
        .put_raw(&f.bucket, state_key, b"\xff\xfe not json".to_vec());
    let s = pitr_run(&f.env, &["status"]);
    assert_eq!(s.code, 0, "{s:?}");
    let v = pitr_run(&f.env, &["archive", "verify"]);
    assert_eq!(v.code, 0, "{v:?}");
}

#[test]
fn damaged_catalog_objects_and_hostile_tars_are_refused_by_name() {
    let (f, _pg) = Fixture::new();
    let id = f.backup_id.clone();
    let info_key = format!("pg/main/base/{id}/backup.info");
    let details_key = format!("pg/main/pitr/backups/{id}/pitr.json");
    let manifest_key = format!("pg/main/pitr/backups/{id}/backup_manifest.gz");
    let tar_key = format!("pg/main/base/{id}/data.tar.gz");
    let info = String::from_utf8(f.rgw.get(&f.bucket, &info_key)).unwrap();
    let with_field = |field: &str, value: &str| -> Vec<u8> {
        info.lines()
            .map(|l| match l.split_once('=') {
                Some((k, _)) if k == field => format!("{k}={value}\n"),
                _ => format!("{l}\n"),
            })
            .collect::<String>()
            .into_bytes()
    };
    let restore = |case: &str| {
        let target = f.dir.join(format!("restore-{case}"));
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("outside"), b"untouched").unwrap();
        let data = target.join("pgdata");
        let r = pitr_run(
            &f.env,
            &[
                "restore",
                "--pgdata",
                data.to_str().unwrap(),
                "--backup-id",
                &id,
            ],
        );
        (r, target)
    };
    // Nothing but PGDATA (empty or absent) and the marker beside it.
    let assert_nothing_outside = |target: &Path, case: &str| {
        let mut names = entries(target);
        names.sort();
        assert!(
            names == ["outside"] || names == ["outside", "pgdata"],
            "{case}: {names:?}"
        );
        assert_eq!(std::fs::read(target.join("outside")).unwrap(), b"untouched");
        assert!(!Path::new("/tmp/pitr-hostile-abs-evil").exists(), "{case}");
    };

    // backup.info: malformed fields and garbage. Listing, showing and
    // restoring all refuse (3) naming the file.
    for (case, body) in [
        ("segment-size-zero", with_field("xlog_segment_size", "0")),
        ("end-before-begin", with_field("begin_xlog", "FF/0")),
        ("bad-timeline", with_field("timeline", "-1")),
        ("bad-lsn", with_field("end_xlog", "not-an-lsn")),
        ("binary", b"\x00\x01\x02\xff\xfe".to_vec()),
    ] {
        f.with_damage(&info_key, body, || {
            for args in [
                &["backup", "list"][..],
                &["backup", "show", &id],
                &["status"],
            ] {
                let r = pitr_run(&f.env, args);
                assert_eq!(r.code, 3, "{case} {args:?}: {r:?}");
                assert!(r.stderr.contains(&info_key), "{case} {args:?}: {r:?}");
            }
            let (r, target) = restore(case);
            assert_eq!(r.code, 3, "{case}: {r:?}");
            assert!(r.stderr.contains(&info_key), "{case}: {r:?}");
            assert_nothing_outside(&target, case);
        });
    }
    // Unknown fields are kept and ignored: the backup still lists.
    let mut extra = info.clone().into_bytes();
    extra.extend(b"some_future_field={'nested': [1, 2]}\n");
    f.with_damage(&info_key, extra, || {
        let r = pitr_run(&f.env, &["backup", "list"]);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stdout.contains(&id), "{r:?}");
    });

    // pitr.json and the manifest.
    f.with_damage(&details_key, b"{\"objects\": [".to_vec(), || {
        let r = pitr_run(&f.env, &["backup", "list"]);
        assert_eq!(r.code, 3, "{r:?}");
        assert!(r.stderr.contains(&details_key), "{r:?}");
    });
    for (case, body) in [
        ("manifest-garbage", gzip(b"{ not a manifest")),
        (
            "manifest-truncated-gzip",
            gzip(b"{\"PostgreSQL-Backup-Manifest-Version\": 1")[..10].to_vec(),
        ),
        ("manifest-empty", Vec::new()),
    ] {
        f.with_damage(&manifest_key, body, || {
            let r = pitr_run(&f.env, &["backup", "verify", &id]);
            assert_eq!(r.code, 3, "{case}: {r:?}");
            assert!(r.stderr.contains(&manifest_key), "{case}: {r:?}");
        });
    }

    // data.tar.gz: damaged streams and hostile members.
    let big = {
        let mut h = tar_header("base/1/1", 0, b'0', "");
        h[124..136].copy_from_slice(b"77777777777\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h.extend([7u8; 4096]);
        h
    };
    let chain = {
        let mut t = tar_header("s", 0, b'2', ".");
        t.extend(tar_header("t", 0, b'2', "s/s/.."));
        t.extend(tar_file("t/evil", b"x"));
        tar_end(t)
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("tar-empty-object", Vec::new(), "damaged"),
        ("tar-empty-gzip", gzip(&[]), "is empty"),
        ("tar-not-gzip", b"plain bytes".to_vec(), ""),
        ("tar-garbage", gzip(&[0x42u8; 4096]), "checksum"),
        (
            "tar-dotdot",
            gzip(&tar_end(tar_file("../evil", b"x"))),
            "'..'",
        ),
        (
            "tar-absolute",
            gzip(&tar_end(tar_file("/tmp/pitr-hostile-abs-evil", b"x"))),
            "absolute",
        ),
        (
            "tar-symlink-out",
            gzip(&tar_end(tar_header("up", 0, b'2', "../../etc"))),
            "leaves",
        ),
        ("tar-symlink-chain", gzip(&chain), "through the link"),
        (
            "tar-hardlink-out",
            gzip(&tar_end(tar_header("pw", 0, b'1', "../outside"))),
            "leaves",
        ),
        (
            "tar-fifo",
            gzip(&tar_end(tar_header("fifo", 0, b'6', ""))),
            "never holds",
        ),
        (
            "tar-device",
            gzip(&tar_end(tar_header("sda", 0, b'4', ""))),
            "never holds",
        ),
        ("tar-huge-claim", gzip(&big), "truncated"),
    ];
    for (case, body, why) in cases {
        f.with_damage(&tar_key, body, || {
            let (r, target) = restore(case);
            assert_eq!(r.code, 3, "{case}: {r:?}");
            assert!(r.stderr.contains(&tar_key), "{case}: {r:?}");
            assert!(r.stderr.contains(why), "{case}: says {why:?}: {r:?}");
            assert_nothing_outside(&target, case);
            assert!(
                entries(&target.join("pgdata")).is_empty(),
                "{case}: PGDATA holds {:?}",
                entries(&target.join("pgdata"))
            );
        });
    }
}
