//! The Backup service of the instance sidecar: `Backup.Backup` takes a base
//! backup of the local instance with pitr's `backup::take::take` (over the
//! replication protocol, through the Unix socket CloudNativePG gives the
//! pod in `PGHOST`) and maps the catalog entry it returns to what
//! CloudNativePG records in the Backup resource. CloudNativePG calls it
//! synchronously and with no deadline; neither does the sidecar set one.

use std::collections::HashMap;
use std::sync::Arc;

use pitr::backup::catalog::CatalogEntry;
use pitr::backup::take::{take, BackupRequest as TakeRequest, Progress};
use pitr::config::redact;
use pitr::pgwire::ConnectParams;
use pitr::retention::{expire, ExpireRequest};
use serde_json::Value;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::proto::backup::backup_capability::{self, rpc::Type as RpcType};
use crate::proto::backup::backup_server::Backup;
use crate::proto::backup::{
    BackupCapabilitiesRequest, BackupCapabilitiesResult, BackupCapability, BackupRequest,
    BackupResult,
};
use crate::repos::{Access, Repos};
use crate::settings::{self, param, Cluster};
use crate::status;
use crate::PLUGIN_NAME;

/// The role a backup connects as when neither `backupConnection` nor
/// `PGUSER` names one: CloudNativePG's superuser, which its local socket
/// lets in by peer authentication.
pub const DEFAULT_USER: &str = "postgres";

pub struct BackupService {
    pub repos: Arc<Repos>,
    pub metrics: Arc<Metrics>,
}

/// How the backup reaches the server: `conninfo` (parameter
/// `backupConnection`) over the sidecar's PG* environment (CloudNativePG
/// sets `PGHOST=/controller/run` and `PGPORT`), user `postgres` by default.
pub fn connect_params(
    conninfo: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> pitr::Result<ConnectParams> {
    ConnectParams::resolve_with(conninfo, |k| {
        env(k)
            .filter(|v| !v.is_empty())
            .or_else(|| (k == "PGUSER").then(|| DEFAULT_USER.to_string()))
    })
}

/// The Backup resource's `metadata.name`, if the definition has one.
fn backup_resource_name(definition: &[u8]) -> Result<Option<String>, Status> {
    if definition.is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(definition).map_err(|e| {
        Status::invalid_argument(format!(
            "the backup definition sent by CloudNativePG is not valid JSON: {e}"
        ))
    })?;
    Ok(v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string))
}

/// The library's catalog entry as CloudNativePG's BackupResult.
pub fn to_result(entry: &CatalogEntry, server_name: &str, pod_name: Option<&str>) -> BackupResult {
    let info = &entry.info;
    let text = |v: Option<String>| v.unwrap_or_default();
    let mut metadata = HashMap::new();
    metadata.insert("pluginName".to_string(), PLUGIN_NAME.to_string());
    metadata.insert("serverName".to_string(), server_name.to_string());
    if let Some(t) = info.timeline {
        metadata.insert("timeline".to_string(), t.to_string());
    }
    if let Some(v) = info.version {
        metadata.insert("version".to_string(), v.to_string());
    }
    if let Some(s) = &info.systemid {
        metadata.insert("systemIdentifier".to_string(), s.clone());
    }
    if let Some(n) = &info.backup_name {
        metadata.insert("name".to_string(), n.clone());
    }
    BackupResult {
        backup_id: info.backup_id.to_string(),
        backup_name: text(info.backup_name.clone()),
        started_at: info.begin_time.map(|t| t.timestamp()).unwrap_or(0),
        stopped_at: info.end_time.map(|t| t.timestamp()).unwrap_or(0),
        begin_wal: text(info.begin_wal.map(|w| w.to_string())),
        end_wal: text(info.end_wal.map(|w| w.to_string())),
        begin_lsn: text(info.begin_xlog.map(|l| l.to_string())),
        end_lsn: text(info.end_xlog.map(|l| l.to_string())),
        backup_label_file: text(info.backup_label.clone()).into_bytes(),
        // pitr does not capture tablespace_map (restores rebuild the links
        // from backup.info's tablespace list).
        tablespace_map_file: Vec::new(),
        instance_id: pod_name.unwrap_or_default().to_string(),
        online: true,
        metadata,
    }
}

