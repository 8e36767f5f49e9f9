//! `pitr archive verify` on a real PostgreSQL 15 archiving into the real
//! Ceph RGW over HTTPS: a clean archive is clean; a second run lists only
//! the new segments (counted from pitr's request log); a rewritten object
//! is caught by --deep; a deleted middle segment is named as exactly one
//! gap by a full walk, with the distinct exit code, and the backup whose
//! restore would cross it is reported as stopping there; `status` shows
//! what the last verify found.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::pg::Pg;
use common::s3::Rgw;
use common::{pitr, pitr_bin, run, Run, TestDir};
use serde_json::Value;

/// `archive verify`'s exit code when it finds problems (src/cli/exit.rs).
const PROBLEMS: i32 = 5;

fn verify(env: &[(String, String)], extra: &[&str]) -> (Run, Value) {
    let r = run(pitr()
        .envs(env.iter().cloned())
        .args(["archive", "verify", "--format", "json"])
        .args(extra));
    let v: Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"));
    (r, v)
}

/// Every key in a hash directory under `wals/` (not the history files).
fn hash_dir_keys(rgw: &Rgw, bucket: &str) -> BTreeSet<String> {
    rgw.keys(bucket, "pg/main/wals/")
        .into_iter()
        .filter(|k| k["pg/main/wals/".len()..].contains('/'))
        .collect()
}

fn key_of(segment: &str) -> String {
    format!("pg/main/wals/{}/{segment}.gz", &segment[..16])
}

