//! The Metrics service of the instance sidecar. CloudNativePG calls Define
//! and Collect on every Prometheus scrape, with a 5 s budget for loading
//! the plugin: both answer from memory. The repository's status
//! (`pitr::status::gather`: the newest archived segment, the catalog's
//! usable and failed backups, the first recoverability point) is read by a
//! background task every `statusIntervalSeconds` (default 60), for the
//! archive of the Cluster the last Collect or Backup came with; the first
//! Collect wakes it. Until the first refresh ends, Collect answers with the
//! sidecar's own counters only.
//!
//! Names are complete (CloudNativePG exposes a plugin's `fq_name` as it
//! is); none has labels.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use pitr::config::redact;
use pitr::status::{gather, RepoStatus};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::proto::metrics::metric_type::Type as MetricKind;
use crate::proto::metrics::metrics_capability::{self, rpc::Type as RpcType};
use crate::proto::metrics::metrics_server::Metrics as MetricsRpc;
use crate::proto::metrics::{
    CollectMetric, CollectMetricsRequest, CollectMetricsResult, DefineMetricsRequest,
    DefineMetricsResult, Metric, MetricType, MetricsCapabilitiesRequest, MetricsCapabilitiesResult,
    MetricsCapability,
};
use crate::repos::{Access, Repos};
use crate::settings::{self, Cluster, StatusSettings};

/// Metric names.
pub mod name {
    pub const FIRST_RECOVERABILITY_POINT: &str =
        "pitr_first_recoverability_point_timestamp_seconds";
    pub const LAST_AVAILABLE_BACKUP: &str = "pitr_last_available_backup_timestamp_seconds";
    pub const LAST_FAILED_BACKUP: &str = "pitr_last_failed_backup_timestamp_seconds";
    pub const LAST_ARCHIVED_WAL: &str = "pitr_last_archived_wal_timestamp_seconds";
    pub const USABLE_BACKUPS: &str = "pitr_usable_backups";
    pub const BACKUPS: &str = "pitr_backups";
    pub const STATUS_AGE: &str = "pitr_status_age_seconds";
    pub const STATUS_REFRESH_FAILURES: &str = "pitr_status_refresh_failures_total";
    pub const ARCHIVED: &str = "pitr_archive_success_total";
    pub const ARCHIVE_FAILURES: &str = "pitr_archive_failures_total";
    pub const LAST_ARCHIVE_SUCCESS: &str = "pitr_last_archive_success_timestamp_seconds";
}

/// Every metric: name, type, help.
pub const DEFINITIONS: [(&str, MetricKind, &str); 11] = [
    (
        name::FIRST_RECOVERABILITY_POINT,
        MetricKind::Gauge,
        "The earliest point a restore can reach (the end of the oldest usable backup), Unix \
         seconds; 0 when no backup is usable",
    ),
    (
        name::LAST_AVAILABLE_BACKUP,
        MetricKind::Gauge,
        "When the newest usable backup ended, Unix seconds; 0 when none",
    ),
    (
        name::LAST_FAILED_BACKUP,
        MetricKind::Gauge,
        "When the newest failed backup ended, Unix seconds; 0 when none failed",
    ),
    (
        name::LAST_ARCHIVED_WAL,
        MetricKind::Gauge,
        "When the store received the newest archived WAL segment, Unix seconds; 0 when the \
         archive is empty",
    ),
    (
        name::USABLE_BACKUPS,
        MetricKind::Gauge,
        "Backups a restore can use",
    ),
    (
        name::BACKUPS,
        MetricKind::Gauge,
        "Backups in the catalog, whatever their status",
    ),
    (
        name::STATUS_AGE,
        MetricKind::Gauge,
        "Seconds since the repository's status above was read",
    ),
    (
        name::STATUS_REFRESH_FAILURES,
        MetricKind::Counter,
        "Reads of the repository's status that failed since the sidecar started",
    ),
    (
        name::ARCHIVED,
        MetricKind::Counter,
        "WAL.Archive calls answered OK since the sidecar started",
    ),
    (
        name::ARCHIVE_FAILURES,
        MetricKind::Counter,
        "WAL.Archive calls that failed since the sidecar started",
    ),
    (
        name::LAST_ARCHIVE_SUCCESS,
        MetricKind::Gauge,
        "When this sidecar last answered WAL.Archive with OK, Unix seconds; 0 when never",
    ),
];

/// The WAL service's archive outcomes in this process.
#[derive(Debug, Default)]
pub struct ArchiveCounters {
    ok: AtomicU64,
    failed: AtomicU64,
    last_ok_unix_ms: AtomicI64,
}

impl ArchiveCounters {
    pub fn record(&self, ok: bool) {
        if ok {
            self.ok.fetch_add(1, Relaxed);
            self.last_ok_unix_ms
                .store(unix_ms(SystemTime::now()), Relaxed);
        } else {
            self.failed.fetch_add(1, Relaxed);
        }
    }

