//! The operator-side plugin's transport: mutual TLS 1.3 only, a client
//! certificate required and checked against the client CA file, and the
//! files re-read for every connection (rotation without a restart).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pitr_cnpg::lifecycle::Injection;
use pitr_cnpg::operator_tls::{serve, TlsFiles};
use pitr_cnpg::proto::identity::identity_client::IdentityClient;
use pitr_cnpg::proto::identity::plugin_capability::{self, service::Type as ServiceType};
use pitr_cnpg::proto::identity::{GetPluginCapabilitiesRequest, GetPluginMetadataRequest};
use pitr_cnpg::proto::lifecycle::operator_lifecycle_client::OperatorLifecycleClient;
use pitr_cnpg::proto::lifecycle::operator_operation_type::Type as OpType;
use pitr_cnpg::proto::lifecycle::{
    OperatorLifecycleCapabilitiesRequest, OperatorLifecycleRequest, OperatorOperationType,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The name CloudNativePG verifies: the plugin's Service.
const SERVICE_DNS: &str = "pitr-cnpg.cnpg-system.svc";

/// A CA with a server and a client certificate, as PEM.
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn leaf(
    issuer: &CertifiedIssuer<'_, KeyPair>,
    name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![usage];
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, format!("test CA {tag}"));
        let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        let (server_cert, server_key) = leaf(&ca, SERVICE_DNS, ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) =
            leaf(&ca, "cnpg-operator", ExtendedKeyUsagePurpose::ClientAuth);
        Pki {
            ca: ca.pem(),
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    /// Writes the server's files the way a Secret update does: a new file
    /// renamed over the old one.
    fn install(&self, files: &TlsFiles) {
        for (path, pem) in [
            (&files.server_cert, &self.server_cert),
            (&files.server_key, &self.server_key),
            (&files.client_ca, &self.ca),
        ] {
            let tmp = path.with_extension("new");
            std::fs::write(&tmp, pem).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    }
}

struct Server {
    addr: SocketAddr,
    files: TlsFiles,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(pki: &Pki) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let at = |n: &str| -> PathBuf { dir.path().join(n) };
    let files = TlsFiles {
        server_cert: at("tls.crt"),
        server_key: at("tls.key"),
        client_ca: at("client-ca.crt"),
    };
    pki.install(&files);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let injection = Injection {
        image: "registry.example/pitr-cnpg:test".into(),
    };
    tokio::spawn(serve(listener, files.clone(), injection, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        files,
        _dir: dir,
        _stop: stop,
    }
}

/// A gRPC channel over TLS trusting `ca`, presenting `identity` if given.
async fn channel(
    addr: SocketAddr,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(SERVICE_DNS);
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

/// GetPluginMetadata over a new connection: the name, or why not.
async fn metadata(
    addr: SocketAddr,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<String, String> {
    let ch = channel(addr, ca, identity).await?;
    IdentityClient::new(ch)
        .get_plugin_metadata(GetPluginMetadataRequest {})
        .await
        .map(|r| r.into_inner().name)
        .map_err(|s| format!("{s:?}"))
}

fn client_config(
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.as_bytes()).unwrap())
        .unwrap();
    let certs = vec![CertificateDer::from_pem_slice(pki.client_cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.client_key.as_bytes()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    cfg
}

/// A bare TLS handshake with the given protocol versions.
async fn handshake(
    addr: SocketAddr,
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(pki, versions)));
    connector
        .connect(ServerName::try_from(SERVICE_DNS).unwrap(), tcp)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_client_is_served_identity_and_lifecycle() {
    let pki = Pki::new("a");
    let server = start(&pki).await;
    let me = Some((pki.client_cert.as_str(), pki.client_key.as_str()));
    assert_eq!(
        metadata(server.addr, &pki.ca, me).await.unwrap(),
        "pitr.cnpg.io"
    );

    let ch = channel(server.addr, &pki.ca, me).await.unwrap();
    let caps = IdentityClient::new(ch.clone())
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let types: Vec<i32> = caps
        .capabilities
        .into_iter()
        .filter_map(|c| c.r#type.map(|plugin_capability::Type::Service(s)| s.r#type))
        .collect();
    assert_eq!(
        types,
        vec![
            ServiceType::LifecycleService as i32,
            ServiceType::InstanceSidecarInjection as i32,
            ServiceType::InstanceJobSidecarInjection as i32
        ]
    );
    let mut lifecycle = OperatorLifecycleClient::new(ch);
    let lc = lifecycle
        .get_capabilities(OperatorLifecycleCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lc.lifecycle_capabilities.len(), 2);
    let fixture = |n: &str| {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(n),
        )
        .unwrap()
    };
    let patch = lifecycle
        .lifecycle_hook(OperatorLifecycleRequest {
            operation_type: Some(OperatorOperationType {
                r#type: OpType::Create as i32,
            }),
            cluster_definition: fixture("cluster.json"),
            object_definition: fixture("pod.json"),
        })
        .await
        .unwrap()
        .into_inner()
        .json_patch;
    let ops: serde_json::Value = serde_json::from_slice(&patch).unwrap();
    assert!(
        ops.as_array()
            .unwrap()
            .iter()
            .any(|op| op["value"]["name"] == "pitr-cnpg"),
        "{ops}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_trusted_certificate_or_with_tls_1_2_are_refused() {
    let pki = Pki::new("b");
    let server = start(&pki).await;

    let e = metadata(server.addr, &pki.ca, None).await.unwrap_err();
    assert!(!e.is_empty());

    let stranger = Pki::new("stranger");
    let e = metadata(
        server.addr,
        &pki.ca,
        Some((&stranger.client_cert, &stranger.client_key)),
    )
    .await
    .unwrap_err();
    assert!(!e.is_empty());

    // The same client certificate: TLS 1.3 shakes hands, TLS 1.2 does not.
    handshake(server.addr, &pki, &[&rustls::version::TLS13])
        .await
        .unwrap();
    let e = handshake(server.addr, &pki, &[&rustls::version::TLS12])
        .await
        .unwrap_err();
    assert!(e.to_lowercase().contains("version"), "{e}");

    // And the server still serves a valid client afterwards.
    let me = Some((pki.client_cert.as_str(), pki.client_key.as_str()));
    assert_eq!(
        metadata(server.addr, &pki.ca, me).await.unwrap(),
        "pitr.cnpg.io"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_apply_to_new_connections_without_a_restart() {
    let old = Pki::new("old");
    let server = start(&old).await;
    let old_id = Some((old.client_cert.as_str(), old.client_key.as_str()));
    assert!(metadata(server.addr, &old.ca, old_id).await.is_ok());

    let new = Pki::new("new");
    new.install(&server.files);
    let new_id = Some((new.client_cert.as_str(), new.client_key.as_str()));
    assert_eq!(
        metadata(server.addr, &new.ca, new_id).await.unwrap(),
        "pitr.cnpg.io",
        "a client of the new CA is served by the same server"
    );
    // A client still trusting the old CA does not accept the new server
    // certificate, and the old client certificate is no longer accepted.
    assert!(metadata(server.addr, &old.ca, old_id).await.is_err());
    assert!(metadata(server.addr, &new.ca, old_id).await.is_err());
}
