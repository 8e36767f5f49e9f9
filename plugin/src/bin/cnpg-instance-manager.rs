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

use pitr_cnpg::proto::backup::backup_client::BackupClient;
use pitr_cnpg::proto::backup::BackupCapabilitiesRequest;
use pitr_cnpg::proto::identity::identity_client::IdentityClient;
use pitr_cnpg::proto::identity::plugin_capability::{self, service::Type as ServiceType};
use pitr_cnpg::proto::identity::{GetPluginCapabilitiesRequest, GetPluginMetadataRequest};
use pitr_cnpg::proto::lifecycle::operator_lifecycle_client::OperatorLifecycleClient;
use pitr_cnpg::proto::lifecycle::OperatorLifecycleCapabilitiesRequest;
use pitr_cnpg::proto::metrics::metrics_client::MetricsClient;
use pitr_cnpg::proto::metrics::MetricsCapabilitiesRequest;
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
                BackupClient::new(channel.clone())
                    .get_capabilities(BackupCapabilitiesRequest {})
                    .await
                    .map_err(rpc("Backup.GetCapabilities"))?;
            }
            Ok(ServiceType::Metrics) => {
                MetricsClient::new(channel.clone())
                    .get_capabilities(MetricsCapabilitiesRequest {})
                    .await
                    .map_err(rpc("Metrics.GetCapabilities"))?;
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
        _ => Err(
            "usage: cnpg-instance-manager wal-archive %p | wal-restore [--rewind] %f %p | restore-job"
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
