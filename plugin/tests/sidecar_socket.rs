//! The sidecar's socket: named for the plugin, a stale one replaced, the
//! startup probe, and what each sidecar role advertises.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use common::{run, TestDir};
use pitr_cnpg::proto::identity::identity_client::IdentityClient;
use pitr_cnpg::proto::identity::plugin_capability::{self, service::Type as ServiceType};
use pitr_cnpg::proto::identity::GetPluginCapabilitiesRequest;
use pitr_cnpg::proto::wal::restore_job_hooks_client::RestoreJobHooksClient;
use pitr_cnpg::proto::wal::RestoreRequest;
use support::{sidecar_bin, Sidecar};

fn healthcheck(plugin_path: &std::path::Path) -> common::Run {
    run(std::process::Command::new(sidecar_bin())
        .args(["healthcheck", "unix"])
        .env("PLUGIN_PATH", plugin_path))
}

async fn advertised(sock: &std::path::Path) -> Vec<i32> {
    let ch = pitr_cnpg::socket::connect(sock).await.unwrap();
    IdentityClient::new(ch)
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .into_iter()
        .filter_map(|c| c.r#type.map(|plugin_capability::Type::Service(s)| s.r#type))
        .collect()
}

#[test]
fn the_startup_probe_and_a_stale_socket() {
    let dir = TestDir::new("cnpg-sock");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let r = healthcheck(&plugins);
    assert_eq!(r.code, 1, "no socket, not healthy: {r:?}");
    assert!(r.stderr.contains("pitr.cnpg.io"), "{}", r.stderr);

    // A socket left by a sidecar that died: nobody answers on it ...
    let sock = plugins.join("pitr.cnpg.io");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    assert_eq!(healthcheck(&plugins).code, 1, "nobody answers");
    // ... and the sidecar replaces it.
    let sidecar = Sidecar::start(&dir, "instance", &[]);
    assert_eq!(sidecar.socket(), sock);
    let r = healthcheck(&plugins);
    assert_eq!(r.code, 0, "{r:?}");
    drop(sidecar);

    // Anything else at that path is left alone, and the sidecar says why.
    let other = TestDir::new("cnpg-sock-file");
    let plugins = other.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(plugins.join("pitr.cnpg.io"), "not a socket").unwrap();
    let r = run(std::process::Command::new(sidecar_bin())
        .arg("instance")
        .env("PLUGIN_PATH", &plugins));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is not a socket"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(plugins.join("pitr.cnpg.io")).unwrap(),
        "not a socket"
    );
}

// Multi-threaded: the channels' connections close while a sidecar's Drop
// waits for it to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_advertises_what_it_serves() {
    let dir = TestDir::new("cnpg-roles");
    let instance = Sidecar::start(&dir, "instance", &[]);
    assert_eq!(
        advertised(&instance.socket()).await,
        vec![
            ServiceType::WalService as i32,
            ServiceType::BackupService as i32,
            ServiceType::Metrics as i32
        ]
    );
    let restore_dir = TestDir::new("cnpg-roles-r");
    let restore = Sidecar::start(&restore_dir, "restore", &[]);
    assert_eq!(
        advertised(&restore.socket()).await,
        vec![
            ServiceType::RestoreJob as i32,
            ServiceType::WalService as i32
        ]
    );
    // A Cluster with no recovery source: refused, saying what is missing.
    let ch = pitr_cnpg::socket::connect(&restore.socket()).await.unwrap();
    let e = RestoreJobHooksClient::new(ch)
        .restore(RestoreRequest {
            cluster_definition: br#"{"metadata": {"name": "x"}, "spec": {}}"#.to_vec(),
            check_empty_wal_archive: Some(true),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("spec.bootstrap.recovery.source"),
        "{}",
        e.message()
    );
}
