//! `pitr-cnpg`: one binary, one subcommand per role.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{error, warn};

use pitr_cnpg::convert;
use pitr_cnpg::identity::Role;
use pitr_cnpg::lifecycle::Injection;
use pitr_cnpg::operator_tls::{self, TlsFiles};
use pitr_cnpg::proto::identity::identity_client::IdentityClient;
use pitr_cnpg::proto::identity::ProbeRequest;
use pitr_cnpg::repos::Repos;
use pitr_cnpg::settings::SidecarEnv;
use pitr_cnpg::socket;

#[derive(Debug, Parser)]
#[command(
    name = "pitr-cnpg",
    version,
    about = "CNPG-I plugin for CloudNativePG, backed by pitr"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Instance sidecar: WAL archive and restore on the plugin socket
    Instance(SocketArgs),
    /// Recovery Job sidecar: RestoreJobHooks (PGDATA from a pitr backup) and WAL restore
    Restore(SocketArgs),
    /// Operator-side plugin: sidecar injection over TCP with mutual TLS 1.3
    Operator(OperatorArgs),
    /// Translate plugin-barman-cloud ObjectStores and in-tree barmanObjectStore
    /// Clusters (YAML, one or more documents) into pitr.cnpg.io entries
    Convert {
        /// The YAML file, or - for standard input
        #[arg(value_name = "FILE|-")]
        input: String,
    },
    /// Startup probe of a sidecar
    Healthcheck {
        #[command(subcommand)]
        how: Healthcheck,
    },
}

#[derive(Debug, Subcommand)]
enum Healthcheck {
    /// Connect to the plugin socket and call Identity.Probe
    Unix(SocketArgs),
}

#[derive(Debug, clap::Args)]
struct OperatorArgs {
    /// PEM certificate (chain) of this server; re-read for every connection
    #[arg(long, value_name = "FILE")]
    server_cert: PathBuf,
    /// PEM private key of this server; re-read for every connection
    #[arg(long, value_name = "FILE")]
    server_key: PathBuf,
    /// PEM CA(s) client certificates must be signed by (the client Secret's
    /// tls.crt); re-read for every connection
    #[arg(long, alias = "client-cert", value_name = "FILE")]
    client_ca: PathBuf,
    /// Address to listen on
    #[arg(long, default_value = "0.0.0.0:9090", alias = "server-address")]
    listen: String,
    /// Image of the injected sidecar
    #[arg(long, env = "SIDECAR_IMAGE")]
    sidecar_image: String,
}

#[derive(Debug, clap::Args)]
struct SocketArgs {
    /// Directory of CloudNativePG's plugin sockets
    #[arg(long, env = "PLUGIN_PATH", default_value = socket::DEFAULT_PLUGIN_PATH)]
    plugin_path: PathBuf,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PITR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// How long calls in flight may go on after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Runs `serve` until it ends, or until SIGTERM / Ctrl-C: then it stops
/// taking new calls and gets [`SHUTDOWN_GRACE`] to finish the ones in flight
/// (a client that keeps a pooled connection open does not hold it longer).
async fn until_shutdown<F>(
    serve: impl FnOnce(Arc<Notify>) -> F,
) -> Result<(), tonic::transport::Error>
where
    F: std::future::Future<Output = Result<(), tonic::transport::Error>>,
{
    let stop = Arc::new(Notify::new());
    let serving = serve(stop.clone());
    tokio::pin!(serving);
    tokio::select! {
        r = &mut serving => r,
        _ = shutdown_signal() => {
            stop.notify_one();
            match tokio::time::timeout(SHUTDOWN_GRACE, serving).await {
                Ok(r) => r,
                Err(_) => {
                    warn!("calls still in flight {SHUTDOWN_GRACE:?} after the stop signal: exiting");
                    Ok(())
                }
            }
        }
    }
}

async fn run_sidecar(role: Role, args: SocketArgs) -> Result<(), String> {
    let path = socket::socket_path(&args.plugin_path);
    let listener =
        socket::bind(&path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    let repos = Arc::new(Repos::new(SidecarEnv::from_process()));
    let result = until_shutdown(|stop| async move {
        socket::serve(role, listener, repos, async move { stop.notified().await }).await
    })
    .await;
    let _ = std::fs::remove_file(&path);
    result.map_err(|e| format!("serving on {} failed: {e}", path.display()))
}

async fn run_operator(args: OperatorArgs) -> Result<(), String> {
    let files = TlsFiles {
        server_cert: args.server_cert,
        server_key: args.server_key,
        client_ca: args.client_ca,
    };
    // Fail at start on unusable files; later they are re-read per connection.
    files.server_config()?;
    if args.sidecar_image.trim().is_empty() {
        return Err("SIDECAR_IMAGE / --sidecar-image is empty: name the sidecar's image".into());
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let injection = Injection {
        image: args.sidecar_image,
    };
    let listen = args.listen;
    until_shutdown(|stop| async move {
        operator_tls::serve(
            listener,
            files,
            injection,
            async move { stop.notified().await },
        )
        .await
    })
    .await
    .map_err(|e| format!("serving on {listen} failed: {e}"))
}

async fn healthcheck(args: SocketArgs) -> Result<(), String> {
    let path = socket::socket_path(&args.plugin_path);
    let channel = socket::connect(&path)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
    let ready = IdentityClient::new(channel)
        .probe(ProbeRequest {})
        .await
        .map_err(|e| {
            format!(
                "Identity.Probe on {} failed: {}",
                path.display(),
                e.message()
            )
        })?
        .into_inner()
        .ready;
    if ready {
        Ok(())
    } else {
        Err(format!("{} answered Probe: not ready", path.display()))
    }
}

/// `convert`: the entries on stdout (notes as YAML comments), a summary on
/// stderr; an error only when the input cannot be read.
fn convert(input: &str) -> Result<(), String> {
    use std::io::Read;
    let (text, name) = if input == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        (s, "standard input".to_string())
    } else {
        let s = std::fs::read_to_string(input).map_err(|e| format!("cannot read {input}: {e}"))?;
        (s, input.to_string())
    };
    let docs = convert::parse_documents(&text, &name).map_err(|e| e.0)?;
    let conversion = convert::convert(&docs);
    print!("{}", convert::render(&conversion, &name));
    let not_mapped: usize = conversion
        .items
        .iter()
        .map(|i| i.not_mapped().count())
        .sum();
    if conversion.items.is_empty() {
        eprintln!(
            "pitr-cnpg convert: nothing to convert in {name} (no ObjectStore of {} and no \
             Cluster with a Barman store)",
            convert::OBJECT_STORE_GROUP
        );
    } else {
        eprintln!(
            "pitr-cnpg convert: {} entr{} from {name}; {not_mapped} field(s) not mapped, each \
             with its reason in a '# not mapped:' comment",
            conversion.items.len(),
            if conversion.items.len() == 1 {
                "y"
            } else {
                "ies"
            }
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // convert writes YAML to stdout and its summary to stderr: no log lines.
    let is_convert = matches!(cli.command, Command::Convert { .. });
    if !is_convert {
        init_logging();
    }
    let result = match cli.command {
        Command::Convert { input } => convert(&input),
        Command::Instance(a) => run_sidecar(Role::Instance, a).await,
        Command::Restore(a) => run_sidecar(Role::Restore, a).await,
        Command::Operator(a) => run_operator(a).await,
        Command::Healthcheck {
            how: Healthcheck::Unix(a),
        } => healthcheck(a).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_convert => {
            eprintln!("pitr-cnpg convert: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
