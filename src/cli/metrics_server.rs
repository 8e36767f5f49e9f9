//! `pitr metrics --listen ADDR`: an HTTP/1 server (hyper) with `/metrics`
//! (the text exposition) and `/healthz`. A background task reads every
//! server's repository once per interval; a scrape only encodes the last
//! snapshots (ages against the scrape's time), so scrapes never reach the
//! store, however often they come.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info};

use super::metrics::{refresh, render, Target};
use pitr::metrics::{exposition, Snapshot};

/// The last snapshot of each server (None until its first read ends).
type Shared = Arc<Mutex<Vec<Option<Snapshot>>>>;

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn answer(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return response(StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n".into());
    }
    let snaps = shared.lock().expect("metrics snapshots lock").clone();
    match req.uri().path() {
        "/metrics" => {
            let ready: Vec<Snapshot> = snaps.into_iter().flatten().collect();
            response(StatusCode::OK, exposition::CONTENT_TYPE, render(&ready))
        }
        "/healthz" => {
            if snaps.iter().all(Option::is_some) {
                response(StatusCode::OK, TEXT, "ok\n".into())
            } else {
                response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    "the first read of the repositories has not finished\n".into(),
                )
            }
        }
        "/" => response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<html><body><a href=\"/metrics\">/metrics</a> <a href=\"/healthz\">/healthz</a></body></html>\n"
                .into(),
        ),
        _ => response(StatusCode::NOT_FOUND, TEXT, "not found: /metrics or /healthz\n".into()),
    }
}

/// Reads every target now and then every `interval`, forever.
async fn refresher(targets: Vec<Target>, shared: Shared, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (i, t) in targets.iter().enumerate() {
            let previous = shared.lock().expect("metrics snapshots lock")[i].clone();
            let snap = refresh(t, previous.as_ref()).await;
            shared.lock().expect("metrics snapshots lock")[i] = Some(snap);
        }
        debug!("metrics: {} repositories read", targets.len());
    }
}

/// Serves until the process is stopped; errors only when `addr` cannot
/// be listened on.
pub async fn serve(addr: &str, targets: Vec<Target>, interval: Duration) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    info!(
        "serving metrics of {} on http://{}/metrics, read every {interval:?}",
        targets
            .iter()
            .map(|t| t.server.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        listener.local_addr()?
    );
    let shared: Shared = Arc::new(Mutex::new(vec![None; targets.len()]));
    tokio::spawn(refresher(targets, shared.clone(), interval));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                debug!("metrics: accept failed: {e}");
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = answer(&req, &shared);
                async move { Ok::<_, Infallible>(r) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!("metrics: connection ended: {e}");
            }
        });
    }
}
