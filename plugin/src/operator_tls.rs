//! The operator-side plugin's transport: TCP with mutual TLS, TLS 1.3
//! only, a client certificate required and verified against the client CA
//! file. The certificate, key and CA files are read again for every new
//! connection, so a rotated Secret takes effect without a restart.
//! Accepted TLS streams are handed to tonic.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tracing::{debug, info, warn};

use crate::identity::{IdentityService, Role};
use crate::lifecycle::{Injection, LifecycleService};
use crate::proto::identity::identity_server::IdentityServer;
use crate::proto::lifecycle::operator_lifecycle_server::OperatorLifecycleServer;
use crate::PLUGIN_NAME;

/// A TLS handshake that takes longer than this is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM files of the server's identity and of the CA clients must be
/// signed by (CloudNativePG's client Secret's `tls.crt`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_ca: PathBuf,
}

fn read_certs(path: &PathBuf, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

impl TlsFiles {
    /// A server configuration from the files as they are now.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = read_certs(&self.server_cert, "server certificate")?;
        let key = PrivateKeyDer::from_pem_file(&self.server_key)
            .map_err(|e| format!("cannot read server key {}: {e}", self.server_key.display()))?;
        let mut roots = RootCertStore::empty();
        for ca in read_certs(&self.client_ca, "client CA")? {
            roots
                .add(ca)
                .map_err(|e| format!("client CA {}: {e}", self.client_ca.display()))?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("client CA {}: {e}", self.client_ca.display()))?;
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS 1.3: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| {
                format!(
                    "server certificate {} and key {} do not go together: {e}",
                    self.server_cert.display(),
                    self.server_key.display()
                )
            })?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }
}

type Accepted = Result<TlsStream<TcpStream>, io::Error>;

async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    files: &TlsFiles,
) -> Option<TlsStream<TcpStream>> {
    let cfg = match files.server_config() {
        Ok(cfg) => cfg,
        Err(e) => {
            warn!("refusing the connection from {peer}: {e}");
            return None;
        }
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(cfg).accept(tcp)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            info!("TLS handshake with {peer} failed: {e}");
            None
        }
        Err(_) => {
            info!("TLS handshake with {peer} timed out");
            None
        }
    }
}

async fn accept_loop(listener: TcpListener, files: Arc<TlsFiles>, tx: mpsc::Sender<Accepted>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        debug!("connection from {peer}");
        if tx.is_closed() {
            return;
        }
        let files = files.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Some(tls) = handshake(tcp, peer, &files).await {
                let _ = tx.send(Ok(tls)).await;
            }
        });
    }
}

/// Serves Identity and OperatorLifecycle on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    files: TlsFiles,
    injection: Injection,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (tx, rx) = mpsc::channel(32);
    let accept = tokio::spawn(accept_loop(listener, Arc::new(files), tx));
    info!("serving {PLUGIN_NAME} (Operator) with mutual TLS 1.3");
    let result = Server::builder()
        .add_service(IdentityServer::new(IdentityService {
            role: Role::Operator,
        }))
        .add_service(OperatorLifecycleServer::new(LifecycleService { injection }))
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown)
        .await;
    accept.abort();
    result
}
