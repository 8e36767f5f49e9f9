//! The metrics, the dashboard and the alert rules on real parts: a real
//! PostgreSQL 15 archives with `pitr wal-push` into the real Ceph RGW, pitr
//! takes a base backup, and `pitr metrics --listen --pgdata` serves the
//! server's metrics; a real Prometheus (Debian's, on a free port with a
//! temporary configuration that loads docs/monitoring/pitr-alerts.yaml)
//! scrapes it. Then, through Prometheus's HTTP API:
//! - every expression of the Grafana dashboard returns data;
//! - every rule of the rules file is loaded and evaluates without error,
//!   each of its expressions runs, and every pitr metric it names has
//!   series (an alert's expression itself returns data only while it fires;
//!   docs/monitoring/pitr-alerts.test.yaml proves when they fire);
//! - the drill recorded here failed, so PitrDrillFailed becomes active for
//!   this server, and PitrStoreUnreachable does not.
//!
//! The Verify, Expire and Drill state records are written here with the
//! fields `pitr::metrics::records` documents, as `archive verify`,
//! `expire` and `drill` write them.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pg::Pg;
use common::s3::Rgw;
use common::{pitr, run, TestDir};
use serde_json::Value;

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `url` with curl: (HTTP status, body).
fn get(url: &str, query: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"]);
    if let Some(q) = query {
        c.args(["--get", "--data-urlencode"])
            .arg(format!("query={q}"));
    }
    let r = run(c.arg(url));
    let (body, code) = r.stdout.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match ok() {
            Ok(()) => return,
            Err(e) if start.elapsed() > timeout => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// An instant query through Prometheus's API: its result vector.
fn query(prom: &str, q: &str) -> Result<Vec<Value>, String> {
    let (code, body) = get(&format!("{prom}/api/v1/query"), Some(q));
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{code} {e}: {body}"))?;
    if v["status"] != "success" {
        return Err(format!("{q}: {body}"));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Every `"expr"` in the dashboard, its Grafana variables replaced.
fn dashboard_exprs(dashboard: &Value, out: &mut Vec<String>) {
    match dashboard {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(
                        e.replace("$server", ".*")
                            .replace("$__rate_interval", "15s"),
                    ),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// The pitr metric names an expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("pitr_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn value_of(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[test]
fn prometheus_scrapes_pitr_metrics_and_every_dashboard_and_rule_expression_has_data() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("prom");
    let dir = TestDir::new("prom");
    let server = "prom-main";
    let env = rgw.pitr_env(&bucket, server);

    // A primary archiving into RGW, and a base backup.
    let data = dir.join("data");
    let mut pg = Pg::archiving(data.clone(), &env);
    pg.sql("create table t (id int primary key); insert into t select generate_series(1, 1000)");
    let seg = pg.switch_wal();
    pg.wait_archived(&seg, Duration::from_secs(60));
    let r = run(pitr().envs(env.iter().cloned()).args([
        "backup",
        "-d",
        &pg.conninfo(),
        "--wal-timeout",
        "60",
    ]));
    assert_eq!(r.code, 0, "{r:?}");

    // The other writers' records, with the fields metrics reads.
    let now = chrono::Utc::now().to_rfc3339();
    let state = |kind: &str, body: String| {
        rgw.put_raw(
            &bucket,
            &format!("pg/{server}/pitr/state/{kind}.json"),
            body.into_bytes(),
        )
    };
    state(
        "verify",
        format!(r#"{{"finished_at": "{now}", "gaps": 0}}"#),
    );
    state(
        "expire",
        format!(r#"{{"finished_at": "{now}", "obsolete_backups": 0}}"#),
    );
    state(
        "drill",
        format!(r#"{{"finished_at": "{now}", "passed": false, "rto_seconds": 12.5}}"#),
    );

    // `pitr metrics` once: what the server and the repository say.
    let pgdata = data.display().to_string();
    let r = run(pitr()
        .envs(env.iter().cloned())
        .args(["metrics", "--pgdata", &pgdata]));
    assert_eq!(r.code, 0, "{r:?}");
    let text = r.stdout;
    let archived: f64 = pg
        .sql("select archived_count from pg_stat_archiver")
        .parse()
        .unwrap();
    let s = format!("{{server=\"{server}\"}}");
    assert_eq!(
        value_of(&text, &format!("pitr_archived_segments_total{s}")),
        archived,
        "{text}"
    );
    assert_eq!(
        value_of(&text, &format!("pitr_archive_failures_total{s}")),
        0.0
    );
    assert_eq!(value_of(&text, &format!("pitr_usable_backups{s}")), 1.0);
    assert_eq!(value_of(&text, &format!("pitr_store_up{s}")), 1.0);
    assert_eq!(value_of(&text, &format!("pitr_last_drill_success{s}")), 0.0);
    assert_eq!(
        value_of(&text, &format!("pitr_last_drill_rto_seconds{s}")),
        12.5
    );
    assert_eq!(
        value_of(&text, &format!("pitr_archive_verify_gaps{s}")),
        0.0
    );
    assert!(value_of(&text, &format!("pitr_last_available_backup_size_bytes{s}")) > 0.0);
    let first = value_of(
        &text,
        &format!("pitr_first_recoverability_point_timestamp_seconds{s}"),
    );
    let last = value_of(
        &text,
        &format!("pitr_last_recoverability_point_timestamp_seconds{{server=\"{server}\",timeline=\"1\"}}"),
    );
    assert!(first > 1.7e9 && last >= first, "{text}");
    for secret in [&rgw.secret_key, &rgw.access_key] {
        assert!(
            !text.contains(secret.as_str()),
            "credentials in the metrics"
        );
    }

    // `pitr metrics --listen`, scraped by Prometheus.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let exporter = Killed(
        pitr()
            .envs(env.iter().cloned())
            .args([
                "metrics",
                "--listen",
                &listen,
                "--interval",
                "1",
                "--pgdata",
                &pgdata,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(
        "pitr metrics --listen: /healthz",
        Duration::from_secs(60),
        || match get(&format!("http://{listen}/healthz"), None) {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let (code, served) = get(&format!("http://{listen}/metrics"), None);
    assert_eq!(code, 200);
    assert!(
        served.contains("# TYPE pitr_archived_segments_total counter"),
        "{served}"
    );
    assert!(!served.contains(rgw.secret_key.as_str()));
    assert_eq!(get(&format!("http://{listen}/nothing"), None).0, 404);

    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring");
    let prom_port = free_port();
    let prom_dir = dir.join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let config = prom_dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: pitr\n    static_configs:\n      - targets: ['{listen}']\n",
            docs.join("pitr-alerts.yaml").display()
        ),
    )
    .unwrap();
    let prom_log = prom_dir.join("prometheus.log");
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&prom_log).unwrap())
            .spawn()
            .expect("prometheus (Debian package prometheus; tests/support/preflight.sh)"),
    );
    let prom = format!("http://127.0.0.1:{prom_port}");
    let log = || std::fs::read_to_string(&prom_log).unwrap_or_default();

    // Every dashboard expression returns data.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(docs.join("pitr-dashboard.json")).unwrap())
            .unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "{exprs:?}");
    wait_for(
        "dashboard expressions without data",
        Duration::from_secs(90),
        || {
            let empty: Vec<String> = exprs
                .iter()
                .filter(|e| query(&prom, e).map_or(true, |r| r.is_empty()))
                .cloned()
                .collect();
            if empty.is_empty() {
                Ok(())
            } else {
                Err(format!("{empty:#?}\n--- prometheus log ---\n{}", log()))
            }
        },
    );

    // Every rule is loaded and evaluated without error; its expression
    // runs, and every pitr metric it names has series.
    wait_for("rules evaluated", Duration::from_secs(60), || {
        let (_, body) = get(&format!("{prom}/api/v1/rules"), None);
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        let rules: Vec<&Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        if rules.len() != 9 {
            return Err(format!("{} rules loaded: {body}\n{}", rules.len(), log()));
        }
        for rule in rules {
            let name = &rule["name"];
            if rule["health"] != "ok" {
                return Err(format!(
                    "{name}: health {} {}",
                    rule["health"], rule["lastError"]
                ));
            }
            let q = rule["query"].as_str().unwrap();
            query(&prom, q)?;
            for metric in metric_names(q) {
                if query(&prom, &metric)?.is_empty() {
                    return Err(format!("{name}: {metric} has no series"));
                }
            }
        }
        Ok(())
    });
    // The failed drill's alert is active (pending or firing); the store's is not.
    wait_for("PitrDrillFailed active", Duration::from_secs(60), || {
        let (_, body) = get(&format!("{prom}/api/v1/alerts"), None);
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        let active: Vec<(String, String)> = v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["labels"]["alertname"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    a["labels"]["server"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        assert!(
            !active.iter().any(|(n, _)| n == "PitrStoreUnreachable"),
            "{body}"
        );
        if active.contains(&("PitrDrillFailed".to_string(), server.to_string())) {
            Ok(())
        } else {
            Err(body)
        }
    });
    drop(exporter);
    pg.stop();
}