#[test]
fn verify_finds_gaps_and_damage_and_reads_only_what_is_new() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("verify");
    let dir = TestDir::new("verify");
    let env = rgw.pitr_env(&bucket, "main");

    let data = dir.join("primary");
    common::pg::initdb_segsize(&data, 1);
    let mut pg = Pg::existing(data);
    pg.conf(&format!(
        "archive_mode = on\narchive_command = '{} wal-push %p'\n",
        pitr_bin().display()
    ));
    pg.start(&env);
    pg.sql("create table t (id int)");
    let switch = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                pg.sql(&format!("insert into t values ({i})"));
                pg.switch_wal()
            })
            .collect()
    };
    switch(3);
    let b = run(pitr().envs(env.iter().cloned()).args([
        "backup",
        "-d",
        &pg.conninfo(),
        "--wal-timeout",
        "60",
    ]));
    assert_eq!(b.code, 0, "{b:?}");
    let after_backup = switch(6);
    pg.wait_archived(after_backup.last().unwrap(), Duration::from_secs(120));

    // A clean archive: one range, no gap, the backup restorable to the end.
    let (r, v) = verify(&env, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(v["healthy"], true);
    assert_eq!(v["coverage"], "full");
    assert_eq!(v["timelines"].as_array().unwrap().len(), 1);
    assert_eq!(v["timelines"][0]["ranges"].as_array().unwrap().len(), 1);
    assert_eq!(v["timelines"][0]["gaps"].as_array().unwrap().len(), 0);
    let backup = &v["backups"][0];
    assert_eq!(backup["wal_complete"], true, "{backup}");
    assert_eq!(backup["stopped_by_gap"], false, "{backup}");

    // New segments: the next run lists each timeline only after its
    // checkpoint, so it lists exactly the new keys and reads no segment.
    let before = hash_dir_keys(&rgw, &bucket);
    let more = switch(3);
    pg.wait_archived(more.last().unwrap(), Duration::from_secs(120));
    // Segments and the .backup file, if any: every key in a hash directory.
    let new_keys = hash_dir_keys(&rgw, &bucket).difference(&before).count();
    assert!(new_keys >= 3, "{new_keys}");
    let mut debug = env.clone();
    debug.push(("PITR_LOG_LEVEL".into(), "debug".into()));
    let (r, v) = verify(&debug, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(v["coverage"], "incremental");
    let mut listed_after_checkpoint = 0;
    for line in r.stderr.lines() {
        let Some(rest) = line.split("store request: LIST pg/main/wals/0000").nth(1) else {
            continue;
        };
        assert!(
            rest.contains("(after pg/main/wals/"),
            "a timeline listing that does not start at the checkpoint: {line}"
        );
        let n: usize = rest
            .rsplit("): ")
            .next()
            .unwrap()
            .trim_end_matches(" keys")
            .parse()
            .unwrap();
        listed_after_checkpoint += n;
    }
    assert_eq!(
        listed_after_checkpoint, new_keys,
        "only the new keys are listed\n{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("store request: GET pg/main/wals/"),
        "no WAL object is read\n{}",
        r.stderr
    );

    // Rewrite one old segment with one byte changed (its metadata kept):
    // a shallow run lists, and cannot see it; --deep reads it. The byte is
    // in the gzip trailer's CRC: a byte flipped inside the deflate stream of
    // mostly-zero WAL can decode to the very same content (seen once), which
    // --deep rightly calls sound.
    let victim = key_of(&after_backup[1]);
    let original = rgw.get(&bucket, &victim);
    let meta = rgw.metadata_of(&bucket, &victim);
    let mut damaged = original.clone();
    let crc = damaged.len() - 8;
    damaged[crc] ^= 0xFF;
    rgw.put_with_metadata(&bucket, &victim, damaged, &meta);
    let (r, _) = verify(&env, &[]);
    assert_eq!(
        r.code, 0,
        "documented: a shallow run reads no object\n{r:?}"
    );
    let (r, v) = verify(&env, &["--deep"]);
    assert_eq!(r.code, PROBLEMS, "{r:?}");
    let problems = v["object_problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["key"], victim.as_str());
    assert_eq!(problems[0]["problem"], "damaged");
    assert!(
        v["read"]["objects_read"].as_u64().unwrap() >= 12,
        "{}",
        v["read"]
    );
    // Put back: a deep full run reads everything again and is clean.
    rgw.put_with_metadata(&bucket, &victim, original, &meta);
    let (r, v) = verify(&env, &["--deep", "--full"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(v["object_problems"].as_array().unwrap().len(), 0);

    // Another cluster's segment planted under a new name: the next --deep
    // run reads only the new object and names it.
    let tip = more.last().unwrap();
    let far = format!(
        "{}{:08X}",
        &tip[..16],
        u32::from_str_radix(&tip[16..], 16).unwrap() + 100
    );
    let foreign_key = format!("pg/main/wals/{}/{far}", &far[..16]);
    let foreign = common::fresh_segment(&dir, "foreign");
    rgw.put_raw(&bucket, &foreign_key, std::fs::read(&foreign).unwrap());
    let (r, v) = verify(&env, &["--deep"]);
    assert_eq!(r.code, PROBLEMS, "{r:?}");
    assert_eq!(v["read"]["objects_read"], 1, "{}", v["read"]);
    let problems = v["object_problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["key"], foreign_key.as_str());
    assert_eq!(problems[0]["problem"], "foreign_system");
    // Deleted again: a full walk finds it gone and drops the finding.
    rgw.delete(&bucket, &foreign_key);
    let (r, v) = verify(&env, &["--full"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(v["object_problems"].as_array().unwrap().len(), 0);

    // Delete a segment in the middle, after the backup ended.
    let gone = &after_backup[3];
    rgw.delete(&bucket, &key_of(gone));
    let (r, _) = verify(&env, &[]);
    assert_eq!(
        r.code, 0,
        "documented: an incremental run does not see an old object deleted\n{r:?}"
    );
    let (r, v) = verify(&env, &["--full"]);
    assert_eq!(r.code, PROBLEMS, "{r:?}");
    let gaps = v["timelines"][0]["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0]["first"], gone.as_str());
    assert_eq!(gaps[0]["last"], gone.as_str());
    let backup = &v["backups"][0];
    assert_eq!(backup["wal_complete"], true, "{backup}");
    assert_eq!(backup["stopped_by_gap"], true, "{backup}");
    assert_eq!(backup["first_missing"], gone.as_str(), "{backup}");
    // The text output names it too.
    let text = run(pitr().envs(env.iter().cloned()).args(["archive", "verify"]));
    assert_eq!(text.code, PROBLEMS, "{text:?}");
    assert!(
        text.stdout
            .contains(&format!("GAP          {gone} missing")),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("not past the gap"), "{}", text.stdout);

    // status shows the gap from the last verify, and each timeline's ends.
    let s = run(pitr()
        .envs(env.iter().cloned())
        .args(["status", "--format", "json"]));
    assert_eq!(s.code, 0, "{s:?}");
    let s: Value = serde_json::from_str(&s.stdout).unwrap();
    assert_eq!(s["last_verify"]["healthy"], false);
    assert_eq!(s["last_verify"]["gaps"][0]["first"], gone.as_str());
    assert_eq!(s["timelines"][0]["timeline"], 1);
    assert_eq!(
        s["timelines"][0]["last_segment"],
        s["last_archived"]["segment"]
    );
}
