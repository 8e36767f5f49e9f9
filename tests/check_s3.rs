//! `pitr check` and the least-privilege role of sql/pitr_role.sql, on a
//! real PostgreSQL 15 and the real Ceph RGW over HTTPS: `pitr backup` and
//! `pitr check` run as that role (not a superuser) and pass; check fails
//! with the right line, and exit 5, for a wrong secret key (which it never
//! prints), a missing bucket, an archive_command that is not pitr, and a
//! server of another cluster.

mod common;

use std::time::Duration;

use common::pg::Pg;
use common::s3::Rgw;
use common::{pitr, run, Run, TestDir};

const PROBLEMS: i32 = 5;

fn check(env: &[(String, String)], conninfo: Option<&str>) -> Run {
    let mut c = pitr();
    c.envs(env.iter().cloned())
        .args(["check", "--archive-timeout", "60"]);
    if let Some(ci) = conninfo {
        c.args(["-d", ci]);
    }
    run(&mut c)
}

/// The line of `step`, which must be there exactly once.
fn line<'a>(r: &'a Run, step: &str) -> &'a str {
    let found: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.get(5..).is_some_and(|rest| rest.starts_with(step)))
        .collect();
    assert_eq!(found.len(), 1, "one '{step}' line:\n{}", r.stdout);
    found[0]
}

fn with(env: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = env.iter().filter(|(k, _)| k != key).cloned().collect();
    env.push((key.into(), value.into()));
    env
}

#[test]
fn check_passes_as_the_pitr_role_and_names_each_failure() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("check");
    let dir = TestDir::new("check");
    let env = rgw.pitr_env(&bucket, "main");

    let pg = Pg::archiving(dir.join("primary"), &env);
    let role_sql =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/pitr_role.sql")).unwrap();
    pg.sql(&role_sql);
    // Idempotent: a second run changes nothing and does not fail.
    pg.sql(&role_sql);
    assert_eq!(
        pg.sql("select rolsuper, rolreplication from pg_roles where rolname = 'pitr'"),
        "f|t"
    );
    let as_pitr = format!("host={} port={} user=pitr", pg.sock.display(), pg.port);

    // A backup as the role: REPLICATION and pg_read_all_settings suffice.
    let b = run(pitr().envs(env.iter().cloned()).args([
        "backup",
        "-d",
        &as_pitr,
        "--wal-timeout",
        "60",
    ]));
    assert_eq!(b.code, 0, "{b:?}");
    let show = run(pitr()
        .envs(env.iter().cloned())
        .args(["backup", "show", "latest", "--format", "json"]));
    assert_eq!(show.code, 0, "{show:?}");
    let info: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert!(
        info["pgdata"]
            .as_str()
            .is_some_and(|p| p.ends_with("primary")),
        "data_directory was readable: {}",
        show.stdout
    );

    // Everything passes, as the role, archiving end to end included.
    let good = check(&env, Some(&as_pitr));
    assert_eq!(good.code, 0, "{good:?}");
    for step in [
        "settings",
        "store",
        "write/read/delete",
        "identity",
        "replication connection",
        "system identifier",
        "wal_level",
        "archive_mode",
        "archive_command",
        "archiving",
    ] {
        assert!(line(&good, step).starts_with("OK "), "{}", good.stdout);
    }
    assert!(
        line(&good, "archiving").contains("reached"),
        "{}",
        good.stdout
    );
    // The test object is gone.
    assert!(
        rgw.keys(&bucket, "pg/main/pitr/check-").is_empty(),
        "the check object was deleted"
    );

    // A wrong secret key: the store line fails naming the credentials, and
    // neither key is printed anywhere.
    let wrong_secret = "wrong-secret-0123456789abcdef";
    let bad = check(&with(&env, "S3_SECRET_ACCESS_KEY", wrong_secret), None);
    assert_eq!(bad.code, PROBLEMS, "{bad:?}");
    let l = line(&bad, "store");
    assert!(l.starts_with("FAIL"), "{}", bad.stdout);
    assert!(
        l.contains("credentials") && l.contains("S3_SECRET_ACCESS_KEY"),
        "{l}"
    );
    for out in [&bad.stdout, &bad.stderr] {
        assert!(!out.contains(wrong_secret), "{out}");
        assert!(!out.contains(&rgw.secret_key), "{out}");
    }
    assert!(
        line(&bad, "write/read/delete").starts_with("SKIP"),
        "{}",
        bad.stdout
    );

    // A bucket that does not exist.
    let missing = common::unique("pitr-nobucket").to_lowercase();
    let bad = check(
        &with(&env, "PITR_REPO", &format!("s3://{missing}/pg")),
        None,
    );
    assert_eq!(bad.code, PROBLEMS, "{bad:?}");
    let l = line(&bad, "store");
    assert!(l.starts_with("FAIL") && l.contains("does not exist"), "{l}");

    // An archive_command that is not pitr.
    pg.sql("alter system set archive_command = '/bin/true'");
    pg.sql("select pg_reload_conf()");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pg.sql("show archive_command") != "/bin/true" {
        assert!(std::time::Instant::now() < deadline, "reload did not apply");
        std::thread::sleep(Duration::from_millis(100));
    }
    let bad = check(&env, Some(&as_pitr));
    assert_eq!(bad.code, PROBLEMS, "{bad:?}");
    let l = line(&bad, "archive_command");
    assert!(
        l.starts_with("FAIL") && l.contains("/bin/true") && l.contains("fix: set archive_command"),
        "{l}"
    );
    assert!(
        line(&bad, "archiving").starts_with("SKIP"),
        "{}",
        bad.stdout
    );
    assert!(line(&bad, "store").starts_with("OK"), "{}", bad.stdout);

    // A server of another cluster against this repository.
    let other = Pg::archiving(dir.join("other"), &with(&env, "PITR_SERVER_NAME", "other"));
    let bad = check(&env, Some(&other.conninfo()));
    assert_eq!(bad.code, PROBLEMS, "{bad:?}");
    let l = line(&bad, "system identifier");
    assert!(
        l.starts_with("FAIL") && l.contains("another cluster") && l.contains("--server-name"),
        "{l}"
    );
}