    pub fn ok(&self) -> u64 {
        self.ok.load(Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Relaxed)
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Snapshot {
    status: RepoStatus,
    read_at: Instant,
}

/// The sidecar's metrics state, shared by the WAL, Backup and Metrics
/// services and the refresh task.
pub struct Metrics {
    pub archive: Arc<ArchiveCounters>,
    repos: Arc<Repos>,
    target: Mutex<Option<StatusSettings>>,
    snapshot: Mutex<Option<Snapshot>>,
    refresh_failures: AtomicU64,
    wake: Notify,
}

impl Metrics {
    pub fn new(repos: Arc<Repos>) -> Arc<Metrics> {
        Arc::new(Metrics {
            archive: Arc::default(),
            repos,
            target: Mutex::new(None),
            snapshot: Mutex::new(None),
            refresh_failures: AtomicU64::new(0),
            wake: Notify::new(),
        })
    }

    /// Remembers which archive to read (the Cluster's own); the first
    /// Cluster, or one whose settings changed, wakes the refresh. A Cluster
    /// whose settings cannot be used leaves the last good ones in place.
    pub fn remember(&self, cluster: &Cluster) {
        let s = match settings::for_status(cluster, self.repos.env()) {
            Ok(s) => s,
            Err(e) => {
                warn!("metrics: the Cluster's settings cannot be used: {e}");
                return;
            }
        };
        let mut target = self.target.lock().expect("metrics target lock");
        if target.as_ref() != Some(&s) {
            *target = Some(s);
            self.wake.notify_one();
        }
    }

    /// Asks for a refresh now (after a backup).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Reads the status once, keeping the last good one on failure.
    pub async fn refresh(&self) {
        let Some(target) = self.target.lock().expect("metrics target lock").clone() else {
            return;
        };
        let secrets = self.repos.secrets(&target.repo);
        let result = async {
            let repo = self.repos.get(&target.repo, Access::Write)?;
            gather(&repo).await
        }
        .await;
        match result {
            Ok(status) => {
                *self.snapshot.lock().expect("metrics snapshot lock") = Some(Snapshot {
                    status,
                    read_at: Instant::now(),
                });
            }
            Err(e) => {
                self.refresh_failures.fetch_add(1, Relaxed);
                warn!(
                    "metrics: reading the status of the archive failed: {}",
                    redact(&e.to_string(), &secrets)
                );
            }
        }
    }

    /// The refresh task: every interval, or when woken.
    pub async fn run(self: Arc<Metrics>) {
        info!("metrics: status refresh task started");
        loop {
            let interval = self
                .target
                .lock()
                .expect("metrics target lock")
                .as_ref()
                .map(|t| t.interval)
                .unwrap_or(settings::DEFAULT_STATUS_INTERVAL);
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.wake.notified() => {}
            }
            self.refresh().await;
            crate::memory::release_freed();
        }
    }

    pub fn definitions() -> Vec<Metric> {
        DEFINITIONS
            .iter()
            .map(|(fq_name, kind, help)| Metric {
                fq_name: fq_name.to_string(),
                help: help.to_string(),
                variable_labels: Vec::new(),
                const_labels: Default::default(),
                value_type: Some(MetricType {
                    r#type: *kind as i32,
                }),
            })
            .collect()
    }

    /// What a Collect answers, from memory.
    pub fn collect(&self) -> Vec<CollectMetric> {
        let metric = |fq_name: &str, value: f64| CollectMetric {
            value,
            fq_name: fq_name.to_string(),
            variable_labels: Vec::new(),
        };
        let secs = |t: Option<i64>| t.unwrap_or(0) as f64;
        let mut out = vec![
            metric(
                name::STATUS_REFRESH_FAILURES,
                self.refresh_failures.load(Relaxed) as f64,
            ),
            metric(name::ARCHIVED, self.archive.ok() as f64),
            metric(name::ARCHIVE_FAILURES, self.archive.failed() as f64),
            metric(
                name::LAST_ARCHIVE_SUCCESS,
                self.archive.last_ok_unix_ms.load(Relaxed) as f64 / 1000.0,
            ),
        ];
        if let Some(snap) = &*self.snapshot.lock().expect("metrics snapshot lock") {
            let s = &snap.status;
            out.extend([
                metric(
                    name::FIRST_RECOVERABILITY_POINT,
                    secs(s.first_recoverability_point.map(|t| t.timestamp())),
                ),
                metric(
                    name::LAST_AVAILABLE_BACKUP,
                    secs(
                        s.last_backup
                            .as_ref()
                            .and_then(|b| b.end_time)
                            .map(|t| t.timestamp()),
                    ),
                ),
                metric(
                    name::LAST_FAILED_BACKUP,
                    secs(
                        s.last_failed_backup
                            .as_ref()
                            .and_then(|b| b.end_time.or(b.begin_time))
                            .map(|t| t.timestamp()),
                    ),
                ),
                metric(
                    name::LAST_ARCHIVED_WAL,
                    secs(
                        s.last_archived
                            .as_ref()
                            .and_then(|t| t.archived_at)
                            .map(|t| t.timestamp()),
                    ),
                ),
                metric(name::USABLE_BACKUPS, s.usable_backups as f64),
                metric(name::BACKUPS, s.backups as f64),
                metric(name::STATUS_AGE, snap.read_at.elapsed().as_secs_f64()),
            ]);
        }
        out
    }
}

pub struct MetricsService {
    pub metrics: Arc<Metrics>,
}

fn note_cluster(metrics: &Metrics, definition: &[u8]) {
    match Cluster::parse(definition) {
        Ok(c) => metrics.remember(&c),
        Err(e) => warn!("metrics: {e}"),
    }
}

#[tonic::async_trait]
impl MetricsRpc for MetricsService {
    async fn get_capabilities(
        &self,
        _: Request<MetricsCapabilitiesRequest>,
    ) -> Result<Response<MetricsCapabilitiesResult>, Status> {
        Ok(Response::new(MetricsCapabilitiesResult {
            capabilities: vec![MetricsCapability {
                r#type: Some(metrics_capability::Type::Rpc(metrics_capability::Rpc {
                    r#type: RpcType::Metrics as i32,
                })),
            }],
        }))
    }

    async fn define(
        &self,
        _: Request<DefineMetricsRequest>,
    ) -> Result<Response<DefineMetricsResult>, Status> {
        Ok(Response::new(DefineMetricsResult {
            metrics: Metrics::definitions(),
        }))
    }

    async fn collect(
        &self,
        request: Request<CollectMetricsRequest>,
    ) -> Result<Response<CollectMetricsResult>, Status> {
        note_cluster(&self.metrics, &request.into_inner().cluster_definition);
        Ok(Response::new(CollectMetricsResult {
            metrics: self.metrics.collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::SidecarEnv;
    use serde_json::json;
    use std::time::Duration;

    fn cluster(dir: &std::path::Path) -> Cluster {
        let v = json!({
            "metadata": {"name": "pg-m"},
            "spec": {"plugins": [{"name": crate::PLUGIN_NAME, "parameters": {
                "repository": format!("file://{}", dir.display()),
                "statusIntervalSeconds": "5"}}]}
        });
        Cluster::parse(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn collect_uses_only_defined_names_and_fills_in_after_a_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::new(Arc::new(Repos::new(SidecarEnv::default())));
        let defined: Vec<_> = Metrics::definitions();
        assert!(defined.iter().all(|d| d
            .value_type
            .as_ref()
            .is_some_and(|t| t.r#type != MetricKind::Unspecified as i32)));
        let check = |c: &[CollectMetric]| {
            for x in c {
                let d = defined
                    .iter()
                    .find(|d| d.fq_name == x.fq_name)
                    .unwrap_or_else(|| panic!("{} is not defined", x.fq_name));
                assert_eq!(d.variable_labels.len(), x.variable_labels.len());
            }
        };
        // Before any refresh: the sidecar's own counters only.
        m.archive.record(true);
        m.archive.record(false);
        m.archive.record(false);
        let before = m.collect();
        check(&before);
        let value =
            |c: &[CollectMetric], n: &str| c.iter().find(|x| x.fq_name == n).map(|x| x.value);
        assert_eq!(value(&before, name::ARCHIVED), Some(1.0));
        assert_eq!(value(&before, name::ARCHIVE_FAILURES), Some(2.0));
        assert!(value(&before, name::LAST_ARCHIVE_SUCCESS).unwrap() > 1.7e9);
        assert_eq!(value(&before, name::USABLE_BACKUPS), None);
        // The first Cluster is remembered; a refresh reads the (empty) archive.
        m.remember(&cluster(dir.path()));
        assert_eq!(
            m.target.lock().unwrap().as_ref().unwrap().interval,
            Duration::from_secs(5)
        );
        m.refresh().await;
        let after = m.collect();
        check(&after);
        assert_eq!(after.len(), DEFINITIONS.len(), "every metric once");
        assert_eq!(value(&after, name::USABLE_BACKUPS), Some(0.0));
        assert_eq!(value(&after, name::FIRST_RECOVERABILITY_POINT), Some(0.0));
        assert!(value(&after, name::STATUS_AGE).unwrap() < 5.0);
        assert_eq!(value(&after, name::STATUS_REFRESH_FAILURES), Some(0.0));
    }
}
