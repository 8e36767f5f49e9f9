//! The shipped alerting rules (docs/monitoring/pitr-alerts.yaml) checked
//! and unit-tested by Debian's real `promtool` (package `prometheus`, see
//! tests/support/preflight.sh): `promtool check rules`, then `promtool
//! test rules` with docs/monitoring/pitr-alerts.test.yaml, in which every
//! alert has a case where it fires and a time at which it must not. The
//! dashboard's JSON and the Kubernetes ConfigMap that carries it must
//! agree.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::run;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring")
}

fn promtool() -> Command {
    let c = Command::new("promtool");
    assert!(
        Path::new("/usr/bin/promtool").exists() || which("promtool"),
        "promtool is missing: apt-get install prometheus (tests/support/preflight.sh does)"
    );
    c
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).exists()))
        .unwrap_or(false)
}

/// The names after `key:` on lines of `text` (`- alert: X`, `alertname: X`).
fn names_after(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start().trim_start_matches("- ");
            Some(l.strip_prefix(key)?.trim().to_string())
        })
        .collect()
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let dir = monitoring();
    let r = run(promtool()
        .args(["check", "rules"])
        .arg(dir.join("pitr-alerts.yaml")));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("SUCCESS: 9 rules found"), "{r:?}");

    let r = run(promtool()
        .current_dir(&dir)
        .args(["test", "rules", "pitr-alerts.test.yaml"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("SUCCESS"), "{r:?}");
}

#[test]
fn every_alert_has_a_firing_and_a_silent_case() {
    let dir = monitoring();
    let rules = std::fs::read_to_string(dir.join("pitr-alerts.yaml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("pitr-alerts.test.yaml")).unwrap();
    let alerts: BTreeSet<String> = names_after(&rules, "alert:").into_iter().collect();
    assert_eq!(alerts.len(), 9, "{alerts:?}");
    // Each alertname block of the test file either expects alerts (a
    // firing case) or `exp_alerts: []` (a silent one).
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    let mut current = None;
    for line in tests.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("alertname:") {
            current = Some(name.trim().to_string());
        } else if let Some(name) = &current {
            if t == "exp_alerts: []" {
                silent.insert(name.clone());
            } else if t.starts_with("- exp_labels:") {
                firing.insert(name.clone());
            }
        }
    }
    assert_eq!(firing, alerts, "alerts without a firing case");
    assert_eq!(silent, alerts, "alerts without a silent case");
}

#[test]
fn the_configmap_carries_the_dashboard_as_it_is() {
    let dir = monitoring();
    let dashboard = std::fs::read_to_string(dir.join("pitr-dashboard.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    assert_eq!(parsed["uid"], "pitr");
    let cm = std::fs::read_to_string(dir.join("pitr-dashboard-configmap.yaml")).unwrap();
    assert!(cm.contains("grafana_dashboard: \"1\""), "{cm}");
    // The ConfigMap's data is the JSON file, indented by four spaces.
    let embedded: String = cm
        .split_once("pitr-dashboard.json: |\n")
        .expect("the ConfigMap names pitr-dashboard.json")
        .1
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert_eq!(embedded.trim_end(), dashboard.trim_end());
}
