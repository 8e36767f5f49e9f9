//! The WAL service: Archive and Restore, each a thin call into pitr
//! (`wal::push::push`, `wal::restore_command::restore_wal`) whose outcome
//! is mapped to a gRPC status. No prefetch yet: every Restore fetches
//! exactly the file asked for, which is also what MODE_REWIND needs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pitr::config::redact;
use pitr::wal::locate;
use pitr::wal::push::{push, PushOutcome};
use pitr::wal::restore_command::{restore_wal, Verdict};
use pitr::wal::WalFileName;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::metrics::ArchiveCounters;
use crate::proto::wal::wal_capability::{self, rpc::Type as RpcType};
use crate::proto::wal::wal_restore_request::Mode;
use crate::proto::wal::wal_server::Wal;
use crate::proto::wal::{
    SetFirstRequiredRequest, SetFirstRequiredResult, WalArchiveRequest, WalArchiveResult,
    WalCapabilitiesRequest, WalCapabilitiesResult, WalCapability, WalRestoreRequest,
    WalRestoreResult, WalStatusRequest, WalStatusResult,
};
use crate::repos::{Access, Repos};
use crate::settings::{self, Cluster, SettingsError};
use crate::status;

/// The file CloudNativePG creates in PGDATA after bootstrap and restore,
/// meaning "the archive must be empty before the first push".
pub const CHECK_EMPTY_MARKER: &str = ".check-empty-wal-archive";

/// What the WAL service advertises (and serves).
pub const CAPABILITIES: [RpcType; 2] = [RpcType::ArchiveWal, RpcType::RestoreWal];

pub struct WalService {
    pub repos: Arc<Repos>,
    /// Archive outcomes, for the metrics.
    pub counters: Arc<ArchiveCounters>,
}

fn invalid(e: SettingsError) -> Status {
    Status::invalid_argument(e.0)
}

fn absolute(field: &str, value: &str) -> Result<PathBuf, Status> {
    let p = PathBuf::from(value);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(Status::invalid_argument(format!(
            "{field} '{value}' is not an absolute path: CloudNativePG sends PGDATA joined with \
             the path PostgreSQL gives"
        )))
    }
}

impl WalService {
    /// Whether the archive must hold no WAL before this push: the
    /// operator's answer when it sends one, else CloudNativePG's own rule
    /// (the skip annotation is not `enabled` and PGDATA has the marker).
    fn must_check_empty(&self, sent: Option<bool>, cluster: &Cluster) -> bool {
        sent.unwrap_or_else(|| {
            !cluster.skips_empty_archive_check()
                && self
                    .repos
                    .env()
                    .pgdata
                    .as_deref()
                    .is_some_and(|d| d.join(CHECK_EMPTY_MARKER).exists())
        })
    }

    /// One Archive call (counted by the caller).
    async fn archive_one(&self, req: WalArchiveRequest) -> Result<WalArchiveResult, Status> {
        let cluster = Cluster::parse(&req.cluster_definition).map_err(invalid)?;
        let settings = settings::for_archive(&cluster, self.repos.env()).map_err(invalid)?;
        let path = absolute("source_file_name", &req.source_file_name)?;
        let secrets = self.repos.secrets(&settings.repo);
        let fail = |e: &pitr::Error| {
            warn!(
                "archive {}: {}",
                path.display(),
                redact(&e.to_string(), &secrets)
            );
            status::from_error(e, &secrets)
        };
        let repo = self
            .repos
            .get(&settings.repo, Access::Write)
            .map_err(|e| fail(&e))?;
        if self.must_check_empty(req.check_empty_wal_archive, &cluster) {
            let has_wal = locate::any_wal(&repo).await.map_err(|e| fail(&e))?;
            if has_wal {
                let msg = format!(
                    "Expected empty archive: {} already holds WAL for server '{}', and this \
                     cluster was just created or restored (check_empty_wal_archive): another \
                     cluster may be archiving there. Point parameter serverName or repository \
                     somewhere empty, or, if this is intended, annotate the Cluster with \
                     cnpg.io/skipEmptyWalArchiveCheck: enabled",
                    repo.describe(),
                    settings.repo.server_name
                );
                warn!("archive {}: {msg}", path.display());
                return Err(Status::failed_precondition(msg));
            }
        }
        match push(&repo, &path).await {
            Ok(PushOutcome::Stored {
                key, stored_size, ..
            }) => info!("archived {} as {key} ({stored_size} bytes)", path.display()),
            Ok(PushOutcome::AlreadyArchived { key }) => {
                info!("{} already archived as {key}", path.display())
            }
            Err(e) => return Err(fail(&e)),
        }
        Ok(WalArchiveResult {})
    }
}

