//! Point-in-time recovery with `pitr restore` against Ceph RGW over HTTPS:
//! every target kind lands on exactly the rows it should, timelines are
//! followed (and refused when they forked before the backup), and bad input
//! is refused before anything is written.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::pg::{start_restored, Pg};
use common::s3::Rgw;
use common::{chown_postgres, pitr, pitr_bin, run, run_ok, running_as_root, Run, TestDir};

struct Scenario {
    rgw: Rgw,
    bucket: String,
    dir: TestDir,
    env: Vec<(String, String)>,
    primary: Pg,
    backup_id: String,
    ts_oid: u64,
    /// Commit times (UTC, PostgreSQL form) and xids of rows 1, 2, 3.
    commit_ts: Vec<String>,
    xids: Vec<String>,
    lsn_after_2: String,
}

fn pitr_run(env: &[(String, String)], args: &[&str]) -> Run {
    run(pitr().envs(env.iter().cloned()).args(args))
}

/// Rows 1, 2, 3 committed at t1 < t2 < t3 (a second apart), with WAL
/// switches in between, after a base backup; a restore point after row 2.
fn scenario(tag: &str) -> Scenario {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket(tag);
    let dir = TestDir::new(tag);
    let env = rgw.pitr_env(&bucket, "main");
    let mut primary = Pg::init(dir.join("primary"));
    primary.conf(&format!(
        "archive_mode = on\narchive_command = '{} wal-push %p'\ntrack_commit_timestamp = on\n",
        pitr_bin().display()
    ));
    primary.start(&env);
    let ts = dir.join("ts1");
    std::fs::create_dir_all(&ts).unwrap();
    if running_as_root() {
        chown_postgres(&ts);
    }
    primary.sql(&format!(
        "create tablespace ts1 location '{}'",
        ts.display()
    ));
    primary.sql("create table r (id int primary key, note text) tablespace ts1");
    let b = pitr_run(&env, &["backup", "-d", &primary.conninfo()]);
    assert_eq!(b.code, 0, "{b:?}");
    let backup_id = b.stdout.trim().to_string();
    let shown: serde_json::Value = serde_json::from_str(
        &pitr_run(&env, &["backup", "show", &backup_id, "--format", "json"]).stdout,
    )
    .unwrap();
    let ts_oid = shown["tablespaces"][0]["oid"].as_u64().unwrap();

    let mut commit_ts = Vec::new();
    let mut xids = Vec::new();
    let mut lsn_after_2 = String::new();
    for id in 1..=3 {
        std::thread::sleep(Duration::from_millis(1100));
        let xid = primary.sql(&format!(
            "insert into r values ({id}, 'row {id}') returning txid_current()"
        ));
        commit_ts.push(primary.sql(&format!(
            "select to_char(pg_xact_commit_timestamp(xmin) at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') from r where id = {id}"
        )));
        xids.push(xid);
        if id == 2 {
            lsn_after_2 = primary.sql("select pg_current_wal_lsn()");
            primary.sql("select pg_create_restore_point('after2')");
        }
        primary.switch_wal();
    }
    let last = primary.switch_wal();
    primary.wait_archived(&last, Duration::from_secs(120));
    Scenario {
        rgw,
        bucket,
        dir,
        env,
        primary,
        backup_id,
        ts_oid,
        commit_ts,
        xids,
        lsn_after_2,
    }
}

impl Scenario {
    /// `pitr restore` into a fresh directory (tablespace moved beside it).
    fn restore(&self, name: &str, args: &[&str]) -> (Run, PathBuf) {
        let data = self.dir.join(name);
        let ts = self.dir.join(format!("{name}-ts"));
        let map = format!("{}={}", self.ts_oid, ts.display());
        let mut all = vec![
            "restore",
            "--pgdata",
            data.to_str().unwrap(),
            "--tablespace-map",
            &map,
        ];
        all.extend_from_slice(args);
        (pitr_run(&self.env, &all), data)
    }

    /// Restores, starts, and returns the ids the recovered server holds.
    fn rows_after(&self, name: &str, args: &[&str], archive: bool) -> (String, Pg) {
        let (r, data) = self.restore(name, args);
        assert_eq!(r.code, 0, "{r:?}");
        let ts = self.dir.join(format!("{name}-ts"));
        if running_as_root() {
            chown_postgres(&ts);
        }
        let extra = if archive { "" } else { "archive_mode = off\n" };
        let pg = start_restored(&data, &self.env, extra);
        (
            pg.sql("select string_agg(id::text, ',' order by id) from r"),
            pg,
        )
    }
}

/// `pitr restore --dry-run --format json` with `args`: the plan. Touches nothing.
fn dry_plan(env: &[(String, String)], args: &[&str]) -> serde_json::Value {
    let mut all = vec![
        "restore",
        "--pgdata",
        "/nonexistent/x",
        "--dry-run",
        "--format",
        "json",
    ];
    all.extend_from_slice(args);
    let r = pitr_run(env, &all);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!Path::new("/nonexistent/x").exists());
    serde_json::from_str(&r.stdout).unwrap()
}

