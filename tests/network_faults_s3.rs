//! Network faults between pitr and Ceph RGW, injected by the test-only
//! fault proxy (tests/fault-proxy): resets in the middle of a PUT, a
//! multipart part and a GET body, stalls longer than the read timeout, 503
//! SlowDown and 500 InternalError answers, a lost answer, and refused
//! connections, on wal-push, wal-fetch, backup and restore. Each test
//! checks that the fault fired (the proxy counts it), the exit code, the
//! log line naming the fault, and the data afterwards: one complete object
//! or none under the final key, no file in the destination, no backup
//! listed as usable, an emptied PGDATA.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::pg::Pg;
use common::s3::Rgw;
use common::{fresh_segment, pitr, run, Run, TestDir};
use fault_proxy::{Dir, HttpAction, HttpProxy, HttpRule, TcpFault, TcpProxy, TcpRule};

const SEGMENT: &str = "000000010000000000000001";
const MIB: u64 = 1 << 20;

/// pitr's environment for `bucket`, through `endpoint` (a proxy), with
/// uncompressed objects (so a byte count in the proxy is a byte count of
/// the segment) and short timeouts (a stall is noticed in 2 s).
fn env_via(rgw: &Rgw, bucket: &str, endpoint: &str) -> Vec<(String, String)> {
    let mut env = rgw.pitr_env(bucket, "main");
    for (k, v) in env.iter_mut() {
        if k == "PITR_ENDPOINT_URL" {
            *v = endpoint.to_string();
        }
    }
    env.extend(
        [
            ("PITR_COMPRESSION", "none"),
            ("PITR_S3_ATTEMPTS", "3"),
            ("PITR_S3_READ_TIMEOUT", "2"),
            ("PITR_S3_CONNECT_TIMEOUT", "2"),
            ("PITR_S3_REQUEST_TIME_LIMIT", "60"),
            ("PITR_PREFETCH", "0"),
            ("PITR_FETCH_RETRIES", "2"),
            ("PITR_FETCH_RETRY_WAIT", "0.2"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    env
}

fn pitr_run(env: &[(String, String)], args: &[&str]) -> Run {
    run(pitr().envs(env.iter().cloned()).args(args))
}

/// The WAL objects stored under server `main`.
fn wal_keys(rgw: &Rgw, bucket: &str) -> Vec<String> {
    rgw.keys(bucket, "pg/main/wals/")
}

struct WalCase {
    rgw: Rgw,
    bucket: String,
    dir: TestDir,
    segment: PathBuf,
    tcp: TcpProxy,
}

impl WalCase {
    fn new(tag: &str) -> WalCase {
        let rgw = Rgw::from_env();
        let bucket = rgw.new_bucket(tag);
        let dir = TestDir::new(tag);
        let segment = fresh_segment(&dir, "seg");
        let tcp = TcpProxy::start(&rgw.endpoint);
        WalCase {
            rgw,
            bucket,
            dir,
            segment,
            tcp,
        }
    }

    fn tcp_env(&self) -> Vec<(String, String)> {
        env_via(&self.rgw, &self.bucket, &self.tcp.url("https"))
    }

    fn push(&self, env: &[(String, String)]) -> Run {
        pitr_run(env, &["wal-push", self.segment.to_str().unwrap()])
    }

    /// Pushes the segment straight to RGW (no proxy), for fetch tests.
    fn push_direct(&self) {
        let env = env_via(&self.rgw, &self.bucket, &self.rgw.endpoint);
        let r = self.push(&env);
        assert_eq!(r.code, 0, "{r:?}");
    }

    /// Exactly one WAL object, holding the segment's bytes.
    fn assert_stored_once(&self) {
        let keys = wal_keys(&self.rgw, &self.bucket);
        assert_eq!(keys.len(), 1, "one object for the segment: {keys:?}");
        assert!(keys[0].ends_with(SEGMENT), "{keys:?}");
        let stored = self.rgw.get(&self.bucket, &keys[0]);
        assert!(
            stored == std::fs::read(&self.segment).unwrap(),
            "the stored object is the segment, byte for byte"
        );
        assert!(
            self.rgw.open_uploads(&self.bucket, "pg/").is_empty(),
            "no unfinished upload"
        );
    }

    fn assert_nothing_stored(&self) {
        let keys = wal_keys(&self.rgw, &self.bucket);
        assert!(keys.is_empty(), "nothing under a final key: {keys:?}");
        assert!(self.rgw.open_uploads(&self.bucket, "pg/").is_empty());
    }

    /// A fresh destination directory for wal-fetch.
    fn dest_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn fetch(&self, env: &[(String, String)], dest_dir: &Path, extra: &[&str]) -> Run {
        let dest = dest_dir.join("RECOVERYXLOG");
        let mut args = vec!["wal-fetch", SEGMENT, dest.to_str().unwrap()];
        args.extend_from_slice(extra);
        pitr_run(env, &args)
    }

    fn assert_fetched(&self, dest_dir: &Path) {
        let got = std::fs::read(dest_dir.join("RECOVERYXLOG")).unwrap();
        assert!(
            got == std::fs::read(&self.segment).unwrap(),
            "fetched bytes differ"
        );
        assert_eq!(entries(dest_dir), ["RECOVERYXLOG"], "nothing else left");
    }
}

/// The names in a directory (hidden ones included), sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Lines of pitr's log that report a failed attempt.
fn failed_attempts(r: &Run) -> usize {
    r.stderr.matches("attempt failed").count()
}

// --- wal-push ---------------------------------------------------------------

#[test]
fn wal_push_retries_a_reset_mid_put_and_stores_the_segment_once() {
    let c = WalCase::new("nf-push-reset1");
    c.tcp.add(TcpRule::once(TcpFault::Reset {
        dir: Dir::Up,
        after: 4 * MIB,
    }));
    let r = c.push(&c.tcp_env());
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(c.tcp.stats().faults, 1, "the reset fired");
    assert!(failed_attempts(&r) >= 1, "the retry is logged: {r:?}");
    assert!(
        r.stderr.to_lowercase().contains("reset"),
        "names the fault: {r:?}"
    );
    c.assert_stored_once();
}

#[test]
fn wal_push_fails_with_nothing_stored_when_every_put_is_reset() {
    let c = WalCase::new("nf-push-reset");
    c.tcp.add(TcpRule::always(TcpFault::Reset {
        dir: Dir::Up,
        after: 4 * MIB,
    }));
    let r = c.push(&c.tcp_env());
    assert_eq!(r.code, 1, "non-zero, so PostgreSQL retries: {r:?}");
    assert_eq!(
        c.tcp.stats().faults,
        3,
        "one reset per attempt (--s3-attempts 3)"
    );
    assert!(
        r.stderr.to_lowercase().contains("reset"),
        "names the fault: {r:?}"
    );
    assert!(r.stderr.contains("PUT s3://"), "names the request: {r:?}");
    c.assert_nothing_stored();
    // Once the network is back, the same push stores the segment.
    c.tcp.clear();
    let r = c.push(&c.tcp_env());
    assert_eq!(r.code, 0, "{r:?}");
    c.assert_stored_once();
}

#[test]
fn wal_push_gives_up_on_a_stall_longer_than_the_read_timeout() {
    let c = WalCase::new("nf-push-stall");
    // One stall: the attempt times out (2 s) and the retry stores it.
    c.tcp.add(TcpRule::once(TcpFault::Stall {
        dir: Dir::Up,
        after: 4 * MIB,
        time: Duration::from_secs(120),
    }));
    let r = c.push(&c.tcp_env());
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(c.tcp.stats().faults, 1);
    assert!(failed_attempts(&r) >= 1, "{r:?}");
    c.assert_stored_once();

    // Stalls on every attempt: a failure well before the stall ends.
    let c = WalCase::new("nf-push-stall-all");
    c.tcp.add(TcpRule::always(TcpFault::Stall {
        dir: Dir::Up,
        after: 4 * MIB,
        time: Duration::from_secs(120),
    }));
    let r = c.push(&c.tcp_env());
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(c.tcp.stats().faults, 3, "{r:?}");
    let e = r.stderr.to_lowercase();
    assert!(
        e.contains("did not answer in time") || e.contains("throughput") || e.contains("timed out"),
        "names the stall: {r:?}"
    );
    c.assert_nothing_stored();
}

#[test]
fn wal_push_killed_in_the_middle_of_its_put_stores_nothing_and_the_retry_stores_it_once() {
    let c = WalCase::new("nf-push-kill");
    // The PUT's body stops after 4 MiB, long enough to kill the push in
    // the middle of its upload (no timeout fires first).
    c.tcp.add(TcpRule::once(TcpFault::Stall {
        dir: Dir::Up,
        after: 4 * MIB,
        time: Duration::from_secs(120),
    }));
    let mut env = c.tcp_env();
    env.push(("PITR_S3_READ_TIMEOUT".into(), "60".into()));
    let mut child = pitr()
        .envs(env.iter().cloned())
        .arg("wal-push")
        .arg(&c.segment)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    c.tcp
        .wait_for("the PUT to stall", Duration::from_secs(60), |s| {
            s.faults >= 1
        });
    assert!(
        child.try_wait().unwrap().is_none(),
        "the push is still uploading"
    );
    child.kill().unwrap(); // SIGKILL, half of the body sent
    child.wait().unwrap();
    c.assert_nothing_stored();

    // PostgreSQL's archiver calls again: stored once, byte for byte.
    c.tcp.clear();
    let r = c.push(&c.tcp_env());
    assert_eq!(r.code, 0, "{r:?}");
    c.assert_stored_once();
}

#[test]
fn wal_push_fails_cleanly_when_connections_are_refused() {
    let c = WalCase::new("nf-push-refused");
    c.tcp.stop_listening();
    let r = c.push(&c.tcp_env());
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("connection refused"), "{r:?}");
    assert_eq!(c.tcp.stats().connections, 0);
    c.assert_nothing_stored();

    // Accepted then reset at once (a dying server): retried, then stored.
    c.tcp.resume_listening();
    c.tcp.add(TcpRule::times(TcpFault::Refuse, 2));
    let r = c.push(&c.tcp_env());
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(c.tcp.stats().faults, 2);
    c.assert_stored_once();
}

#[test]
fn wal_push_retries_slowdown_and_internal_error() {
    let c = WalCase::new("nf-push-5xx");
    let http = HttpProxy::start(&c.rgw.http_endpoint);
    let env = env_via(&c.rgw, &c.bucket, &http.url());
    http.add(
        HttpRule::once(HttpAction::SlowDown)
            .method("PUT")
            .path("/wals/"),
    );
    http.add(
        HttpRule::once(HttpAction::InternalError)
            .method("PUT")
            .path("/wals/"),
    );
    let r = c.push(&env);
    assert_eq!(r.code, 0, "{r:?}");
    let s = http.stats();
    assert_eq!(s.faults, 2, "{:?}", s.events);
    assert!(r.stderr.contains("HTTP 503 SlowDown"), "{r:?}");
    assert!(r.stderr.contains("HTTP 500 InternalError"), "{r:?}");
    c.assert_stored_once();

    // Every PUT answered 503: exit 1 naming SlowDown, nothing stored.
    let c2 = WalCase::new("nf-push-503");
    let http = HttpProxy::start(&c2.rgw.http_endpoint);
    let env = env_via(&c2.rgw, &c2.bucket, &http.url());
    http.add(
        HttpRule::always(HttpAction::SlowDown)
            .method("PUT")
            .path("/wals/"),
    );
    let r = c2.push(&env);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(http.stats().faults, 3);
    assert!(r.stderr.contains("SlowDown"), "{r:?}");
    c2.assert_nothing_stored();
}

#[test]
fn wal_push_whose_answer_is_lost_still_succeeds_once() {
    // The store stores the segment but the answer never arrives: the
    // retry's conditional PUT finds it there, pitr compares content, and
    // the push succeeds with one object.
    let c = WalCase::new("nf-push-lost");
    let http = HttpProxy::start(&c.rgw.http_endpoint);
    let env = env_via(&c.rgw, &c.bucket, &http.url());
    http.add(
        HttpRule::once(HttpAction::DropResponse)
            .method("PUT")
            .path("/wals/"),
    );
    let r = c.push(&env);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(http.stats().faults, 1);
    c.assert_stored_once();
}

#[test]
fn wal_push_stops_at_the_request_time_limit() {
    // A read timeout longer than the stall budget: the request time limit
    // (--s3-request-time-limit) is what ends the push, during the first
    // attempt, instead of three attempts of 60 s each.
    let c = WalCase::new("nf-push-limit");
    c.tcp.add(TcpRule::always(TcpFault::Stall {
        dir: Dir::Up,
        after: 4 * MIB,
        time: Duration::from_secs(300),
    }));
    let mut env = c.tcp_env();
    env.extend([
        ("PITR_S3_READ_TIMEOUT".to_string(), "60".to_string()),
        ("PITR_S3_REQUEST_TIME_LIMIT".to_string(), "3".to_string()),
    ]);
    let r = c.push(&env);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        c.tcp.stats().faults,
        1,
        "one attempt, cut short by the limit"
    );
    assert!(r.stderr.contains("did not answer in time"), "{r:?}");
    assert!(
        r.stderr.contains("--s3-request-time-limit"),
        "names the setting: {r:?}"
    );
    c.assert_nothing_stored();
}

// --- wal-fetch --------------------------------------------------------------

#[test]
fn wal_fetch_retries_a_reset_mid_body_and_delivers_the_whole_segment() {
    let c = WalCase::new("nf-fetch-reset1");
    c.push_direct();
    c.tcp.add(TcpRule::once(TcpFault::Reset {
        dir: Dir::Down,
        after: 4 * MIB,
    }));
    let d = c.dest_dir("once");
    let r = c.fetch(&c.tcp_env(), &d, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(c.tcp.stats().faults, 1);
    c.assert_fetched(&d);
}

#[test]
fn wal_fetch_exits_above_125_with_no_file_when_every_body_is_reset() {
    let c = WalCase::new("nf-fetch-reset");
    c.push_direct();
    c.tcp.add(TcpRule::always(TcpFault::Reset {
        dir: Dir::Down,
        after: 4 * MIB,
    }));
    let d = c.dest_dir("always");
    let r = c.fetch(&c.tcp_env(), &d, &[]);
    assert_eq!(r.code, 255, "not 'not found': recovery must stop: {r:?}");
    assert_eq!(c.tcp.stats().faults, 3, "1 + --retries 2 fetches");
    assert!(r.stderr.contains("after 3 attempts"), "{r:?}");
    assert!(
        r.stderr.to_lowercase().contains("reset"),
        "names the fault: {r:?}"
    );
    assert!(entries(&d).is_empty(), "no partial file: {:?}", entries(&d));

    // In standby mode the same failure is "not found" (1): the standby
    // streams from the primary instead.
    let r = c.fetch(&c.tcp_env(), &d, &["--standby"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(entries(&d).is_empty(), "{:?}", entries(&d));
}

#[test]
fn wal_fetch_exits_above_125_on_stalls_refusals_and_5xx() {
    let c = WalCase::new("nf-fetch-misc");
    c.push_direct();

    // A body that stalls longer than the read timeout, every time.
    c.tcp.add(TcpRule::always(TcpFault::Stall {
        dir: Dir::Down,
        after: 4 * MIB,
        time: Duration::from_secs(120),
    }));
    let d = c.dest_dir("stall");
    let r = c.fetch(&c.tcp_env(), &d, &[]);
    assert_eq!(r.code, 255, "{r:?}");
    assert_eq!(c.tcp.stats().faults, 3, "{r:?}");
    assert!(entries(&d).is_empty(), "{:?}", entries(&d));
    c.tcp.clear();

    // A body cut short (the connection closed cleanly after 4 MiB): never
    // delivered as a short segment.
    c.tcp.add(TcpRule::always(TcpFault::Cut {
        dir: Dir::Down,
        after: 4 * MIB,
    }));
    let d = c.dest_dir("cut");
    let r = c.fetch(&c.tcp_env(), &d, &[]);
    assert_eq!(r.code, 255, "{r:?}");
    assert_eq!(c.tcp.stats().faults, 3 + 3, "{r:?}");
    assert!(entries(&d).is_empty(), "{:?}", entries(&d));
    c.tcp.clear();
    c.tcp.add(TcpRule::once(TcpFault::Cut {
        dir: Dir::Down,
        after: 4 * MIB,
    }));
    let d = c.dest_dir("cut-once");
    let r = c.fetch(&c.tcp_env(), &d, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    c.assert_fetched(&d);
    c.tcp.clear();

    // A store that refuses connections.
    c.tcp.stop_listening();
    let d = c.dest_dir("refused");
    let r = c.fetch(&c.tcp_env(), &d, &[]);
    assert_eq!(r.code, 255, "{r:?}");
    assert!(r.stderr.contains("connection refused"), "{r:?}");
    assert!(entries(&d).is_empty());
    c.tcp.resume_listening();

    // 503 then 500 on the GET: retried, delivered.
    let http = HttpProxy::start(&c.rgw.http_endpoint);
    let env = env_via(&c.rgw, &c.bucket, &http.url());
    http.add(
        HttpRule::once(HttpAction::SlowDown)
            .method("GET")
            .path(SEGMENT),
    );
    http.add(
        HttpRule::once(HttpAction::InternalError)
            .method("GET")
            .path(SEGMENT),
    );
    let d = c.dest_dir("5xx-once");
    let r = c.fetch(&env, &d, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(http.stats().faults, 2);
    c.assert_fetched(&d);

    // 503 on every GET: 255, naming SlowDown, no file.
    http.add(
        HttpRule::always(HttpAction::SlowDown)
            .method("GET")
            .path(SEGMENT),
    );
    let d = c.dest_dir("5xx");
    let r = c.fetch(&env, &d, &[]);
    assert_eq!(r.code, 255, "{r:?}");
    assert!(r.stderr.contains("SlowDown"), "{r:?}");
    assert!(entries(&d).is_empty());
}

// --- backup and restore ------------------------------------------------------

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The backups `pitr backup list` shows, as (id, status, usable).
fn listed(env: &[(String, String)]) -> Vec<(String, String, bool)> {
    let r = pitr_run(env, &["backup", "list", "--format", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    json(&r.stdout)["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["backup_id"].as_str().unwrap_or_default().to_string(),
                b["status"].as_str().unwrap_or_default().to_string(),
                b["usable"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn usable(env: &[(String, String)]) -> Vec<String> {
    listed(env)
        .into_iter()
        .filter(|b| b.2)
        .map(|b| b.0)
        .collect()
}

fn is_empty_or_missing(dir: &Path) -> bool {
    !dir.exists() || entries(dir).is_empty()
}

#[test]
fn backup_and_restore_under_resets_and_5xx() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("nf-backup");
    let dir = TestDir::new("nf-backup");
    let direct = env_via(&rgw, &bucket, &rgw.endpoint);
    let pg = Pg::archiving(dir.join("primary"), &direct);
    pg.pgbench(&["-i", "-s", "3", "-q"]);
    let rows = pg.sql("select count(*) from pgbench_accounts");

    let tcp = TcpProxy::start(&rgw.endpoint);
    let http = HttpProxy::start(&rgw.http_endpoint);
    let with_parts = |endpoint: &str| {
        let mut env = env_via(&rgw, &bucket, endpoint);
        // 5 MiB parts: the base tar (about 50 MB uncompressed) is a
        // multipart upload of about ten parts.
        env.push(("PITR_S3_PART_SIZE".into(), "5".into()));
        env
    };
    let via_tcp = with_parts(&tcp.url("https"));
    let via_http = with_parts(&http.url());
    let backup = |env: &[(String, String)]| {
        pitr_run(
            env,
            &["backup", "-d", &pg.conninfo(), "--wal-timeout", "60"],
        )
    };

    // A reset in the middle of the third part of a connection (12 MiB
    // sent: 2 MiB into a 5 MiB part): the part is sent again, the backup
    // is DONE and verifies.
    tcp.add(TcpRule::once(TcpFault::Reset {
        dir: Dir::Up,
        after: 12 * MIB,
    }));
    let r = backup(&via_tcp);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(tcp.stats().faults, 1, "the reset fired");
    assert!(
        r.stderr.contains("attempt failed"),
        "the retry is logged: {r:?}"
    );
    let first = r.stdout.trim().to_string();
    assert_eq!(usable(&direct), std::slice::from_ref(&first));
    let v = pitr_run(&direct, &["backup", "verify", &first]);
    assert_eq!(v.code, 0, "{v:?}");

    // A 503 SlowDown on one part and a 500 InternalError on another.
    http.add(
        HttpRule::once(HttpAction::SlowDown)
            .method("PUT")
            .path("partNumber=2"),
    );
    http.add(
        HttpRule::once(HttpAction::InternalError)
            .method("PUT")
            .path("partNumber=4"),
    );
    let r = backup(&via_http);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(http.stats().faults, 2, "{:?}", http.stats().events);
    let second = r.stdout.trim().to_string();
    let v = pitr_run(&direct, &["backup", "verify", &second]);
    assert_eq!(v.code, 0, "{v:?}");

    // Every connection reset once it has sent 1 MiB: every part fails,
    // the backup fails, is not listed as usable, and leaves no upload open.
    tcp.add(TcpRule::always(TcpFault::Reset {
        dir: Dir::Up,
        after: MIB,
    }));
    let r = backup(&via_tcp);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.to_lowercase().contains("reset"),
        "names the fault: {r:?}"
    );
    assert!(
        rgw.open_uploads(&bucket, "pg/").is_empty(),
        "no upload left open"
    );
    let all = listed(&direct);
    assert!(
        all.iter()
            .all(|b| b.0 == first || b.0 == second || (b.1 != "DONE" && !b.2)),
        "the failed backup is not DONE: {all:?}"
    );
    assert_eq!(usable(&direct), [first.clone(), second.clone()]);
    tcp.clear();

    // Every part answered 500: the same.
    http.add(
        HttpRule::always(HttpAction::InternalError)
            .method("PUT")
            .path("partNumber="),
    );
    let r = backup(&via_http);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("InternalError"), "{r:?}");
    assert!(rgw.open_uploads(&bucket, "pg/").is_empty());
    assert_eq!(usable(&direct), [first.clone(), second.clone()]);
    http.clear();

    let restore = |env: &[(String, String)], name: &str, jobs: &str| {
        let data = dir.join(name);
        let r = pitr_run(
            env,
            &[
                "restore",
                "--pgdata",
                data.to_str().unwrap(),
                "--backup-id",
                &second,
                "--jobs",
                jobs,
            ],
        );
        (r, data)
    };

    // Restore with ranged GETs: a reset in the middle of a range's body
    // is retried; the restore completes (every tar is checked against the
    // SHA-256 pitr.json records).
    let before = tcp.stats().faults;
    tcp.add(TcpRule::once(TcpFault::Reset {
        dir: Dir::Down,
        after: 12 * MIB,
    }));
    let (r, restored) = restore(&via_tcp, "r-ranged", "4");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(tcp.stats().faults, before + 1);
    assert!(restored.join("PG_VERSION").exists());

    // A range whose body stalls past the read timeout: fetched again.
    let before = tcp.stats().faults;
    tcp.add(TcpRule::once(TcpFault::Stall {
        dir: Dir::Down,
        after: 12 * MIB,
        time: Duration::from_secs(120),
    }));
    let (r, _) = restore(&via_tcp, "r-stall", "4");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(tcp.stats().faults, before + 1);

    // One 503 on a ranged GET: retried.
    let before = http.stats().faults;
    http.add(
        HttpRule::once(HttpAction::SlowDown)
            .method("GET")
            .path("data.tar"),
    );
    let (r, _) = restore(&via_http, "r-503", "4");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(http.stats().faults, before + 1);

    // Every connection reset once 1 MiB came down it: every body (one
    // GET per tar with --jobs 1, every range with --jobs 4) fails on every
    // attempt; the restore fails, empties PGDATA and says so. (A reset
    // only after 12 MiB does not fail --jobs 4: each range, 8 MiB, is
    // retried on a fresh connection.)
    tcp.add(TcpRule::always(TcpFault::Reset {
        dir: Dir::Down,
        after: MIB,
    }));
    for jobs in ["1", "4"] {
        let (r, data) = restore(&via_tcp, &format!("r-fail-{jobs}"), jobs);
        assert_eq!(r.code, 1, "--jobs {jobs}: {r:?}");
        assert!(
            r.stderr.to_lowercase().contains("reset"),
            "names the fault: {r:?}"
        );
        assert!(
            is_empty_or_missing(&data),
            "--jobs {jobs}: nothing half-restored: {:?}",
            entries(&data)
        );
        assert!(
            r.stderr.contains("run the restore again"),
            "says how to retry: {r:?}"
        );
    }
    tcp.clear();

    // The restore that survived a reset recovers every row.
    let pg2 = common::pg::start_restored(&restored, &direct, "archive_mode = off\n");
    assert_eq!(pg2.sql("select count(*) from pgbench_accounts"), rows);
}

#[test]
fn bodies_cut_half_way_are_read_again_by_backup_verify() {
    // The S3 client retries a request whose answer does not arrive, not a
    // body that ends half way: `backup verify` read the manifest and each
    // tar with one GET, and failed on the first reset (found by
    // bench/soak.sh); backup.info and pitr.json, read whole, likewise. The
    // manifest and tars are now read in ranges (each retried), small
    // objects are read again with the same attempts.
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("nf-meta");
    let dir = TestDir::new("nf-meta");
    let direct = env_via(&rgw, &bucket, &rgw.endpoint);
    let pg = Pg::archiving(dir.join("primary"), &direct);
    pg.pgbench(&["-i", "-s", "1", "-q"]);
    let r = pitr_run(
        &direct,
        &["backup", "-d", &pg.conninfo(), "--wal-timeout", "60"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let id = r.stdout.trim().to_string();

    let http = HttpProxy::start(&rgw.http_endpoint);
    let env = env_via(&rgw, &bucket, &http.url());
    for object in ["backup_manifest", "pitr.json", "backup.info", "data.tar"] {
        http.add(
            HttpRule::once(HttpAction::CutBodyAfter(100))
                .method("GET")
                .path(object),
        );
    }
    let v = pitr_run(&env, &["backup", "verify", &id]);
    assert_eq!(v.code, 0, "{v:?}");
    let s = http.stats();
    assert_eq!(s.faults, 4, "every cut fired: {:?}", s.events);
    assert!(
        v.stderr.contains("fetching the range again"),
        "logged: {v:?}"
    );
    assert!(
        v.stderr.contains("attempt failed: reading the body"),
        "logged: {v:?}"
    );

    // Cut on every attempt: a clear failure naming the object.
    http.add(
        HttpRule::always(HttpAction::CutBodyAfter(100))
            .method("GET")
            .path("backup_manifest"),
    );
    let v = pitr_run(&env, &["backup", "verify", &id]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stderr.contains("backup_manifest"), "{v:?}");
}

#[test]
fn unresolvable_hosts_and_refused_connections_on_every_stage() {
    let c = WalCase::new("nf-dns");
    // A host name that cannot resolve (.invalid is reserved for that).
    let dns = env_via(&c.rgw, &c.bucket, "https://no-such-host.invalid:7480");
    let r = c.push(&dns);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("cannot resolve the host"), "{r:?}");
    let d = c.dest_dir("dns");
    let r = c.fetch(&dns, &d, &[]);
    assert_eq!(r.code, 255, "{r:?}");
    assert!(r.stderr.contains("cannot resolve the host"), "{r:?}");
    assert!(entries(&d).is_empty());
    c.assert_nothing_stored();

    // Backup and restore against a store that refuses connections.
    let direct = env_via(&c.rgw, &c.bucket, &c.rgw.endpoint);
    let pg = Pg::archiving(c.dir.join("primary"), &direct);
    c.tcp.stop_listening();
    let refused = c.tcp_env();
    let r = pitr_run(
        &refused,
        &["backup", "-d", &pg.conninfo(), "--wal-timeout", "30"],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("connection refused"), "{r:?}");
    assert!(listed(&direct).is_empty(), "no backup recorded");
    let data = c.dir.join("restore-refused");
    let r = pitr_run(&refused, &["restore", "--pgdata", data.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("connection refused"), "{r:?}");
    assert!(is_empty_or_missing(&data), "{:?}", entries(&data));

    // A delayed answer within the timeouts is only slower.
    c.tcp.resume_listening();
    let http = HttpProxy::start(&c.rgw.http_endpoint);
    let env = env_via(&c.rgw, &c.bucket, &http.url());
    http.add(HttpRule::once(HttpAction::Delay(Duration::from_millis(500))).method("PUT"));
    let r = c.push(&env);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(http.stats().faults, 1);
    c.assert_stored_once();
}

#[test]
fn a_stalled_part_and_a_stalled_fetch_are_retried() {
    let c = WalCase::new("nf-stall-more");
    // wal-fetch: one body stalls past the read timeout, the retry delivers.
    c.push_direct();
    c.tcp.add(TcpRule::once(TcpFault::Stall {
        dir: Dir::Down,
        after: 4 * MIB,
        time: Duration::from_secs(120),
    }));
    let d = c.dest_dir("stall-once");
    let r = c.fetch(&c.tcp_env(), &d, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(c.tcp.stats().faults, 1);
    c.assert_fetched(&d);

    // backup: one multipart part stalls past the read timeout (a bucket of
    // its own: the segment above is another cluster's).
    let c = WalCase::new("nf-stall-backup");
    let direct = env_via(&c.rgw, &c.bucket, &c.rgw.endpoint);
    let pg = Pg::archiving(c.dir.join("primary"), &direct);
    pg.pgbench(&["-i", "-s", "3", "-q"]);
    let mut env = c.tcp_env();
    env.push(("PITR_S3_PART_SIZE".into(), "5".into()));
    c.tcp.add(TcpRule::once(TcpFault::Stall {
        dir: Dir::Up,
        after: 12 * MIB,
        time: Duration::from_secs(120),
    }));
    let r = pitr_run(
        &env,
        &["backup", "-d", &pg.conninfo(), "--wal-timeout", "60"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(c.tcp.stats().faults, 1, "{:?}", c.tcp.stats().events);
    let id = r.stdout.trim().to_string();
    let v = pitr_run(&direct, &["backup", "verify", &id]);
    assert_eq!(v.code, 0, "{v:?}");
    assert!(c.rgw.open_uploads(&c.bucket, "pg/").is_empty());
}

#[test]
fn history_probes_and_expire_under_5xx_fail_loudly_never_as_not_found() {
    let c = WalCase::new("nf-hist-5xx");
    c.push_direct();
    let http = HttpProxy::start(&c.rgw.http_endpoint);
    let env = env_via(&c.rgw, &c.bucket, &http.url());
    let probe = |env: &[(String, String)], extra: &[&str]| {
        let d = c.dest_dir("hist");
        let dest = d.join("RECOVERYHISTORY");
        let mut args = vec!["wal-fetch", "00000002.history", dest.to_str().unwrap()];
        args.extend_from_slice(extra);
        let r = pitr_run(env, &args);
        assert!(!dest.exists(), "{r:?}");
        r
    };

    // A history probe the store cannot answer is a failure (255), never
    // "not in the archive" (1), which would pick the wrong timeline.
    http.add(HttpRule::always(HttpAction::SlowDown));
    let r = probe(&env, &[]);
    assert_eq!(r.code, 255, "{r:?}");
    assert!(r.stderr.contains("SlowDown"), "{r:?}");
    assert!(http.stats().faults >= 1);
    // expire cannot read the catalog: it fails and deletes nothing.
    let policy = ["expire", "--retention-policy", "REDUNDANCY 1"];
    let r = pitr_run(&env, &policy);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("SlowDown"), "{r:?}");
    assert_eq!(wal_keys(&c.rgw, &c.bucket).len(), 1);

    // One 503 each: retried, and the answers are the real ones.
    http.clear();
    let before = http.stats().faults;
    http.add(HttpRule::once(HttpAction::SlowDown));
    let r = probe(&env, &[]);
    assert_eq!(r.code, 1, "not in the archive, truly: {r:?}");
    http.add(HttpRule::once(HttpAction::InternalError));
    let r = pitr_run(&env, &policy);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(http.stats().faults - before, 2, "{:?}", http.stats().events);
    assert_eq!(wal_keys(&c.rgw, &c.bucket).len(), 1, "nothing to expire");
}
