//! TEST SUPPORT ONLY, not shipped: behaves as CloudNativePG's instance
//! manager does for `wal-archive %p` and `wal-restore %f %p`, so a real
//! PostgreSQL can use the plugin socket as its archive_command and
//! restore_command in tests without Kubernetes.
//!
//! Like CloudNativePG, every call opens a new connection to
//! `$CNPG_PLUGIN_PATH/<plugin name>`, runs the whole load sequence
//! (GetPluginMetadata, GetPluginCapabilities, then GetCapabilities of every
//! advertised service), checks that the metadata name is the socket's file
//! name and that the WAL service offers the operation, then calls Archive
//! (source = `$PGDATA` joined with `%p`) or Restore (destination =
//! `$PGDATA` joined with `%p`). Any error exits 1, as CloudNativePG does.
//! `restore-job` plays the recovery Job: it calls RestoreJobHooks.Restore
//! (`check_empty_wal_archive` from the skip annotation, as CloudNativePG
//! sends it) and prints the returned `restore_config`.
//!
//! `backup BACKUP_JSON [KEY=VALUE ...]` plays the instance manager taking a
//! Backup with `method: plugin`: the plugin must advertise BACKUP_SERVICE
//! and TYPE_BACKUP; it calls Backup.Backup with the Cluster, the Backup
//! resource read from BACKUP_JSON and the parameters given, and prints the
//! BackupResult as JSON. `metrics` plays a Prometheus scrape: Define, then
//! Collect, refusing (exit 1) what CloudNativePG's collector refuses (an
//! unset value type, a collected name that is not defined, a label-value
//! count that differs from the definition's), and prints
//! `{"defined": {name: type}, "collected": {name: value}}`.
//!
//! Environment: `CNPG_CLUSTER_JSON` (a file with the Cluster JSON sent in
//! `cluster_definition`), `CNPG_PLUGIN_PATH` (default /plugins), `PGDATA`,
//! and `CNPG_CHECK_EMPTY`: `auto` (default, what current CloudNativePG
//! sends: the `cnpg.io/skipEmptyWalArchiveCheck` annotation is not
//! `enabled` and `$PGDATA/.check-empty-wal-archive` exists; after a
//! successful archive the marker is removed, as CloudNativePG does),
//! `unset` (an operator older than the field: nothing is sent), `true` or
//! `false`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tonic::transport::Channel;

use pitr_cnpg::proto::backup::backup_capability::{self, rpc::Type as BackupType};
use pitr_cnpg::proto::backup::backup_client::BackupClient;
use pitr_cnpg::proto::backup::{BackupCapabilitiesRequest, BackupRequest};
use pitr_cnpg::proto::identity::identity_client::IdentityClient;
use pitr_cnpg::proto::identity::plugin_capability::{self, service::Type as ServiceType};
use pitr_cnpg::proto::identity::{GetPluginCapabilitiesRequest, GetPluginMetadataRequest};
use pitr_cnpg::proto::lifecycle::operator_lifecycle_client::OperatorLifecycleClient;
use pitr_cnpg::proto::lifecycle::OperatorLifecycleCapabilitiesRequest;
use pitr_cnpg::proto::metrics::metric_type::Type as MetricKind;
use pitr_cnpg::proto::metrics::metrics_capability::{self, rpc::Type as MetricsType};
use pitr_cnpg::proto::metrics::metrics_client::MetricsClient;
use pitr_cnpg::proto::metrics::MetricsCapabilitiesRequest;
use pitr_cnpg::proto::metrics::{CollectMetricsRequest, DefineMetricsRequest};
use pitr_cnpg::proto::wal::restore_job_hooks_client::RestoreJobHooksClient;
use pitr_cnpg::proto::wal::wal_capability::{self, rpc::Type as WalType};
use pitr_cnpg::proto::wal::wal_client::WalClient;
use pitr_cnpg::proto::wal::wal_restore_request::Mode;
use pitr_cnpg::proto::wal::{
    RestoreJobHooksCapabilitiesRequest, RestoreRequest, WalArchiveRequest, WalCapabilitiesRequest,
    WalRestoreRequest,
};
use pitr_cnpg::settings::Cluster;
use pitr_cnpg::wal::CHECK_EMPTY_MARKER;
use pitr_cnpg::{socket, PLUGIN_NAME};
use serde_json::json;

fn var(name: &str) -> Result<String, String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{name} is not set"))
}

fn rpc(what: &str) -> impl Fn(tonic::Status) -> String + '_ {
    move |s| format!("{what}: {:?}: {}", s.code(), s.message())
}

/// What a plugin offers, as the load sequence found it.
struct Loaded {
    channel: Channel,
    wal_ops: Vec<WalType>,
    restore_job: bool,
    backup: bool,
    metrics: bool,
}