fn mid_time(a: &str, b: &str) -> String {
    let parse = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap();
    let (a, b) = (parse(a), parse(b));
    (a + (b - a) / 2)
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

#[test]
fn every_target_kind_lands_on_the_right_rows() {
    let s = scenario("pitr-targets");
    let between_2_and_3 = mid_time(&s.commit_ts[1], &s.commit_ts[2]);

    // The plan, as JSON, names the backup and a gap-free chain.
    let plan = dry_plan(&s.env, &["--target-time", &between_2_and_3]);
    assert_eq!(plan["backup"]["info"]["backup_id"], s.backup_id.as_str());
    assert!(plan["segments"].as_array().unwrap().len() >= 3, "{plan}");
    assert!(!Path::new("/nonexistent/x").exists());
    // Read from the WAL: the transaction that ends recovery is row 3's.
    let reached = plan["reached_by"].as_str().unwrap();
    assert!(
        reached.contains(&format!("transaction {}", s.xids[2])),
        "{reached}"
    );
    // A time after every archived commit cannot be reached.
    let r = pitr_run(
        &s.env,
        &[
            "restore",
            "--pgdata",
            "/nonexistent/x",
            "--target-time",
            "2100-01-01T00:00:00Z",
            "--dry-run",
        ],
    );
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        r.stderr.contains("after the latest recoverable point"),
        "{}",
        r.stderr
    );
    // A restore point that does not exist is refused before restoring.
    let r = pitr_run(
        &s.env,
        &[
            "restore",
            "--pgdata",
            "/nonexistent/x",
            "--target-name",
            "no-such-point",
            "--dry-run",
        ],
    );
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        r.stderr
            .contains("restore point 'no-such-point' is not in the archived WAL"),
        "{}",
        r.stderr
    );

    let (rows, _a) = s.rows_after("by-time", &["--target-time", &between_2_and_3], false);
    assert_eq!(rows, "1,2", "time between t2 and t3");
    let (rows, _b) = s.rows_after("by-lsn", &["--target-lsn", &s.lsn_after_2], false);
    assert_eq!(rows, "1,2", "LSN after commit 2");
    let (rows, _c) = s.rows_after("by-name", &["--target-name", "after2"], false);
    assert_eq!(rows, "1,2", "restore point after2");
    let (rows, _d) = s.rows_after("by-xid", &["--target-xid", &s.xids[1]], false);
    assert_eq!(rows, "1,2", "xid of row 2");
    let exact_2 = format!("{}+00", s.commit_ts[1]);
    let (rows, _e) = s.rows_after(
        "exclusive",
        &["--target-time", &exact_2, "--exclusive"],
        false,
    );
    assert_eq!(rows, "1", "--exclusive at commit 2's exact time");
    let (rows, _f) = s.rows_after("latest", &[], false);
    assert_eq!(rows, "1,2,3", "latest");

    // pg_wal on its own directory (CloudNativePG's walStorage), linked.
    let waldir = s.dir.join("own-wal-volume");
    std::fs::create_dir_all(&waldir).unwrap();
    if running_as_root() {
        chown_postgres(&waldir);
    }
    let (rows, g) = s.rows_after("waldir", &["--waldir", waldir.to_str().unwrap()], false);
    assert_eq!(rows, "1,2,3", "--waldir");
    assert_eq!(std::fs::read_link(g.data.join("pg_wal")).unwrap(), waldir);
    let segments = std::fs::read_dir(&waldir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().len() == 24)
        .count();
    assert!(segments > 0, "the recovered server writes its WAL there");
}

#[test]
fn timelines_are_followed_and_forks_before_the_backup_refused() {
    let s = scenario("pitr-tli");
    let between_2_and_3 = mid_time(&s.commit_ts[1], &s.commit_ts[2]);
    // A restore that promotes and archives into the same repository makes
    // timeline 2, which holds rows 1, 2 and then 20.
    let (rows, fork) = s.rows_after("fork", &["--target-time", &between_2_and_3], true);
    assert_eq!(rows, "1,2");
    fork.sql("insert into r values (20, 'on timeline 2')");
    let last = fork.switch_wal();
    fork.wait_archived(&last, Duration::from_secs(120));
    assert!(s
        .rgw
        .keys(&s.bucket, "pg/main/wals/")
        .iter()
        .any(|k| k.ends_with("00000002.history.gz")));

    let (rows, _a) = s.rows_after("on-tl2", &[], false);
    assert_eq!(
        rows, "1,2,20",
        "latest follows timeline 2 through its history file"
    );
    let (rows, _b) = s.rows_after("on-tl1", &["--target-timeline", "1"], false);
    assert_eq!(
        rows, "1,2,3",
        "--target-timeline 1 reaches timeline 1 after the fork"
    );

    // A backup of timeline 1 taken after the fork cannot lead to timeline 2.
    let b = pitr_run(
        &s.env,
        &[
            "backup",
            "-d",
            &s.primary.conninfo(),
            "--name",
            "after-fork",
        ],
    );
    assert_eq!(b.code, 0, "{b:?}");
    let (r, data) = s.restore(
        "refused",
        &["--target-timeline", "2", "--backup-id", "after-fork"],
    );
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        r.stderr.contains("timeline 2 forked from timeline 1"),
        "{}",
        r.stderr
    );
    assert!(!data.exists(), "nothing written");
    // Left to choose, the planner takes the backup from before the fork.
    let plan = dry_plan(&s.env, &["--target-timeline", "2"]);
    assert_eq!(plan["backup"]["info"]["backup_id"], s.backup_id.as_str());
    assert_eq!(plan["timeline"], 2);
}