#[tonic::async_trait]
impl Wal for WalService {
    async fn get_capabilities(
        &self,
        _: Request<WalCapabilitiesRequest>,
    ) -> Result<Response<WalCapabilitiesResult>, Status> {
        let capabilities = CAPABILITIES
            .iter()
            .map(|t| WalCapability {
                r#type: Some(wal_capability::Type::Rpc(wal_capability::Rpc {
                    r#type: *t as i32,
                })),
            })
            .collect();
        Ok(Response::new(WalCapabilitiesResult { capabilities }))
    }

    async fn archive(
        &self,
        request: Request<WalArchiveRequest>,
    ) -> Result<Response<WalArchiveResult>, Status> {
        let result = self.archive_one(request.into_inner()).await;
        self.counters.record(result.is_ok());
        result.map(Response::new)
    }

    async fn restore(
        &self,
        request: Request<WalRestoreRequest>,
    ) -> Result<Response<WalRestoreResult>, Status> {
        let req = request.into_inner();
        let cluster = Cluster::parse(&req.cluster_definition).map_err(invalid)?;
        let settings = settings::for_restore(&cluster, self.repos.env()).map_err(invalid)?;
        let name: WalFileName = req
            .source_wal_name
            .parse()
            .map_err(|e: pitr::Error| Status::invalid_argument(format!("source_wal_name: {e}")))?;
        let dest = absolute("destination_file_name", &req.destination_file_name)?;
        let mode = Mode::try_from(req.mode).unwrap_or(Mode::Unspecified);
        let secrets = self.repos.secrets(&settings.repo);
        let repo = self
            .repos
            .get(&settings.repo, Access::Read)
            .map_err(|e| status::from_error(&e, &secrets))?;
        let verdict = restore_wal(&repo, &name, &dest, settings.restore_retry, |r| {
            warn!(
                "restore {name}: try {}/{} failed, retrying in {:?}: {}",
                r.attempt,
                r.attempts,
                r.wait,
                redact(&r.error.to_string(), &secrets)
            )
        })
        .await;
        map_verdict(verdict, &name, &dest, &repo.describe(), mode, &secrets)
            .map(|()| Response::new(WalRestoreResult {}))
    }

    async fn status(
        &self,
        _: Request<WalStatusRequest>,
    ) -> Result<Response<WalStatusResult>, Status> {
        Err(Status::unimplemented(
            "WAL.Status is not advertised by pitr.cnpg.io",
        ))
    }

    async fn set_first_required(
        &self,
        _: Request<SetFirstRequiredRequest>,
    ) -> Result<Response<SetFirstRequiredResult>, Status> {
        Err(Status::unimplemented(
            "WAL.SetFirstRequired is not advertised by pitr.cnpg.io",
        ))
    }
}

/// The library's restore verdict as what CloudNativePG is told.
fn map_verdict(
    verdict: Verdict,
    name: &WalFileName,
    dest: &Path,
    archive: &str,
    mode: Mode,
    secrets: &[String],
) -> Result<(), Status> {
    match verdict {
        Verdict::Restored(_) => {
            info!("restored {name} to {} ({mode:?})", dest.display());
            Ok(())
        }
        Verdict::NotInArchive => Err(Status::not_found(format!(
            "{name} is not in the archive {archive}"
        ))),
        Verdict::Gap { later } => {
            let msg = format!(
                "{name} is missing from {archive}, but the later segment {later} is archived: \
                 a gap in the archive; ending recovery at {name} would lose the WAL from \
                 {later} on"
            );
            warn!("restore {name}: {msg}");
            Err(Status::data_loss(msg))
        }
        Verdict::Failed { error, attempts } => {
            let s = status::from_error(&error, secrets);
            let msg = format!(
                "{name} could not be restored after {attempts} tries: {}",
                s.message()
            );
            warn!("restore {name}: {msg}");
            Err(Status::new(s.code(), msg))
        }
    }
}
