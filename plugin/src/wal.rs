//! The WAL service: Archive and Restore, each a thin call into pitr whose
//! outcome is mapped to a gRPC status. Archive pushes with
//! `wal::lookahead` (the next ready files follow in the background, never
//! uploaded twice); Restore decides with `wal::restore_command` and keeps
//! `wal::prefetch`'s spool filled in the background (not for MODE_REWIND,
//! which gets exactly the file asked for).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pitr::config::redact;
use pitr::repo::Repo;
use pitr::wal::archive_stats::{self, ArchiveOutcome};
use pitr::wal::lookahead::{push_exclusive, ready_files, spawn_ahead, InFlight, Markers};
use pitr::wal::push::PushOutcome;
use pitr::wal::restore_command::{restore_wal, Verdict};
use pitr::wal::WalFileName;
use pitr::wal::{locate, prefetch};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

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
    /// Pushes under way in this sidecar (asked-for and look-ahead ones), so
    /// that no file is uploaded twice at once.
    pub in_flight: Arc<InFlight>,
}

/// At most this much WAL is pushed ahead after one Archive call.
const AHEAD_MAX_BYTES: u64 = 256 << 20;

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

    /// One Archive call, counted by the caller in `counted`: the file, and
    /// the repository once open.
    async fn archive_one(
        &self,
        req: WalArchiveRequest,
        counted: &mut Option<(PathBuf, Option<Arc<Repo>>)>,
    ) -> Result<WalArchiveResult, Status> {
        let cluster = Cluster::parse(&req.cluster_definition).map_err(invalid)?;
        let settings = settings::for_archive(&cluster, self.repos.env()).map_err(invalid)?;
        let path = absolute("source_file_name", &req.source_file_name)?;
        *counted = Some((path.clone(), None));
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
        *counted = Some((path.clone(), Some(repo.clone())));
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
        let pg_wal = pitr::fsutil::parent_dir(&path).to_path_buf();
        let markers = Markers::new(&pg_wal, &repo.describe());
        match push_exclusive(&repo, &markers, &self.in_flight, &path).await {
            Ok(PushOutcome::Stored {
                key, stored_size, ..
            }) => info!("archived {} as {key} ({stored_size} bytes)", path.display()),
            Ok(PushOutcome::AlreadyArchived { key, .. }) => {
                info!("{} already archived as {key}", path.display())
            }
            Err(e) => return Err(fail(&e)),
        }
        // Look-ahead: the next ready files travel in the background, so
        // CloudNativePG's next calls find them stored.
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<WalFileName>().ok());
        if let Some(name) = name.filter(|_| settings.archive_concurrency > 1) {
            let ahead = settings.archive_concurrency as usize - 1;
            let files = ready_files(&pg_wal, &name, ahead, AHEAD_MAX_BYTES, &markers);
            if !files.is_empty() {
                markers.prune(&pg_wal);
                spawn_ahead(repo.clone(), markers, self.in_flight.clone(), files, ahead);
            }
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
        let mut counted = None;
        let result = self.archive_one(request.into_inner(), &mut counted).await;
        // Counted beside the WAL (pg_stat_archiver's way), for the metrics.
        if let Some((path, repo)) = counted {
            let outcome = ArchiveOutcome {
                path: &path,
                ok: result.is_ok(),
            };
            archive_stats::note(
                repo.as_deref(),
                outcome,
                archive_stats::DEFAULT_UPLOAD_INTERVAL,
            )
            .await;
        }
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
        // Prefetch (never for pg_rewind, which asks for exactly one file):
        // segments downloaded ahead into pg_wal/.pitr-prefetch, complete and
        // verified, tagged with the archive they came from.
        let prefetching = match name {
            WalFileName::Segment(segment) if mode != Mode::Rewind && settings.prefetch > 0 => {
                Some(segment)
            }
            _ => None,
        };
        let spool = prefetch::spool_dir(&dest);
        let source = repo.describe();
        if let Some(segment) = prefetching {
            let wait = Duration::from_secs(PREFETCH_WAIT_SECS);
            if let Ok(true) = prefetch::take_or_wait(&spool, &name, &source, &dest, wait).await {
                info!(
                    "restored {name} to {} from the prefetch spool",
                    dest.display()
                );
                refill(
                    repo.clone(),
                    &spool,
                    &source,
                    &segment,
                    &dest,
                    settings.prefetch,
                );
                return Ok(Response::new(WalRestoreResult {}));
            }
        }
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
        if let Some(segment) = prefetching {
            match verdict {
                Verdict::Restored(_) => refill(
                    repo.clone(),
                    &spool,
                    &source,
                    &segment,
                    &dest,
                    settings.prefetch,
                ),
                _ => prefetch::clear(&spool),
            }
        }
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

/// How long a Restore waits for a segment the prefetcher is downloading.
const PREFETCH_WAIT_SECS: u64 = 30;

/// After `segment` is in place at `dest`: drop older spooled segments and,
/// when fewer than half of `count` are spooled, download the next ones in
/// the background, named with the segment size `dest` declares.
fn refill(
    repo: Arc<pitr::repo::Repo>,
    spool: &Path,
    source: &str,
    segment: &pitr::wal::SegmentName,
    dest: &Path,
    count: u32,
) {
    prefetch::prune(spool, segment);
    let Some(segment_size) = prefetch::segment_size_of(dest) else {
        warn!(
            "{} has no readable WAL page header: not prefetching",
            dest.display()
        );
        return;
    };
    let count = prefetch::bounded_count(count, segment_size, prefetch::DEFAULT_SPOOL_MAX_BYTES);
    if !prefetch::needs_refill(spool, count) {
        return;
    }
    let (spool, source, segment) = (spool.to_path_buf(), source.to_string(), *segment);
    tokio::spawn(async move {
        let got = prefetch::prefetch(
            &repo,
            &spool,
            &source,
            &segment,
            count,
            segment_size,
            count as usize,
        )
        .await;
        if let Err(e) = got {
            warn!("prefetch after {segment}: {e} (Restore fetches directly)");
        }
    });
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
