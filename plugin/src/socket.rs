//! The instance and restore sidecars' transport: plain gRPC over the Unix
//! socket `<plugin path>/<plugin name>` that CloudNativePG's instance
//! manager finds by listing its plugin directory; and a client for it (the
//! startup probe, the test instance manager).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Server, Uri};
use tracing::info;

use crate::backup::BackupService;
use crate::identity::{IdentityService, Role};
use crate::metrics::{Metrics, MetricsService};
use crate::proto::backup::backup_server::BackupServer;
use crate::proto::identity::identity_server::IdentityServer;
use crate::proto::metrics::metrics_server::MetricsServer;
use crate::proto::wal::restore_job_hooks_server::RestoreJobHooksServer;
use crate::proto::wal::wal_server::WalServer;
use crate::repos::Repos;
use crate::restore_job::RestoreJobService;
use crate::wal::WalService;
use crate::PLUGIN_NAME;

/// Where CloudNativePG looks for plugin sockets unless told otherwise.
pub const DEFAULT_PLUGIN_PATH: &str = "/plugins";

/// `<dir>/<plugin name>`: the file name is how CloudNativePG registers it.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(PLUGIN_NAME)
}

/// Binds the socket, removing a stale one left by a previous run (only a
/// socket: any other file there is an error, not something to delete).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket: remove it or choose another --plugin-path",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

/// Serves the sidecar role (`Instance` or `Restore`) on `listener` until
/// `shutdown` completes.
pub async fn serve(
    role: Role,
    listener: UnixListener,
    repos: Arc<Repos>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = UnixListenerStream::new(listener);
    let metrics = Metrics::new(repos.clone());
    let mut router = Server::builder()
        .add_service(IdentityServer::new(IdentityService { role }))
        .add_service(WalServer::new(WalService {
            repos: repos.clone(),
            in_flight: Default::default(),
        }));
    let mut refresh = None;
    match role {
        Role::Restore => {
            router = router.add_service(RestoreJobHooksServer::new(RestoreJobService { repos }))
        }
        Role::Instance => {
            refresh = Some(tokio::spawn(metrics.clone().run()));
            router = router
                .add_service(BackupServer::new(BackupService {
                    repos,
                    metrics: metrics.clone(),
                }))
                .add_service(MetricsServer::new(MetricsService { metrics }));
        }
        Role::Operator => {}
    }
    info!("serving {PLUGIN_NAME} ({role:?})");
    let served = router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Some(task) = refresh {
        task.abort();
    }
    served
}

/// A new connection to the plugin socket at `path`.
pub async fn connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    // The URI is required by the API and never dialled.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}
