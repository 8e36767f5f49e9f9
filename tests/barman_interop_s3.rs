//! Interoperability with real barman-cloud (PyPI `barman[cloud]`) on the
//! same Ceph RGW bucket: Barman restores what pitr archived, pitr restores
//! what Barman archived, and pitr's never-overwrite check works on Barman's
//! objects (which carry no pitr metadata).

mod common;

use common::s3::Rgw;
use common::{fresh_segment, pitr, run, TestDir};

const SEG1: &str = "000000010000000000000001";

#[test]
fn barman_restores_what_pitr_archived() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("b-restore");
    let dir = TestDir::new("b-restore");
    let seg = fresh_segment(&dir, "a");
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let history = files.join("00000002.history");
    std::fs::write(&history, "1\t0/3000000\tno recovery target specified\n").unwrap();

    let env = rgw.pitr_env(&bucket, "pitrsrv");
    for f in [&seg, &history] {
        let r = run(pitr().envs(env.iter().cloned()).arg("wal-push").arg(f));
        assert_eq!(r.code, 0, "{r:?}");
    }
    for (name, original) in [(SEG1, &seg), ("00000002.history", &history)] {
        let dest = dir.join(format!("barman-{name}"));
        let r = run(rgw
            .barman("barman-cloud-wal-restore")
            .args(["--endpoint-url", &rgw.endpoint])
            .arg(format!("s3://{bucket}/pg"))
            .arg("pitrsrv")
            .arg(name)
            .arg(&dest));
        assert_eq!(r.code, 0, "barman-cloud-wal-restore {name}: {r:?}");
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(original).unwrap(),
            "{name}"
        );
    }
    // Barman's own "not found" for what pitr never archived.
    let r = run(rgw
        .barman("barman-cloud-wal-restore")
        .args(["--endpoint-url", &rgw.endpoint])
        .arg(format!("s3://{bucket}/pg"))
        .arg("pitrsrv")
        .arg("000000010000000000000002")
        .arg(dir.join("none")));
    assert_eq!(r.code, 1, "{r:?}");
}

#[test]
fn pitr_fetches_what_barman_archived() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("b-archive");
    let dir = TestDir::new("b-archive");
    let seg = fresh_segment(&dir, "a");

    for (server, flags) in [("barman-gz", vec!["--gzip"]), ("barman-plain", vec![])] {
        let r = run(rgw
            .barman("barman-cloud-wal-archive")
            .args(["--endpoint-url", &rgw.endpoint])
            .args(&flags)
            .arg(format!("s3://{bucket}/pg"))
            .arg(server)
            .arg(&seg));
        assert_eq!(r.code, 0, "barman-cloud-wal-archive {server}: {r:?}");
        let suffix = if flags.is_empty() { "" } else { ".gz" };
        let key = format!("pg/{server}/wals/0000000100000000/{SEG1}{suffix}");
        assert!(
            rgw.keys(&bucket, &format!("pg/{server}/")).contains(&key),
            "barman wrote {key}"
        );

        let env = rgw.pitr_env(&bucket, server);
        let dest = dir.join(format!("pitr-{server}"));
        let r = run(pitr()
            .envs(env.iter().cloned())
            .arg("wal-fetch")
            .arg(SEG1)
            .arg(&dest));
        assert_eq!(r.code, 0, "pitr wal-fetch from {server}: {r:?}");
        assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&seg).unwrap());

        // Pushing the same segment over Barman's copy: identical content is
        // proven by reading Barman's object back, and accepted.
        let r = run(pitr().envs(env.iter().cloned()).arg("wal-push").arg(&seg));
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stderr.contains("already archived"), "{}", r.stderr);

        // Different content under that name is refused, Barman's object kept.
        let before = rgw.get(&bucket, &key);
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[200_000] ^= 1;
        let other_dir = dir.join(format!("other-{server}"));
        std::fs::create_dir_all(&other_dir).unwrap();
        std::fs::write(other_dir.join(SEG1), bytes).unwrap();
        let r = run(pitr()
            .envs(env.iter().cloned())
            .arg("wal-push")
            .arg(other_dir.join(SEG1)));
        assert_eq!(r.code, 3, "{r:?}");
        assert_eq!(rgw.get(&bucket, &key), before);
        assert_eq!(
            rgw.keys(&bucket, &format!("pg/{server}/wals/0000000100000000/")),
            vec![key.clone()],
            "no second copy under another suffix"
        );
    }
}
