//! RestoreJobHooks for the recovery Job's sidecar: rebuild PGDATA from a
//! pitr backup of the recovery source, then tell CloudNativePG how to
//! recover. The library plans (the backup that fits the Cluster's
//! recovery target, and a WAL chain proven to reach it, before PGDATA is
//! touched) and executes; the plugin maps the Cluster's fields to the
//! plan request and the outcome to a status.
//!
//! CloudNativePG appends its own `recovery_target_*` settings to the
//! returned `restore_config`; WAL during recovery comes back through its
//! `wal-restore`, i.e. this sidecar's WAL.Restore.

use std::path::PathBuf;
use std::sync::Arc;

use pitr::backup::take::Progress;
use pitr::restore::execute::{execute, ExecuteRequest};
use pitr::restore::target::{parse_time, parse_timeline};
use pitr::restore::{plan, PlanRequest, Target, TargetAction, TimelineTarget};
use pitr::wal::{locate, Lsn};
use serde_json::Value;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::proto::wal::restore_job_hooks_capability::Kind;
use crate::proto::wal::restore_job_hooks_server::RestoreJobHooks;
use crate::proto::wal::{
    RestoreJobHooksCapabilitiesRequest, RestoreJobHooksCapabilitiesResult,
    RestoreJobHooksCapability, RestoreRequest, RestoreResponse,
};
use crate::repos::{Access, Repos};
use crate::settings::{self, Cluster, SettingsError};
use crate::status;
use crate::PLUGIN_NAME;

/// What PostgreSQL is told to run for WAL during recovery: CloudNativePG's
/// instance manager, which calls WAL.Restore on this sidecar.
/// Where CloudNativePG keeps pg_wal when the Cluster has `walStorage`.
pub const CNPG_WAL_DIR: &str = "/var/lib/postgresql/wal/pg_wal";

pub const RESTORE_COMMAND: &str = "/controller/manager wal-restore %f %p";

/// The settings returned in `restore_config`.
pub fn restore_config() -> String {
    format!("recovery_target_action = 'promote'\nrestore_command = '{RESTORE_COMMAND}'\n")
}

pub struct RestoreJobService {
    pub repos: Arc<Repos>,
}

fn invalid(e: SettingsError) -> Status {
    Status::invalid_argument(e.0)
}

