//! `pitr drill` against a real Ceph RGW repository that a real PostgreSQL
//! 15 archives into: a drill with checks that hold passes, with RTO and
//! target in its report and the result in the Drill state record; a check
//! that does not hold fails the drill and the report names it; a gap in
//! the archive fails the drill before anything is restored.

mod common;

use std::path::Path;
use std::time::Duration;

use common::pg::Pg;
use common::s3::Rgw;
use common::{as_postgres, chown_postgres, pitr_bin, run, Run, TestDir};

fn drill(env: &[(String, String)], args: &[&str]) -> Run {
    let mut cmd = as_postgres(pitr_bin());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("PITR_") || k.starts_with("AWS_") || k.starts_with("S3_") {
            cmd.env_remove(k);
        }
    }
    run(cmd.envs(env.iter().cloned()).arg("drill").args(args))
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_drill_restores_checks_reports_and_records() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("drill");
    let dir = TestDir::new("drill");
    let env = rgw.pitr_env(&bucket, "main");
    let pg = Pg::archiving(dir.join("primary"), &env);
    pg.sql("create table t (id int primary key)");
    pg.sql("insert into t select generate_series(1, 100)");
    let b = run(common::pitr()
        .envs(env.iter().cloned())
        .args(["backup", "-d", &pg.conninfo()]));
    assert_eq!(b.code, 0, "{b:?}");
    pg.sql("insert into t select generate_series(101, 150)");
    let last = pg.switch_wal();
    pg.wait_archived(&last, Duration::from_secs(120));

    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("rows.sql"), "select count(*) = 150 from t;\n").unwrap();
    std::fs::write(work.join("wrong.sql"), "select count(*) = 999 from t;\n").unwrap();
    chown_postgres(&work);
    let sql = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/drill");
    let w = |f: &str| work.join(f).display().to_string();
    let shipped = |f: &str| sql.join(f).display().to_string();

    // Checks that hold: it passes.
    let scratch = w("scratch-ok");
    let r = drill(
        &env,
        &[
            "--scratch",
            &scratch,
            "--check",
            &w("rows.sql"),
            "--check",
            &shipped("databases.sql"),
            "--check",
            &shipped("no_invalid_indexes.sql"),
            "--report",
            &w("ok.json"),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("drill passed"), "{}", r.stdout);
    let ok = report(&work.join("ok.json"));
    assert_eq!(ok["passed"], true, "{ok:#}");
    let rto = ok["rto_seconds"].as_f64().unwrap();
    assert!(rto > 0.0 && rto < 600.0, "RTO {rto}");
    assert!(ok["target"].as_str().unwrap().contains("latest"), "{ok:#}");
    let names: Vec<&str> = ok["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for want in ["connects", "target-reached", "amcheck"] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    assert!(ok["last_replayed_commit"].is_string(), "{ok:#}");
    let state: serde_json::Value =
        serde_json::from_slice(&rgw.get(&bucket, "pg/main/pitr/state/drill.json")).unwrap();
    assert_eq!(state["passed"], true, "{state:#}");
    // pitr metrics reports it.
    let m = run(common::pitr().envs(env.iter().cloned()).arg("metrics"));
    assert_eq!(m.code, 0, "{m:?}");
    let sample = |name: &str| -> f64 {
        m.stdout
            .lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {}", m.stdout))
    };
    assert_eq!(sample("pitr_last_drill_success"), 1.0);
    let metric_rto = sample("pitr_last_drill_rto_seconds");
    assert!((metric_rto - rto).abs() < 0.01, "{metric_rto} vs {rto}");
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "the copy is removed, the directory given is left empty"
    );
    // The live server was not touched.
    assert_eq!(pg.sql("select count(*) from t"), "150");

    // A check that does not hold: it fails, and says which.
    let r = drill(
        &env,
        &[
            "--check",
            &w("rows.sql"),
            "--check",
            &w("wrong.sql"),
            "--report",
            &w("bad.json"),
        ],
    );
    assert_eq!(r.code, 1, "{r:?}");
    let bad = report(&work.join("bad.json"));
    assert_eq!(bad["passed"], false);
    let failed: Vec<&str> = bad["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, vec![w("wrong.sql").as_str()], "{bad:#}");
    let state: serde_json::Value =
        serde_json::from_slice(&rgw.get(&bucket, "pg/main/pitr/state/drill.json")).unwrap();
    assert_eq!(state["passed"], false, "{state:#}");
    assert_eq!(state["failed_checks"][0], w("wrong.sql"));

    // A gap in the archive: the drill fails at the plan, restoring nothing.
    let seg = last.clone();
    let prev = format!(
        "{}{:08X}",
        &seg[..16],
        u32::from_str_radix(&seg[16..], 16).unwrap() - 1
    );
    let key = rgw
        .keys(&bucket, "pg/main/wals/")
        .into_iter()
        .find(|k| k.ends_with(&format!("{prev}.gz")))
        .expect("the segment before the last is archived");
    rgw.delete(&bucket, &key);
    let scratch = w("scratch-gap");
    let r = drill(&env, &["--scratch", &scratch, "--report", &w("gap.json")]);
    assert_eq!(r.code, 1, "{r:?}");
    let gap = report(&work.join("gap.json"));
    assert_eq!(gap["stage"], "plan", "{gap:#}");
    assert!(
        gap["error"].as_str().unwrap().contains(&prev),
        "names the missing segment: {gap:#}"
    );
    assert!(
        std::fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(0) == 0,
        "nothing restored"
    );

    // status reports the drill, and what expire would remove under a
    // policy, without removing it.
    let first_id = b.stdout.trim().to_string();
    let b2 = run(common::pitr()
        .envs(env.iter().cloned())
        .args(["backup", "-d", &pg.conninfo()]));
    assert_eq!(b2.code, 0, "{b2:?}");
    let st = run(common::pitr().envs(env.iter().cloned()).args([
        "status",
        "--format",
        "json",
        "--retention-policy",
        "REDUNDANCY 1",
    ]));
    assert_eq!(st.code, 0, "{st:?}");
    let st: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(st["last_drill"]["passed"], false, "{st:#}");
    assert_eq!(
        st["retention"]["would_remove"],
        serde_json::json!([first_id]),
        "{st:#}"
    );
    assert_eq!(st["retention"]["kept"], 1, "{st:#}");
    assert_eq!(st["backups"], 2, "nothing was removed: {st:#}");
}
