//! Retention against real backups of a real PostgreSQL in Ceph RGW, judged
//! by real barman-cloud: `pitr expire` deletes exactly the backups and WAL
//! that `barman-cloud-backup-delete --retention-policy` would (the backups'
//! recorded end times are moved into the past to give them known ages), a
//! run cut short is finished by the next, the oldest kept backups can still
//! be restored, and keeps made by either tool are honoured by both.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::pg::Pg;
use common::s3::Rgw;
use common::{pitr, run, Run, TestDir};

fn pitr_cmd(env: &[(String, String)], args: &[&str]) -> Run {
    run(pitr().envs(env.iter().cloned()).args(args))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Moves backup `id`'s recorded begin and end times `days` into the past.
fn age_backup(rgw: &Rgw, bucket: &str, server: &str, id: &str, days: i64) {
    let key = format!("pg/{server}/base/{id}/backup.info");
    let text = String::from_utf8(rgw.get(bucket, &key)).unwrap();
    let when = (Utc::now() - TimeDelta::days(days))
        .format("%Y-%m-%d %H:%M:%S%.6f+00:00")
        .to_string();
    let out: String = text
        .lines()
        .map(|l| {
            if l.starts_with("end_time=") {
                format!("end_time={when}\n")
            } else if l.starts_with("begin_time=") {
                format!("begin_time={when}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(out, text);
    rgw.put_raw(bucket, &key, out.into_bytes());
}

/// The keys `barman-cloud-backup-delete --dry-run` says it would delete.
fn barman_would_delete(rgw: &Rgw, bucket: &str, server: &str, policy: &str) -> BTreeSet<String> {
    let r = run(rgw
        .barman("barman-cloud-backup-delete")
        .args(["--endpoint-url", &rgw.endpoint])
        .args(["--retention-policy", policy, "--dry-run"])
        .arg(format!("s3://{bucket}/pg"))
        .arg(server));
    assert_eq!(r.code, 0, "barman-cloud-backup-delete: {r:?}");
    let mut keys = BTreeSet::new();
    for line in r.stdout.lines() {
        if let Some(prefix) = line
            .strip_prefix("Skipping deletion of all objects under prefix ")
            .and_then(|l| l.strip_suffix(" due to --dry-run option"))
        {
            keys.extend(rgw.keys(bucket, prefix));
            continue;
        }
        let Some(list) = line.strip_prefix("Skipping deletion of objects [") else {
            continue;
        };
        for (i, part) in list.split('\'').enumerate() {
            if i % 2 == 1 {
                keys.insert(part.to_string());
            }
        }
    }
    keys
}

fn barman_keep(rgw: &Rgw, bucket: &str, server: &str, id: &str, args: &[&str]) -> Run {
    run(rgw
        .barman("barman-cloud-backup-keep")
        .args(["--endpoint-url", &rgw.endpoint])
        .args(args)
        .arg(format!("s3://{bucket}/pg"))
        .arg(server)
        .arg(id))
}

/// Barman's and pitr's objects of the server, outside pitr's own `pitr/`.
fn barman_keys(rgw: &Rgw, bucket: &str, server: &str) -> BTreeSet<String> {
    rgw.keys(bucket, &format!("pg/{server}/"))
        .into_iter()
        .filter(|k| !k.starts_with(&format!("pg/{server}/pitr/")))
        .collect()
}

fn verdicts(report: &serde_json::Value) -> Vec<(String, String, bool)> {
    report["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["backup_id"].as_str().unwrap().to_string(),
                b["retention"].as_str().unwrap().to_string(),
                b["delete"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn expire_deletes_what_barman_would_and_keeps_what_restores_need() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("expire");
    let dir = TestDir::new("expire");
    let server = "main";
    let env = rgw.pitr_env(&bucket, server);
    let mut pg = Pg::archiving(dir.join("primary"), &env);
    pg.sql("create table t (id int primary key, v text)");

    // Five real backups, WAL between them.
    let mut ids = Vec::new();
    for n in 0..5 {
        pg.sql(&format!(
            "insert into t select g, md5(g::text) from generate_series({}, {}) g",
            n * 1000 + 1,
            n * 1000 + 1000
        ));
        pg.switch_wal();
        let r = pitr_cmd(
            &env,
            &["backup", "-d", &pg.conninfo(), "--wal-timeout", "60"],
        );
        assert_eq!(r.code, 0, "backup {n}: {r:?}");
        ids.push(r.stdout.trim().to_string());
    }
    pg.sql("insert into t values (0, 'after the last backup')");
    let last = pg.switch_wal();
    pg.wait_archived(&last, Duration::from_secs(60));
    // Ages, oldest first: 60, 50, 40, 20 days; the newest is today.
    for (id, days) in ids.iter().zip([60, 50, 40, 20]) {
        age_backup(&rgw, &bucket, server, id, days);
    }
    let [b1, b2, b3, b4, b5] = [0, 1, 2, 3, 4].map(|i| ids[i].clone());

    // Barman keeps the oldest, standalone: pitr reads the keep.
    let r = barman_keep(&rgw, &bucket, server, &b1, &["--target", "standalone"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = pitr_cmd(&env, &["backup", "keep", &b1, "--status"]);
    assert_eq!(r.stdout.trim(), "Keep: standalone", "{r:?}");
    let r = pitr_cmd(&env, &["backup", "delete", &b1]);
    assert_eq!(r.code, 3, "a kept backup is not deleted by hand: {r:?}");
    assert!(r.stderr.contains("--release"), "{}", r.stderr);

    // A 30 day window: b5 and b4 are inside, b3 is the base of the window,
    // b2 is obsolete, b1 is kept.
    let policy = "RECOVERY WINDOW OF 30 DAYS";
    let dry = pitr_cmd(
        &env,
        &[
            "expire",
            "--retention-policy",
            policy,
            "--dry-run",
            "--format",
            "json",
        ],
    );
    assert_eq!(dry.code, 0, "{dry:?}");
    let dry = json(&dry.stdout);
    assert_eq!(
        verdicts(&dry),
        [
            (b1.clone(), "KEEP:STANDALONE".to_string(), false),
            (b2.clone(), "OBSOLETE".to_string(), true),
            (b3.clone(), "VALID".to_string(), false),
            (b4.clone(), "VALID".to_string(), false),
            (b5.clone(), "VALID".to_string(), false),
        ]
    );
    let barman = barman_would_delete(&rgw, &bucket, server, policy);
    assert!(
        barman.contains(&format!("pg/{server}/base/{b2}/backup.info")),
        "{barman:?}"
    );
    assert!(
        barman.iter().any(|k| k.contains("/wals/")),
        "Barman deletes WAL too: {barman:?}"
    );
    assert_eq!(
        dry["deleted"]["wal_segments"].as_u64().unwrap()
            + dry["deleted"]["backup_labels"].as_u64().unwrap(),
        barman.iter().filter(|k| k.contains("/wals/")).count() as u64,
        "{barman:?}"
    );

    // An expire cut short after deleting b2's backup.info (its first step):
    // b2 is no longer listed, so no one restores from it.
    let before = barman_keys(&rgw, &bucket, server);
    rgw.delete(&bucket, &format!("pg/{server}/base/{b2}/backup.info"));
    let listed = json(&pitr_cmd(&env, &["backup", "list", "--format", "json"]).stdout);
    assert!(
        !listed["backups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["backup_id"] == b2.as_str()),
        "{listed}"
    );
    // The rerun finishes: the same objects go as Barman would delete.
    let r = pitr_cmd(&env, &["expire", "--retention-policy", policy]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("1 leftover directories"), "{}", r.stdout);
    let after = barman_keys(&rgw, &bucket, server);
    let deleted: BTreeSet<String> = before.difference(&after).cloned().collect();
    assert_eq!(deleted, barman, "pitr deleted exactly what Barman would");
    assert!(rgw
        .keys(&bucket, &format!("pg/{server}/pitr/backups/{b2}/"))
        .is_empty());

    // WAL went only below the oldest kept backup's begin WAL, but for the
    // standalone keep's own WAL.
    let info = |id: &str| {
        let text =
            String::from_utf8(rgw.get(&bucket, &format!("pg/{server}/base/{id}/backup.info")))
                .unwrap();
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap()
                .to_string()
        };
        (field("begin_wal"), field("end_wal"))
    };
    let (b3_begin, _) = info(&b3);
    let (b1_begin, b1_end) = info(&b1);
    for k in &deleted {
        let Some(name) = k.rsplit('/').next().filter(|_| k.contains("/wals/")) else {
            continue;
        };
        let seg = name
            .get(..24)
            .expect("barman-cloud deletes no history file");
        assert!(seg < b3_begin.as_str(), "{k} is not below {b3_begin}");
        assert!(!(seg >= b1_begin.as_str() && seg <= b1_end.as_str()), "{k}");
    }
    for seg in [&b1_begin, &b1_end, &b3_begin] {
        assert!(
            after.iter().any(|k| k.contains(&format!("/{seg}"))),
            "{seg} kept"
        );
    }
    // Nothing more to do, for either tool.
    assert!(barman_would_delete(&rgw, &bucket, server, policy).is_empty());
    let again = json(
        &pitr_cmd(
            &env,
            &["expire", "-r", policy, "--dry-run", "--format", "json"],
        )
        .stdout,
    );
    assert_eq!(again["deleted"]["wal_segments"], 0, "{again}");

    // The oldest kept backups can still be restored: the plans prove the
    // WAL chain from the archive.
    for (id, target) in [(&b3, "--target-immediate"), (&b1, "--target-immediate")] {
        let r = pitr_cmd(
            &env,
            &[
                "restore",
                "--pgdata",
                "/nonexistent/x",
                "--backup-id",
                id,
                target,
                "--dry-run",
                "--format",
                "json",
            ],
        );
        assert_eq!(r.code, 0, "restore plan of {id}: {r:?}");
    }
    let r = pitr_cmd(
        &env,
        &[
            "restore",
            "--pgdata",
            "/nonexistent/x",
            "--backup-id",
            &b3,
            "--dry-run",
        ],
    );
    assert_eq!(r.code, 0, "{b3} to the latest point: {r:?}");
    // A real restore of the oldest backup inside the policy, to the end of
    // the archive.
    pg.stop();
    let data = dir.join("restored");
    let r = pitr_cmd(
        &env,
        &[
            "restore",
            "--pgdata",
            data.to_str().unwrap(),
            "--backup-id",
            &b3,
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let restored = common::pg::start_restored(&data, &env, "archive_mode = off\n");
    assert_eq!(restored.sql("select count(*) from t"), "5001");
    drop(restored);

    // pitr keeps b3 (full): barman-cloud reads it and honours it.
    let r = pitr_cmd(&env, &["backup", "keep", &b3, "--target", "full"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = barman_keep(&rgw, &bucket, server, &b3, &["--status"]);
    assert_eq!(r.stdout.trim(), "Keep: full", "{r:?}");
    let barman = barman_would_delete(&rgw, &bucket, server, "REDUNDANCY 1");
    let ids_going: BTreeSet<&str> = barman
        .iter()
        .filter_map(|k| k.strip_suffix("/backup.info"))
        .filter_map(|k| k.rsplit('/').next())
        .collect();
    assert_eq!(ids_going, BTreeSet::from([b4.as_str()]), "{barman:?}");
    let dry = json(
        &pitr_cmd(
            &env,
            &[
                "expire",
                "-r",
                "REDUNDANCY 1",
                "--dry-run",
                "--format",
                "json",
            ],
        )
        .stdout,
    );
    assert_eq!(
        verdicts(&dry),
        [
            (b1.clone(), "KEEP:STANDALONE".to_string(), false),
            (b3.clone(), "KEEP:FULL".to_string(), false),
            (b4.clone(), "OBSOLETE".to_string(), true),
            (b5.clone(), "VALID".to_string(), false),
        ]
    );
    // With the full keep, barman deletes no WAL for b4; neither does pitr.
    assert!(!barman.iter().any(|k| k.contains("/wals/")), "{barman:?}");
    assert_eq!(dry["deleted"]["wal_segments"], 0, "{dry}");

    // Released by pitr: barman sees no keep.
    let r = pitr_cmd(&env, &["backup", "keep", &b3, "--release"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = barman_keep(&rgw, &bucket, server, &b3, &["--status"]);
    assert_eq!(r.stdout.trim(), "Keep: nokeep", "{r:?}");
    // And the barman-cloud-backup-delete form runs the same policy.
    let r = pitr_cmd(
        &env,
        &["backup", "delete", "--retention-policy", "REDUNDANCY 1"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let listed = json(&pitr_cmd(&env, &["backup", "list", "--format", "json"]).stdout);
    let left: Vec<&str> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["backup_id"].as_str().unwrap())
        .collect();
    assert_eq!(left, [b1.as_str(), b5.as_str()]);
    let r = barman_keep(&rgw, &bucket, server, &b1, &["--status"]);
    assert_eq!(r.stdout.trim(), "Keep: standalone", "{r:?}");
}