/// `spec.bootstrap.recovery.recoveryTarget` as a plan request.
pub fn plan_request(cluster: &Cluster) -> Result<PlanRequest, SettingsError> {
    let rt = cluster
        .json()
        .pointer("/spec/bootstrap/recovery/recoveryTarget");
    let field = |name: &str| {
        rt.and_then(|t| t.get(name))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let bad = |name: &str, e: &dyn std::fmt::Display| {
        SettingsError(format!(
            "spec.bootstrap.recovery.recoveryTarget.{name}: {e}"
        ))
    };
    let target = if rt
        .and_then(|t| t.get("targetImmediate"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        Target::Immediate
    } else if let Some(t) = field("targetTime") {
        let (time, zone_given) = parse_time(t).map_err(|e| bad("targetTime", &e))?;
        Target::Time { time, zone_given }
    } else if let Some(l) = field("targetLSN") {
        Target::Lsn {
            lsn: l.parse::<Lsn>().map_err(|e| bad("targetLSN", &e))?,
        }
    } else if let Some(x) = field("targetXID") {
        Target::Xid {
            xid: x
                .parse()
                .map_err(|_| bad("targetXID", &"not a transaction id"))?,
        }
    } else if let Some(n) = field("targetName") {
        Target::Name { name: n.into() }
    } else {
        Target::Latest
    };
    let timeline = match field("targetTLI") {
        Some(t) => parse_timeline(t).map_err(|e| bad("targetTLI", &e))?,
        None => TimelineTarget::Latest,
    };
    Ok(PlanRequest {
        target,
        timeline,
        exclusive: rt
            .and_then(|t| t.get("exclusive"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        action: TargetAction::Promote,
        backup: field("backupID").map(str::to_string),
    })
}

/// Progress goes to the log.
struct LogProgress;

impl Progress for LogProgress {
    fn total(&self, bytes: u64) {
        info!("restoring {bytes} bytes");
    }
    fn advance(&self, _: u64) {}
    fn phase(&self, what: &str) {
        info!("{what}");
    }
}

impl RestoreJobService {
    /// Refuses when the new Cluster's own archive already holds WAL (the
    /// check is on unless the Cluster skips it).
    async fn check_own_archive_empty(
        &self,
        cluster: &Cluster,
        sent: Option<bool>,
    ) -> Result<(), Status> {
        let check = sent.unwrap_or(!cluster.skips_empty_archive_check());
        if !check || !cluster.plugin_enabled() {
            return Ok(());
        }
        let own = settings::for_archive(cluster, self.repos.env()).map_err(invalid)?;
        let secrets = self.repos.secrets(&own.repo);
        let repo = self
            .repos
            .get(&own.repo, Access::Write)
            .map_err(|e| status::from_error(&e, &secrets))?;
        if locate::any_wal(&repo)
            .await
            .map_err(|e| status::from_error(&e, &secrets))?
        {
            return Err(Status::failed_precondition(format!(
                "Expected empty archive: {} already holds WAL for server '{}', where the \
                 recovered cluster will archive: point this Cluster's parameter serverName or \
                 repository somewhere empty, or annotate it with \
                 cnpg.io/skipEmptyWalArchiveCheck: enabled",
                repo.describe(),
                own.repo.server_name
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RestoreJobHooks for RestoreJobService {
    async fn get_capabilities(
        &self,
        _: Request<RestoreJobHooksCapabilitiesRequest>,
    ) -> Result<Response<RestoreJobHooksCapabilitiesResult>, Status> {
        Ok(Response::new(RestoreJobHooksCapabilitiesResult {
            capabilities: vec![RestoreJobHooksCapability {
                kind: Kind::Restore as i32,
            }],
        }))
    }

    async fn restore(
        &self,
        request: Request<RestoreRequest>,
    ) -> Result<Response<RestoreResponse>, Status> {
        let req = request.into_inner();
        let cluster = Cluster::parse(&req.cluster_definition).map_err(invalid)?;
        let source = cluster.recovery_source().ok_or_else(|| {
            Status::invalid_argument(
                "the Cluster has no spec.bootstrap.recovery.source: nothing to restore from",
            )
        })?;
        let params = cluster.external_params(source).ok_or_else(|| {
            Status::failed_precondition(format!(
                "recovery source '{source}' is missing from spec.externalClusters or does not \
                 use plugin {PLUGIN_NAME}"
            ))
        })?;
        let from = settings::resolve(&params.map_err(invalid)?, source, self.repos.env())
            .map_err(invalid)?;
        let plan_req = plan_request(&cluster).map_err(invalid)?;
        let pgdata = self.repos.env().pgdata.clone().ok_or_else(|| {
            Status::failed_precondition(
                "PGDATA is not set in the restore sidecar's environment: the injected sidecar \
                 copies it from the recovery Job's container",
            )
        })?;
        self.check_own_archive_empty(&cluster, req.check_empty_wal_archive)
            .await?;

        let secrets = self.repos.secrets(&from.repo);
        let fail = |e: pitr::Error| status::from_error(&e, &secrets);
        let repo = self.repos.get(&from.repo, Access::Restore).map_err(fail)?;
        let plan = plan(&repo, &plan_req).await.map_err(fail)?;
        info!(
            "restoring backup {} of {} into {}: {}",
            plan.backup.info.backup_id,
            repo.describe(),
            pgdata.display(),
            plan.reached_by
        );
        let exec = ExecuteRequest {
            pgdata,
            force: false,
            tablespace_map: Default::default(),
            restore_command: None,
            timeline: plan_req.timeline,
            // CloudNativePG mounts the WAL volume here and links pg_wal to it.
            wal_dir: cluster
                .has_wal_storage()
                .then(|| PathBuf::from(CNPG_WAL_DIR)),
            jobs: pitr::restore::execute::DEFAULT_JOBS,
        };
        let report = execute(&repo, &plan, &exec, &LogProgress)
            .await
            .map_err(fail)?;
        info!(
            "restored {} files ({} bytes) of backup {}",
            report.files, report.bytes, plan.backup.info.backup_id
        );
        Ok(Response::new(RestoreResponse {
            restore_config: restore_config(),
            envs: Vec::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with_target(t: Value) -> Cluster {
        let v = json!({"spec": {"bootstrap": {"recovery": {"source": "x", "recoveryTarget": t}}}});
        Cluster::parse(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn recovery_targets_map_to_plan_requests() {
        let r = plan_request(&with_target(Value::Null)).unwrap();
        assert_eq!(r.target, Target::Latest);
        assert_eq!(r.timeline, TimelineTarget::Latest);
        assert_eq!(r.backup, None);
        let r = plan_request(&with_target(json!({
            "targetTime": "2026-11-22 04:00:00+00", "exclusive": true,
            "backupID": "20261122T030000", "targetTLI": "2"
        })))
        .unwrap();
        assert!(matches!(
            r.target,
            Target::Time {
                zone_given: true,
                ..
            }
        ));
        assert!(r.exclusive);
        assert_eq!(r.backup.as_deref(), Some("20261122T030000"));
        assert_eq!(r.timeline, parse_timeline("2").unwrap());
        let r = plan_request(&with_target(json!({"targetLSN": "0/3000060"}))).unwrap();
        assert_eq!(
            r.target,
            Target::Lsn {
                lsn: Lsn(0x3000060)
            }
        );
        let r = plan_request(&with_target(json!({"targetImmediate": true}))).unwrap();
        assert_eq!(r.target, Target::Immediate);
        let r = plan_request(&with_target(json!({"targetXID": "745"}))).unwrap();
        assert_eq!(r.target, Target::Xid { xid: 745 });
        let r = plan_request(&with_target(json!({"targetName": "before-upgrade"}))).unwrap();
        assert_eq!(
            r.target,
            Target::Name {
                name: "before-upgrade".into()
            }
        );
        for (bad, field) in [
            (json!({"targetTime": "yesterday"}), "targetTime"),
            (json!({"targetLSN": "3000060"}), "targetLSN"),
            (json!({"targetXID": "x"}), "targetXID"),
            (json!({"targetTLI": "new"}), "targetTLI"),
        ] {
            let e = plan_request(&with_target(bad)).unwrap_err();
            assert!(e.0.contains(field), "{e}");
        }
    }
}