#[test]
fn bad_input_is_refused_before_anything_is_written() {
    let s = scenario("pitr-bad");
    // A gap: a segment deleted from the middle of the chain.
    let seg_keys: Vec<String> = s
        .rgw
        .keys(&s.bucket, "pg/main/wals/0000000100000000/")
        .into_iter()
        .filter(|k| k.ends_with(".gz") && !k.contains(".backup") && !k.contains(".partial"))
        .collect();
    let victim = seg_keys[seg_keys.len() - 2].clone();
    let victim_name = victim
        .rsplit('/')
        .next()
        .unwrap()
        .trim_end_matches(".gz")
        .to_string();
    let saved = s.rgw.get(&s.bucket, &victim);
    s.rgw.delete(&s.bucket, &victim);
    let (r, data) = s.restore("gap", &[]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(&victim_name),
        "names the missing segment: {}",
        r.stderr
    );
    assert!(r.stderr.contains("gap"), "{}", r.stderr);
    assert!(!data.exists(), "PGDATA untouched");
    s.rgw.put_raw(&s.bucket, &victim, saved);

    // A target before the first backup.
    let (r, data) = s.restore("too-early", &["--target-time", "2000-01-01 00:00:00+00"]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        r.stderr.contains("cannot be reached") && r.stderr.contains("Earliest recoverable point"),
        "{}",
        r.stderr
    );
    assert!(!data.exists());

    // A malformed timestamp.
    let (r, data) = s.restore("malformed", &["--target-time", "next tuesday"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("'next tuesday' is not a time"),
        "{}",
        r.stderr
    );
    assert!(!data.exists());

    // A non-empty PGDATA is left as it was.
    let full = s.dir.join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("keep-me"), "precious").unwrap();
    let (r, _) = s.restore("full", &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("is not empty"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(full.join("keep-me")).unwrap(),
        "precious"
    );
    assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1);

    // --force replaces PGDATA's content, but never a tablespace directory's.
    let ts_full = s.dir.join("full-ts");
    std::fs::create_dir_all(&ts_full).unwrap();
    std::fs::write(ts_full.join("live-table"), "live").unwrap();
    let map = format!("{}={}", s.ts_oid, ts_full.display());
    let r = pitr_run(
        &s.env,
        &[
            "restore",
            "--pgdata",
            full.to_str().unwrap(),
            "--force",
            "--tablespace-map",
            &map,
        ],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("is not empty") && r.stderr.contains("--tablespace-map"),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read_to_string(ts_full.join("live-table")).unwrap(),
        "live"
    );
    assert_eq!(
        std::fs::read_to_string(full.join("keep-me")).unwrap(),
        "precious"
    );
}

#[test]
fn a_tar_member_leaving_pgdata_is_refused() {
    let s = scenario("pitr-evil");
    // A backup whose data.tar holds "../evil": same metadata as the real
    // one, under another id, as a crafted or damaged repository would have.
    let info = String::from_utf8(s.rgw.get(
        &s.bucket,
        &format!("pg/main/base/{}/backup.info", s.backup_id),
    ))
    .unwrap();
    let evil_id = "20200101T000000";
    let work = s.dir.join("evil-src");
    std::fs::create_dir_all(work.join("inner")).unwrap();
    std::fs::write(work.join("evil"), "owned").unwrap();
    run_ok(Command::new("tar").current_dir(work.join("inner")).args([
        "-cPf",
        "../evil.tar",
        "../evil",
    ]));
    let tar = std::fs::read(work.join("evil.tar")).unwrap();
    let info = info
        .lines()
        .filter(|l| !l.starts_with("tablespaces="))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    s.rgw.put_raw(
        &s.bucket,
        &format!("pg/main/base/{evil_id}/backup.info"),
        info.into_bytes(),
    );
    s.rgw
        .put_raw(&s.bucket, &format!("pg/main/base/{evil_id}/data.tar"), tar);
    let data = s.dir.join("target/pgdata");
    std::fs::create_dir_all(data.parent().unwrap()).unwrap();
    let r = pitr_run(
        &s.env,
        &[
            "restore",
            "--pgdata",
            data.to_str().unwrap(),
            "--backup-id",
            evil_id,
        ],
    );
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains("'../evil'") && r.stderr.contains("refusing to restore it"),
        "{}",
        r.stderr
    );
    assert!(
        !s.dir.join("target/evil").exists(),
        "nothing written outside PGDATA"
    );
    assert_eq!(
        std::fs::read_dir(&data).map(|d| d.count()).unwrap_or(0),
        0,
        "nothing left inside"
    );
}
