//! The Identity service: metadata, capabilities, probe. All from memory:
//! CloudNativePG runs this handshake on every new connection, which for
//! `wal-archive` / `wal-restore` means once per WAL segment.

use tonic::{Request, Response, Status};

use crate::proto::identity::identity_server::Identity;
use crate::proto::identity::plugin_capability::{self, service::Type as ServiceType};
use crate::proto::identity::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginMetadataRequest,
    GetPluginMetadataResponse, PluginCapability, ProbeRequest, ProbeResponse,
};
use crate::PLUGIN_NAME;

/// Which of the three processes this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The sidecar of every instance Pod (Unix socket): WAL, Backup, Metrics.
    Instance,
    /// The sidecar of a recovery Job (Unix socket): RestoreJobHooks and WAL.
    Restore,
    /// The operator-side plugin (TCP + mTLS): OperatorLifecycle.
    Operator,
}

impl Role {
    /// What this role advertises; every service listed here is served.
    pub fn capabilities(self) -> &'static [ServiceType] {
        match self {
            Role::Instance => &[
                ServiceType::WalService,
                ServiceType::BackupService,
                ServiceType::Metrics,
            ],
            Role::Restore => &[ServiceType::RestoreJob, ServiceType::WalService],
            Role::Operator => &[
                ServiceType::LifecycleService,
                ServiceType::InstanceSidecarInjection,
                ServiceType::InstanceJobSidecarInjection,
            ],
        }
    }
}

pub fn metadata() -> GetPluginMetadataResponse {
    GetPluginMetadataResponse {
        name: PLUGIN_NAME.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        display_name: "pitr".into(),
        description: "WAL archiving and restore for CloudNativePG through pitr \
                      (Barman-compatible object layout on S3 or a directory)"
            .into(),
        project_url: String::new(),
        repository_url: String::new(),
        license: "Apache-2.0".into(),
        license_url: "https://www.apache.org/licenses/LICENSE-2.0".into(),
        maturity: "alpha".into(),
        vendor: "pitr".into(),
        manifest: Default::default(),
    }
}

pub struct IdentityService {
    pub role: Role,
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_metadata(
        &self,
        _: Request<GetPluginMetadataRequest>,
    ) -> Result<Response<GetPluginMetadataResponse>, Status> {
        Ok(Response::new(metadata()))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let capabilities = self
            .role
            .capabilities()
            .iter()
            .map(|t| PluginCapability {
                r#type: Some(plugin_capability::Type::Service(
                    plugin_capability::Service { r#type: *t as i32 },
                )),
            })
            .collect();
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse { ready: true }))
    }
}