/// Connects and runs the load sequence.
async fn load(path: &Path) -> Result<Loaded, String> {
    let channel = socket::connect(path)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
    let mut identity = IdentityClient::new(channel.clone());
    let meta = identity
        .get_plugin_metadata(GetPluginMetadataRequest {})
        .await
        .map_err(rpc("GetPluginMetadata"))?
        .into_inner();
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if meta.name != file_name {
        return Err(format!(
            "plugin at {} calls itself '{}', not its socket's name",
            path.display(),
            meta.name
        ));
    }
    let caps = identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .map_err(rpc("GetPluginCapabilities"))?
        .into_inner();
    let mut wal_ops = Vec::new();
    let mut restore_job = false;
    let mut backup = false;
    let mut metrics = false;
    for cap in caps.capabilities {
        let Some(plugin_capability::Type::Service(service)) = cap.r#type else {
            continue;
        };
        match ServiceType::try_from(service.r#type) {
            Ok(ServiceType::WalService) => {
                let res = WalClient::new(channel.clone())
                    .get_capabilities(WalCapabilitiesRequest {})
                    .await
                    .map_err(rpc("WAL.GetCapabilities"))?
                    .into_inner();
                for c in res.capabilities {
                    if let Some(wal_capability::Type::Rpc(r)) = c.r#type {
                        wal_ops.extend(WalType::try_from(r.r#type).ok());
                    }
                }
            }
            Ok(ServiceType::RestoreJob) => {
                RestoreJobHooksClient::new(channel.clone())
                    .get_capabilities(RestoreJobHooksCapabilitiesRequest {})
                    .await
                    .map_err(rpc("RestoreJobHooks.GetCapabilities"))?;
                restore_job = true;
            }
            Ok(ServiceType::BackupService) => {
                let res = BackupClient::new(channel.clone())
                    .get_capabilities(BackupCapabilitiesRequest {})
                    .await
                    .map_err(rpc("Backup.GetCapabilities"))?
                    .into_inner();
                backup = res.capabilities.iter().any(|c| {
                    matches!(&c.r#type, Some(backup_capability::Type::Rpc(r))
                        if r.r#type == BackupType::Backup as i32)
                });
            }
            Ok(ServiceType::Metrics) => {
                let res = MetricsClient::new(channel.clone())
                    .get_capabilities(MetricsCapabilitiesRequest {})
                    .await
                    .map_err(rpc("Metrics.GetCapabilities"))?
                    .into_inner();
                metrics = res.capabilities.iter().any(|c| {
                    matches!(&c.r#type, Some(metrics_capability::Type::Rpc(r))
                        if r.r#type == MetricsType::Metrics as i32)
                });
            }
            Ok(ServiceType::LifecycleService) => {
                OperatorLifecycleClient::new(channel.clone())
                    .get_capabilities(OperatorLifecycleCapabilitiesRequest {})
                    .await
                    .map_err(rpc("OperatorLifecycle.GetCapabilities"))?;
            }
            // Flags with no service behind them.
            Ok(
                ServiceType::InstanceSidecarInjection | ServiceType::InstanceJobSidecarInjection,
            ) => {}
            Ok(other) => {
                return Err(format!(
                    "plugin advertises {other:?}, which this test instance manager cannot load"
                ))
            }
            Err(_) => return Err(format!("unknown capability {}", service.r#type)),
        }
    }
    Ok(Loaded {
        channel,
        wal_ops,
        restore_job,
        backup,
        metrics,
    })
}

async fn run(args: &[String]) -> Result<(), String> {
    let cluster_file = PathBuf::from(var("CNPG_CLUSTER_JSON")?);
    let cluster_definition = std::fs::read(&cluster_file)
        .map_err(|e| format!("cannot read {}: {e}", cluster_file.display()))?;
    let pgdata = PathBuf::from(var("PGDATA")?);
    let dir = std::env::var("CNPG_PLUGIN_PATH").unwrap_or_else(|_| "/plugins".into());
    let socket_path = Path::new(&dir).join(PLUGIN_NAME);
    let loaded = load(&socket_path).await?;
    let ops = loaded.wal_ops;
    let mut wal = WalClient::new(loaded.channel.clone());
    match args {
        [cmd, p] if cmd == "wal-archive" => {
            if !ops.contains(&WalType::ArchiveWal) {
                return Err("wal archive plugin is not available".into());
            }
            let marker = pgdata.join(CHECK_EMPTY_MARKER);
            let check = match std::env::var("CNPG_CHECK_EMPTY").as_deref() {
                Ok("unset") => None,
                Ok("true") => Some(true),
                Ok("false") => Some(false),
                _ => {
                    let cluster = Cluster::parse(&cluster_definition).map_err(|e| e.0)?;
                    Some(!cluster.skips_empty_archive_check() && marker.exists())
                }
            };
            wal.archive(WalArchiveRequest {
                cluster_definition,
                source_file_name: pgdata.join(p).display().to_string(),
                parameters: Default::default(),
                check_empty_wal_archive: check,
            })
            .await
            .map_err(rpc("WAL.Archive"))?;
            if check == Some(true) {
                let _ = std::fs::remove_file(&marker);
            }
            Ok(())
        }
        [cmd, rest @ ..] if cmd == "wal-restore" => {
            let (mode, f, p) = match rest {
                [flag, f, p] if flag == "--rewind" => (Mode::Rewind, f, p),
                [f, p] => (Mode::Recovery, f, p),
                _ => return Err("usage: wal-restore [--rewind] %f %p".into()),
            };
            if !ops.contains(&WalType::RestoreWal) {
                return Err("no plugin offers RESTORE_WAL".into());
            }
            wal.restore(WalRestoreRequest {
                cluster_definition,
                source_wal_name: f.clone(),
                destination_file_name: pgdata.join(p).display().to_string(),
                parameters: Default::default(),
                mode: mode as i32,
            })
            .await
            .map_err(rpc("WAL.Restore"))?;
            Ok(())
        }
        [cmd] if cmd == "restore-job" => {
            if !loaded.restore_job {
                return Err("the recovery source's plugin does not offer RESTORE_JOB".into());
            }
            let check = match std::env::var("CNPG_CHECK_EMPTY").as_deref() {
                Ok("unset") => None,
                Ok("true") => Some(true),
                Ok("false") => Some(false),
                _ => {
                    let cluster = Cluster::parse(&cluster_definition).map_err(|e| e.0)?;
                    Some(!cluster.skips_empty_archive_check())
                }
            };
            let res = RestoreJobHooksClient::new(loaded.channel)
                .restore(RestoreRequest {
                    cluster_definition,
                    check_empty_wal_archive: check,
                })
                .await
                .map_err(rpc("RestoreJobHooks.Restore"))?
                .into_inner();
            // restore_config on stdout, then the envs as comments.
            print!("{}", res.restore_config);
            for e in res.envs {
                println!("# env {e}");
            }
            Ok(())
        }
        [cmd, backup_json, params @ ..] if cmd == "backup" => {
            if !loaded.backup {
                return Err("the plugin does not offer BACKUP_SERVICE with TYPE_BACKUP".into());
            }
            let backup_definition = std::fs::read(backup_json)
                .map_err(|e| format!("cannot read {backup_json}: {e}"))?;
            let mut parameters = std::collections::HashMap::new();
            for p in params {
                let (k, v) = p
                    .split_once('=')
                    .ok_or_else(|| format!("parameter '{p}' is not KEY=VALUE"))?;
                parameters.insert(k.to_string(), v.to_string());
            }
            let r = BackupClient::new(loaded.channel)
                .backup(BackupRequest {
                    cluster_definition,
                    backup_definition,
                    parameters,
                })
                .await
                .map_err(rpc("Backup.Backup"))?
                .into_inner();
            let out = json!({
                "backup_id": r.backup_id,
                "backup_name": r.backup_name,
                "started_at": r.started_at,
                "stopped_at": r.stopped_at,
                "begin_wal": r.begin_wal,
                "end_wal": r.end_wal,
                "begin_lsn": r.begin_lsn,
                "end_lsn": r.end_lsn,
                "backup_label_file": String::from_utf8_lossy(&r.backup_label_file),
                "tablespace_map_file": String::from_utf8_lossy(&r.tablespace_map_file),
                "instance_id": r.instance_id,
                "online": r.online,
                "metadata": r.metadata,
            });
            println!("{out}");
            Ok(())
        }
        [cmd] if cmd == "metrics" => {
            if !loaded.metrics {
                return Err("the plugin does not offer METRICS with TYPE_METRICS".into());
            }
            let mut client = MetricsClient::new(loaded.channel);
            let defined = client
                .define(DefineMetricsRequest {
                    cluster_definition: cluster_definition.clone(),
                })
                .await
                .map_err(rpc("Metrics.Define"))?
                .into_inner()
                .metrics;
            let mut types = serde_json::Map::new();
            for d in &defined {
                let kind = d
                    .value_type
                    .as_ref()
                    .and_then(|t| MetricKind::try_from(t.r#type).ok())
                    .filter(|k| *k != MetricKind::Unspecified)
                    .ok_or_else(|| format!("metric {} has no value_type", d.fq_name))?;
                types.insert(d.fq_name.clone(), json!(kind.as_str_name()));
            }
            let collected = client
                .collect(CollectMetricsRequest { cluster_definition })
                .await
                .map_err(rpc("Metrics.Collect"))?
                .into_inner()
                .metrics;
            let mut values = serde_json::Map::new();
            for c in &collected {
                let d = defined
                    .iter()
                    .find(|d| d.fq_name == c.fq_name)
                    .ok_or_else(|| format!("collected metric {} is not defined", c.fq_name))?;
                if d.variable_labels.len() != c.variable_labels.len() {
                    return Err(format!(
                        "metric {} has {} label values, defined with {} labels",
                        c.fq_name,
                        c.variable_labels.len(),
                        d.variable_labels.len()
                    ));
                }
                if values.insert(c.fq_name.clone(), json!(c.value)).is_some() {
                    return Err(format!("metric {} collected twice", c.fq_name));
                }
            }
            println!("{}", json!({"defined": types, "collected": values}));
            Ok(())
        }
        _ => Err(
            "usage: cnpg-instance-manager wal-archive %p | wal-restore [--rewind] %f %p | \
             restore-job | backup BACKUP_JSON [KEY=VALUE ...] | metrics"
                .into(),
        ),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cnpg-instance-manager {}: {e}", args.join(" "));
            ExitCode::from(1)
        }
    }
}
