//! RestoreJobHooks for the recovery Job's sidecar. `GetCapabilities`
//! answers KIND_RESTORE so CloudNativePG loads the plugin; `Restore`
//! (rebuilding PGDATA from a base backup) is not implemented yet and
//! refuses with a message that says so.

use tonic::{Request, Response, Status};

use crate::proto::wal::restore_job_hooks_capability::Kind;
use crate::proto::wal::restore_job_hooks_server::RestoreJobHooks;
use crate::proto::wal::{
    RestoreJobHooksCapabilitiesRequest, RestoreJobHooksCapabilitiesResult,
    RestoreJobHooksCapability, RestoreRequest, RestoreResponse,
};
use crate::PLUGIN_NAME;

pub struct RestoreJobService;

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
        _: Request<RestoreRequest>,
    ) -> Result<Response<RestoreResponse>, Status> {
        Err(Status::unimplemented(format!(
            "{PLUGIN_NAME}: bootstrap recovery from a base backup (RestoreJobHooks.Restore) is \
             not implemented yet in this version of the plugin. Restore the data directory with \
             `pitr restore` (or bootstrap from a volume snapshot) and let WAL replay go \
             through the plugin's WAL.Restore"
        )))
    }
}
