//! Races, made to happen rather than hoped for: the processes are frozen at
//! a stop point (a debug build's `fault_point`) and let go together, on a
//! real PostgreSQL 15 and the real Ceph RGW over HTTPS. Two pushes of one
//! segment (same bytes, different bytes), a backup started while another
//! runs, and `expire` while a backup is being taken.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::pg::Pg;
use common::s3::Rgw;
use common::stop_point::StopPoints;
use common::{fresh_segment, pitr, run, Run, TestDir};

const WAIT: Duration = Duration::from_secs(90);
const SEG1: &str = "000000010000000000000001";

fn pitr_cmd(env: &[(String, String)], args: &[&str]) -> Run {
    run(pitr().envs(env.iter().cloned()).args(args))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn spawn_push(env: &[(String, String)], stops: &StopPoints, path: &Path) -> Child {
    pitr()
        .envs(env.iter().cloned())
        .envs(stops.env("push-before-upload"))
        .arg("wal-push")
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> Run {
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Pushes `a` and `b` (both named SEG1) at once: both frozen just before
/// their conditional PUT, after each found the name free, then let go.
fn push_both(env: &[(String, String)], stops: &StopPoints, a: &Path, b: &Path) -> (Run, Run) {
    let mut first = spawn_push(env, stops, a);
    let mut second = spawn_push(env, stops, b);
    let mut ended = None;
    let frozen = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        stops.wait_n("push-before-upload", 2, WAIT, || {
            for c in [&mut first, &mut second] {
                if c.try_wait().unwrap().is_some() {
                    ended = Some(());
                    return false;
                }
            }
            true
        })
    }));
    match frozen {
        Ok(frozen) => frozen.into_iter().for_each(|f| f.resume()),
        Err(_) => {
            let _ = (first.kill(), second.kill());
            panic!(
                "both pushes must reach the stop point (one ended: {}):\n{:?}\n{:?}",
                ended.is_some(),
                finish(first),
                finish(second)
            );
        }
    }
    (finish(first), finish(second))
}

/// A copy of `seg` in a directory of its own, with one byte changed deep
/// inside when `changed`: the same name and system, other content.
fn copy_of(seg: &Path, dir: PathBuf, changed: bool) -> PathBuf {
    std::fs::create_dir_all(&dir).unwrap();
    let to = dir.join(SEG1);
    let mut bytes = std::fs::read(seg).unwrap();
    if changed {
        bytes[3 << 20] ^= 0xff;
    }
    std::fs::write(&to, bytes).unwrap();
    to
}