/// Progress goes to the log: the phases, and every tenth of the estimate.
struct LogProgress {
    total: std::sync::atomic::AtomicU64,
    logged: std::sync::atomic::AtomicU64,
}

impl Progress for LogProgress {
    fn total(&self, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.total.store(bytes, Relaxed);
        info!("backing up about {bytes} bytes");
    }
    fn advance(&self, done: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let total = self.total.load(Relaxed);
        if total == 0 {
            return;
        }
        let tenth = (done.saturating_mul(10) / total).min(10);
        if self.logged.fetch_max(tenth, Relaxed) < tenth {
            info!("backup: {done} of about {total} bytes sent");
        }
    }
    fn phase(&self, what: &str) {
        info!("backup: {what}");
    }
}

#[tonic::async_trait]
impl Backup for BackupService {
    async fn get_capabilities(
        &self,
        _: Request<BackupCapabilitiesRequest>,
    ) -> Result<Response<BackupCapabilitiesResult>, Status> {
        Ok(Response::new(BackupCapabilitiesResult {
            capabilities: vec![BackupCapability {
                r#type: Some(backup_capability::Type::Rpc(backup_capability::Rpc {
                    r#type: RpcType::Backup as i32,
                })),
            }],
        }))
    }

    async fn backup(
        &self,
        request: Request<BackupRequest>,
    ) -> Result<Response<BackupResult>, Status> {
        let req = request.into_inner();
        // Start from what the backup needs, not from what WAL work left.
        crate::memory::release_freed();
        let invalid = |e: settings::SettingsError| Status::invalid_argument(e.0);
        let cluster = Cluster::parse(&req.cluster_definition).map_err(invalid)?;
        let resource = backup_resource_name(&req.backup_definition)?;
        let s = settings::for_backup(
            &cluster,
            &req.parameters,
            resource.as_deref(),
            self.repos.env(),
        )
        .map_err(invalid)?;
        let mut secrets = self.repos.secrets(&s.repo);
        let params =
            connect_params(s.connection.as_deref(), |k| std::env::var(k).ok()).map_err(|e| {
                let what = match &s.connection {
                    Some(_) => format!("parameter {}", param::BACKUP_CONNECTION),
                    None => "the sidecar's PG* environment".to_string(),
                };
                Status::invalid_argument(format!(
                    "cannot tell how to reach PostgreSQL from {what}: {}",
                    redact(&e.to_string(), &secrets)
                ))
            })?;
        if let Some(p) = &params.password {
            secrets.push(p.expose().to_string());
        }
        let repo = self
            .repos
            .get(&s.repo, Access::Write)
            .map_err(|e| status::from_error(&e, &secrets))?;
        let take_req = TakeRequest {
            name: s.name.clone(),
            checkpoint: s.checkpoint,
            wal_timeout: s.wal_timeout,
            max_rate: None,
        };
        info!(
            "backup {} of {} into {} starting",
            s.name.as_deref().unwrap_or("(unnamed)"),
            params.describe(),
            repo.describe()
        );
        let progress = LogProgress {
            total: Default::default(),
            logged: Default::default(),
        };
        let entry = match take(&repo, &params, &take_req, &progress).await {
            Ok(entry) => entry,
            Err(e) => {
                let st = status::from_error(&e, &secrets);
                let msg = format!(
                    "backup of {} into {} failed: {}",
                    params.describe(),
                    repo.describe(),
                    st.message()
                );
                warn!("{msg}");
                self.metrics.wake();
                return Err(Status::new(st.code(), msg));
            }
        };
        let result = to_result(
            &entry,
            &s.repo.server_name,
            self.repos.env().pod_name.as_deref(),
        );
        info!(
            "backup {} done: {} ({}) to {} ({})",
            result.backup_id, result.begin_wal, result.begin_lsn, result.end_wal, result.end_lsn
        );
        if let Some(policy) = s.retention {
            // As plugin-barman-cloud does: retention runs once a backup
            // succeeded; its failure does not fail the backup (the next
            // backup's run finishes the work).
            let req = ExpireRequest::now(policy, s.minimum_redundancy, false);
            match expire(&repo, &req).await {
                Ok(r) => info!(
                    "retention {policy}: deleted {} backups and {} WAL files ({} objects)",
                    r.deleted.backups,
                    r.deleted.wal_files(),
                    r.deleted.objects()
                ),
                Err(e) => warn!(
                    "retention {policy} after backup {} failed: {} (the backup is done; the \
                     next backup applies the policy again)",
                    result.backup_id,
                    redact(&e.to_string(), &secrets)
                ),
            }
        }
        // The metrics show the new backup without waiting for the interval.
        self.metrics.remember(&cluster);
        self.metrics.wake();
        Ok(Response::new(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pitr::backup::info::{BackupInfo, BackupStatus};

    #[test]
    fn the_connection_defaults_to_the_pods_socket_as_postgres() {
        let env = |k: &str| match k {
            "PGHOST" => Some("/controller/run".to_string()),
            "PGPORT" => Some("5432".to_string()),
            "HOME" => Some("/nonexistent".to_string()),
            _ => None,
        };
        let p = connect_params(None, env).unwrap();
        assert_eq!(p.user, "postgres");
        assert_eq!(
            p.socket_path().unwrap(),
            std::path::Path::new("/controller/run/.s.PGSQL.5432")
        );
        // The parameter wins over the environment.
        let p = connect_params(Some("host=/tmp/x port=6000 user=backup"), env).unwrap();
        assert_eq!(p.user, "backup");
        assert_eq!(p.describe(), "socket \"/tmp/x/.s.PGSQL.6000\"");
        assert!(connect_params(Some("nonsense=1"), env).is_err());
    }

    #[test]
    fn a_catalog_entry_maps_to_the_backup_result() {
        let mut info = BackupInfo::new("20261122T030000".parse().unwrap(), "pg-main");
        info.status = BackupStatus::Done;
        info.backup_name = Some("nightly".into());
        info.timeline = Some(1);
        info.version = Some(150004);
        info.systemid = Some("7312345678901234567".into());
        info.begin_time = chrono_like("2026-11-22T03:00:00+00:00");
        info.end_time = chrono_like("2026-11-22T03:00:09+00:00");
        info.begin_xlog = Some("0/2000028".parse().unwrap());
        info.end_xlog = Some("0/2000100".parse().unwrap());
        let seg = match "000000010000000000000002".parse().unwrap() {
            pitr::wal::WalFileName::Segment(s) => s,
            other => panic!("{other}"),
        };
        info.begin_wal = Some(seg);
        info.end_wal = Some(seg);
        info.backup_label = Some("START WAL LOCATION: 0/2000028\n".into());
        let r = to_result(
            &CatalogEntry {
                info,
                details: None,
            },
            "pg-main",
            Some("pg-main-1"),
        );
        assert_eq!(r.backup_id, "20261122T030000");
        assert_eq!(r.backup_name, "nightly");
        assert_eq!(r.started_at, 1_795_316_400);
        assert_eq!(r.stopped_at, r.started_at + 9);
        assert_eq!(r.begin_wal, "000000010000000000000002");
        assert_eq!(r.begin_lsn, "0/2000028");
        assert_eq!(r.end_lsn, "0/2000100");
        assert_eq!(r.backup_label_file, b"START WAL LOCATION: 0/2000028\n");
        assert!(r.tablespace_map_file.is_empty());
        assert_eq!(r.instance_id, "pg-main-1");
        assert!(r.online);
        for (k, v) in [
            ("timeline", "1"),
            ("version", "150004"),
            ("pluginName", PLUGIN_NAME),
            ("serverName", "pg-main"),
            ("systemIdentifier", "7312345678901234567"),
        ] {
            assert_eq!(r.metadata.get(k).map(String::as_str), Some(v), "{k}");
        }
    }

    fn chrono_like(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
        chrono::DateTime::parse_from_rfc3339(s).ok()
    }

    #[test]
    fn the_backup_resource_names_the_backup() {
        assert_eq!(
            backup_resource_name(br#"{"metadata": {"name": "pg-main-20261122"}}"#).unwrap(),
            Some("pg-main-20261122".into())
        );
        assert_eq!(backup_resource_name(b"").unwrap(), None);
        assert!(backup_resource_name(b"{").is_err());
    }
}
