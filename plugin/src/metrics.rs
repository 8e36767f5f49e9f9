//! The Metrics service of the instance sidecar. CloudNativePG calls Define
//! and Collect on every Prometheus scrape, with a 5 s budget for loading
//! the plugin: both answer from memory. The families are `pitr metrics`'s
//! own (`pitr::metrics::DEFS`, labels `server` and, for two, `timeline`),
//! from the same snapshot (`pitr::metrics::gather`: the state records, the
//! status, and the PGDATA's archive counters and `.ready` backlog), read
//! by a background task every `statusIntervalSeconds` (default 60), for
//! the archive of the Cluster the last Collect or Backup came with; the
//! first Collect wakes it. Until the first read ends, Collect answers
//! nothing. Archive calls are counted by `pitr::wal::archive_stats` beside
//! the WAL (see the WAL service), so the counters survive a restart of the
//! sidecar and agree with `pg_stat_archiver`.

use std::sync::{Arc, Mutex};

use pitr::config::redact;
use pitr::metrics::{gather, samples, Kind, Snapshot, DEFS};
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

/// The sidecar's metrics state, shared by the Backup and Metrics services
/// and the refresh task.
pub struct Metrics {
    repos: Arc<Repos>,
    target: Mutex<Option<StatusSettings>>,
    snapshot: Mutex<Option<Snapshot>>,
    wake: Notify,
}

impl Metrics {
    pub fn new(repos: Arc<Repos>) -> Arc<Metrics> {
        Arc::new(Metrics {
            repos,
            target: Mutex::new(None),
            snapshot: Mutex::new(None),
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

    /// Takes a new snapshot; the store's last values stay when it fails.
    pub async fn refresh(&self) {
        let Some(target) = self.target.lock().expect("metrics target lock").clone() else {
            return;
        };
        let secrets = self.repos.secrets(&target.repo);
        let repo = match self.repos.get(&target.repo, Access::Write) {
            Ok(r) => r,
            Err(e) => {
                warn!(
                    "metrics: the archive cannot be opened: {}",
                    redact(&e.to_string(), &secrets)
                );
                return;
            }
        };
        let previous = self.snapshot.lock().expect("metrics snapshot lock").clone();
        let pgdata = self.repos.env().pgdata.clone();
        let (snap, err) = gather(
            &repo,
            &target.repo.server_name,
            pgdata.as_ref(),
            previous.as_ref(),
        )
        .await;
        if let Some(e) = err {
            warn!(
                "metrics: reading the status of the archive failed: {}",
                redact(&e.to_string(), &secrets)
            );
        }
        *self.snapshot.lock().expect("metrics snapshot lock") = Some(snap);
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
        DEFS.iter()
            .map(|d| Metric {
                fq_name: d.name.to_string(),
                help: d.help.to_string(),
                variable_labels: d.labels.iter().map(|l| l.to_string()).collect(),
                const_labels: Default::default(),
                value_type: Some(MetricType {
                    r#type: match d.kind {
                        Kind::Gauge => MetricKind::Gauge,
                        Kind::Counter => MetricKind::Counter,
                    } as i32,
                }),
            })
            .collect()
    }

    /// What a Collect answers, from memory.
    pub fn collect(&self) -> Vec<CollectMetric> {
        let snap = self.snapshot.lock().expect("metrics snapshot lock");
        let Some(snap) = snap.as_ref() else {
            return Vec::new();
        };
        samples(snap, chrono::Utc::now())
            .into_iter()
            .map(|s| CollectMetric {
                value: s.value,
                fq_name: s.def.name.to_string(),
                variable_labels: s.labels,
            })
            .collect()
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
    use pitr::wal::archive_stats::{note, ArchiveOutcome};
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
        let pgdata = dir.path().join("pgdata");
        let wal = pgdata.join("pg_wal");
        std::fs::create_dir_all(&wal).unwrap();
        let env = SidecarEnv {
            pgdata: Some(pgdata.clone()),
            ..SidecarEnv::default()
        };
        let m = Metrics::new(Arc::new(Repos::new(env)));
        let defined: Vec<_> = Metrics::definitions();
        assert!(defined.iter().all(|d| d
            .value_type
            .as_ref()
            .is_some_and(|t| t.r#type != MetricKind::Unspecified as i32)));
        // Before any refresh: nothing.
        assert!(m.collect().is_empty());
        // Archive outcomes counted beside the WAL, as the WAL service does.
        let seg = wal.join("000000010000000000000001");
        std::fs::write(&seg, b"x").unwrap();
        for ok in [true, false, false] {
            note(
                None,
                ArchiveOutcome { path: &seg, ok },
                Duration::from_secs(60),
            )
            .await;
        }
        m.remember(&cluster(&dir.path().join("repo")));
        assert_eq!(
            m.target.lock().unwrap().as_ref().unwrap().interval,
            Duration::from_secs(5)
        );
        std::fs::create_dir_all(dir.path().join("repo")).unwrap();
        m.refresh().await;
        let after = m.collect();
        for x in &after {
            let d = defined
                .iter()
                .find(|d| d.fq_name == x.fq_name)
                .unwrap_or_else(|| panic!("{} is not defined", x.fq_name));
            assert_eq!(
                d.variable_labels.len(),
                x.variable_labels.len(),
                "{}",
                x.fq_name
            );
            assert_eq!(x.variable_labels[0], "pg-m");
        }
        let value = |n: &str| after.iter().find(|x| x.fq_name == n).map(|x| x.value);
        assert_eq!(value("pitr_archived_segments_total"), Some(1.0));
        assert_eq!(value("pitr_archive_failures_total"), Some(2.0));
        assert!(value("pitr_last_archive_success_timestamp_seconds").unwrap() > 1.7e9);
        assert_eq!(value("pitr_usable_backups"), Some(0.0));
        assert_eq!(
            value("pitr_first_recoverability_point_timestamp_seconds"),
            Some(0.0)
        );
        assert_eq!(value("pitr_archive_ready_files"), Some(0.0));
        assert_eq!(value("pitr_store_up"), Some(1.0));
        assert!(value("pitr_status_age_seconds").unwrap() < 5.0);
        assert_eq!(value("pitr_status_refresh_failures_total"), Some(0.0));
    }
}