fn fetched(env: &[(String, String)], dir: &TestDir, tag: &str) -> Vec<u8> {
    let dest = dir.join(format!("fetched-{tag}"));
    let r = pitr_cmd(
        env,
        &["wal-fetch", "--prefetch", "0", SEG1, dest.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{r:?}");
    std::fs::read(dest).unwrap()
}

#[test]
fn two_pushes_of_one_segment_at_once_store_one_object_and_never_overwrite() {
    let rgw = Rgw::from_env();
    let dir = TestDir::new("race-push");
    let stops = StopPoints::new(dir.join("stops"));
    let seg = fresh_segment(&dir, "a");

    // The same bytes twice: both succeed, one object holds them.
    let bucket = rgw.new_bucket("race-same");
    let env = rgw.pitr_env(&bucket, "main");
    let (r1, r2) = push_both(
        &env,
        &stops,
        &copy_of(&seg, dir.join("same-1"), false),
        &copy_of(&seg, dir.join("same-2"), false),
    );
    assert_eq!((r1.code, r2.code), (0, 0), "{r1:?}\n{r2:?}");
    let keys = rgw.keys(&bucket, "pg/main/wals/");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(fetched(&env, &dir, "same") == std::fs::read(&seg).unwrap());

    // Different bytes under one name: one wins, the other is refused and
    // the stored object is the winner's.
    let bucket = rgw.new_bucket("race-diff");
    let env = rgw.pitr_env(&bucket, "main");
    let a = copy_of(&seg, dir.join("diff-a"), false);
    let b = copy_of(&seg, dir.join("diff-b"), true);
    let (ra, rb) = push_both(&env, &stops, &a, &b);
    let (winner, loser) = match (ra.code, rb.code) {
        (0, c) if c != 0 => (&a, &rb),
        (c, 0) if c != 0 => (&b, &ra),
        _ => panic!("exactly one push must win:\n{ra:?}\n{rb:?}"),
    };
    assert!(
        loser.stderr.contains("different"),
        "the refusal says why: {}",
        loser.stderr
    );
    assert_eq!(rgw.keys(&bucket, "pg/main/wals/").len(), 1);
    assert!(fetched(&env, &dir, "diff") == std::fs::read(winner).unwrap());
}

fn spawn_backup(env: &[(String, String)], pg: &Pg, stops: &StopPoints, point: &str) -> Child {
    pitr()
        .envs(env.iter().cloned())
        .envs(stops.env(point))
        .args(["backup", "-d", &pg.conninfo(), "--wal-timeout", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A primary with pgbench data, and the environment for uncompressed
/// backups in 5 MiB parts (a multipart upload is open while one streams).
fn primary(dir: &TestDir, env: &[(String, String)]) -> (Pg, Vec<(String, String)>) {
    let pg = Pg::archiving(dir.join("primary"), env);
    pg.pgbench(&["-i", "-s", "2", "-q"]);
    let mut parts = env.to_vec();
    parts.push(("PITR_COMPRESSION".into(), "none".into()));
    parts.push(("PITR_S3_PART_SIZE".into(), "5".into()));
    (pg, parts)
}

fn status_of(env: &[(String, String)], id: &str) -> String {
    let l = json(&pitr_cmd(env, &["backup", "list", "--format", "json"]).stdout);
    l["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["backup_id"] == id)
        .map(|b| b["status"].as_str().unwrap().to_string())
        .unwrap_or_else(|| "absent".into())
}

#[test]
fn a_backup_started_while_another_runs_gets_its_own_id_and_both_are_whole() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("race-bk");
    let dir = TestDir::new("race-bk");
    let env = rgw.pitr_env(&bucket, "main");
    let (pg, parts) = primary(&dir, &env);
    let stops = StopPoints::new(dir.join("stops"));

    let mut first = spawn_backup(&parts, &pg, &stops, "backup-streaming");
    let frozen = stops.wait_child("backup-streaming", &mut first, WAIT);
    let second = pitr_cmd(
        &parts,
        &["backup", "-d", &pg.conninfo(), "--wal-timeout", "60"],
    );
    assert_eq!(second.code, 0, "{second:?}");
    frozen.resume();
    let first = finish(first);
    assert_eq!(first.code, 0, "{first:?}");
    let (a, b) = (first.stdout.trim(), second.stdout.trim());
    assert_ne!(a, b, "two backups, two ids");
    for id in [a, b] {
        assert_eq!(status_of(&env, id), "DONE");
        let r = pitr_cmd(&env, &["backup", "verify", id]);
        assert_eq!(r.code, 0, "{id}: {r:?}");
    }
}

#[test]
fn expire_while_a_backup_runs_deletes_nothing_that_backup_needs() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("race-ex");
    let dir = TestDir::new("race-ex");
    let env = rgw.pitr_env(&bucket, "main");
    let (pg, parts) = primary(&dir, &env);
    let mut done = Vec::new();
    for n in 0..2 {
        pg.pgbench(&["-n", "-t", "100"]);
        pg.switch_wal();
        let r = pitr_cmd(
            &env,
            &["backup", "-d", &pg.conninfo(), "--wal-timeout", "60"],
        );
        assert_eq!(r.code, 0, "backup {n}: {r:?}");
        done.push(r.stdout.trim().to_string());
    }
    let stops = StopPoints::new(dir.join("stops"));
    let mut running = spawn_backup(&parts, &pg, &stops, "multipart-part-stored");
    let frozen = stops.wait_child("multipart-part-stored", &mut running, WAIT);

    // REDUNDANCY 1: the older DONE backup goes; the running one stays, and
    // so do its open upload and the WAL after the newest DONE backup.
    let r = pitr_cmd(
        &env,
        &[
            "expire",
            "--retention-policy",
            "REDUNDANCY 1",
            "--format",
            "json",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let report = json(&r.stdout);
    assert_eq!(report["deleted"]["backups"], 1, "{}", r.stdout);
    assert_eq!(status_of(&env, &done[0]), "absent");
    assert!(
        !rgw.open_uploads(&bucket, "pg/main/base/").is_empty(),
        "the running backup's upload is still open"
    );

    frozen.resume();
    let running = finish(running);
    assert_eq!(running.code, 0, "{running:?}");
    let id = running.stdout.trim();
    assert_eq!(status_of(&env, id), "DONE");
    let r = pitr_cmd(&env, &["backup", "verify", id]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = pitr_cmd(&env, &["archive", "verify"]);
    assert_eq!(r.code, 0, "{r:?}");
}
