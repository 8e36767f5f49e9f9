//! Request-aware mode, in front of a plain-HTTP S3 endpoint: reads each
//! request's head, matches it against the rules, and either answers it
//! with an S3 error, delays it, resets it, or forwards it. One request per
//! connection (the proxy answers `Connection: close`), which keeps the
//! forwarding a plain byte copy.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::rst::linger_zero;
use crate::shared::{Budget, Runner, Shared, Stats};
use crate::tcp::host_port;

/// What a matching request gets.
#[derive(Debug, Clone)]
pub enum HttpAction {
    /// `503 Slow Down` with S3's `SlowDown` error body.
    SlowDown,
    /// `500 Internal Server Error` with S3's `InternalError` error body.
    InternalError,
    /// Any status with an S3 error body of this code and message.
    Error {
        status: u16,
        code: String,
        message: String,
    },
    /// Forward the request this much later.
    Delay(Duration),
    /// Reset the connection once the request head is read.
    Reset,
    /// Forward the request, let the store do it, then reset the
    /// connection instead of delivering the answer (an answer lost on the
    /// way back: the store has done what the client thinks failed).
    DropResponse,
    /// Forward the request, deliver the answer's head and the first N
    /// bytes of its body, then close the connection: a body cut short.
    CutBodyAfter(u64),
}

/// Which requests a rule applies to, and how often it fires.
#[derive(Debug, Clone)]
pub struct HttpRule {
    /// Only this method (`PUT`, `GET`, ...), if set.
    pub method: Option<String>,
    /// Only requests whose path and query contain this, if set.
    pub path_contains: Option<String>,
    pub action: HttpAction,
    budget: Budget,
}

impl HttpRule {
    /// A rule for every request, firing once; narrow it with
    /// [`HttpRule::method`] and [`HttpRule::path`].
    pub fn once(action: HttpAction) -> HttpRule {
        HttpRule::times(action, 1)
    }
    pub fn times(action: HttpAction, n: u32) -> HttpRule {
        HttpRule {
            method: None,
            path_contains: None,
            action,
            budget: Budget {
                skip: 0,
                times: Some(n),
            },
        }
    }
    pub fn always(action: HttpAction) -> HttpRule {
        HttpRule {
            budget: Budget {
                skip: 0,
                times: None,
            },
            ..HttpRule::once(action)
        }
    }
    pub fn method(mut self, m: &str) -> HttpRule {
        self.method = Some(m.to_string());
        self
    }
    pub fn path(mut self, s: &str) -> HttpRule {
        self.path_contains = Some(s.to_string());
        self
    }
    /// Lets the first `n` matching requests pass before firing.
    pub fn after_matches(mut self, n: u32) -> HttpRule {
        self.budget.skip = n;
        self
    }
    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
    }
}

struct Ctl {
    rules: Mutex<Vec<HttpRule>>,
    shared: Shared,
}

/// A running HTTP proxy; stops when dropped.
pub struct HttpProxy {
    port: u16,
    ctl: Arc<Ctl>,
    _runner: Runner,
}

impl HttpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`
    /// (`http://host:port` or `host:port`).
    pub fn start(upstream: &str) -> HttpProxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let ctl = Arc::new(Ctl {
            rules: Mutex::new(Vec::new()),
            shared: Shared::default(),
        });
        let upstream = host_port(upstream);
        let c = ctl.clone();
        let runner = Runner::spawn(move || async move {
            let listener = TcpListener::from_std(std_listener).expect("tokio listener");
            let mut n = 0u64;
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                n += 1;
                c.shared.update(|s| s.connections += 1);
                tokio::task::spawn_local(serve(client, n, upstream.clone(), c.clone()));
            }
        });
        HttpProxy {
            port,
            ctl,
            _runner: runner,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:port`: the endpoint to give pitr.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn add(&self, rule: HttpRule) {
        self.ctl.rules.lock().unwrap().push(rule);
    }

    pub fn clear(&self) {
        self.ctl.rules.lock().unwrap().clear();
    }

    pub fn stats(&self) -> Stats {
        self.ctl.shared.snapshot()
    }

    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Stats) -> bool) -> Stats {
        self.ctl.shared.wait_for(what, timeout, pred)
    }
}

/// A request or response head, and the bytes read past it.
struct Head {
    lines: Vec<String>,
    rest: Vec<u8>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.lines.iter().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The head again, without the named headers, with `Connection: close`.
    fn rewritten(&self, drop: &[&str]) -> Vec<u8> {
        let mut out = String::new();
        for (i, l) in self.lines.iter().enumerate() {
            let name = l.split(':').next().unwrap_or("").trim();
            if i > 0 && drop.iter().any(|d| d.eq_ignore_ascii_case(name)) {
                continue;
            }
            out.push_str(l);
            out.push_str("\r\n");
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }
}

async fn read_head(r: &mut (impl AsyncRead + Unpin)) -> Option<Head> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Some(Head {
                lines: text.split("\r\n").map(str::to_string).collect(),
                rest: buf[end + 4..].to_vec(),
            });
        }
        let n = r.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn error_body(code: &str, message: &str, resource: &str, n: u64) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><Resource>{resource}</Resource>\
         <RequestId>fault-proxy-{n}</RequestId></Error>"
    )
}

fn reason(status: u16) -> &'static str {
    match status {
        500 => "Internal Server Error",
        503 => "Slow Down",
        429 => "Too Many Requests",
        _ => "Error",
    }
}

async fn serve(mut client: TcpStream, n: u64, upstream: String, ctl: Arc<Ctl>) {
    let _ = client.set_nodelay(true);
    let Some(head) = read_head(&mut client).await else {
        return;
    };
    let first = head.lines[0].clone();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    ctl.shared.update(|s| s.requests += 1);
    let action = {
        let mut rules = ctl.rules.lock().unwrap();
        rules
            .iter_mut()
            .find_map(|r| (r.matches(&method, &path) && r.budget.take()).then(|| r.action.clone()))
    };
    let body_len: u64 = head
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let what = format!("{method} {path}");
    let (status, code, message) = match action {
        None => return forward(client, head, body_len, &upstream, &ctl, None).await,
        Some(HttpAction::Delay(d)) => {
            ctl.shared.fault(format!("delayed {what} by {d:?}"));
            tokio::time::sleep(d).await;
            return forward(client, head, body_len, &upstream, &ctl, None).await;
        }
        Some(HttpAction::Reset) => {
            linger_zero(client.as_raw_fd());
            ctl.shared.fault(format!("reset {what}"));
            return;
        }
        Some(HttpAction::DropResponse) => {
            let what = format!("dropped the answer to {what}");
            let cut = Some((what, None));
            return forward(client, head, body_len, &upstream, &ctl, cut).await;
        }
        Some(HttpAction::CutBodyAfter(n)) => {
            let what = format!("cut the answer to {what} after {n} body bytes");
            let cut = Some((what, Some(n)));
            return forward(client, head, body_len, &upstream, &ctl, cut).await;
        }
        Some(HttpAction::SlowDown) => (
            503,
            "SlowDown".to_string(),
            "Please reduce your request rate.".to_string(),
        ),
        Some(HttpAction::InternalError) => (
            500,
            "InternalError".to_string(),
            "We encountered an internal error. Please try again.".to_string(),
        ),
        Some(HttpAction::Error {
            status,
            code,
            message,
        }) => (status, code, message),
    };
    // Read the body the client sends (so it sees the answer, not a reset).
    let mut left = body_len.saturating_sub(head.rest.len() as u64);
    let mut sink = vec![0u8; 64 << 10];
    while left > 0 {
        match client.read(&mut sink).await {
            Ok(0) | Err(_) => break,
            Ok(k) => left = left.saturating_sub(k as u64),
        }
    }
    let key = path.split('?').next().unwrap_or("");
    let body = error_body(&code, &message, key, n);
    let mut answer = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         x-amz-request-id: fault-proxy-{n}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    if method != "HEAD" {
        answer.push_str(&body);
    }
    ctl.shared.fault(format!("{status} {code} to {what}"));
    let _ = client.write_all(answer.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// Sends the request upstream on a connection of its own and copies the
/// answer back; with `cut`, resets the client once the store has answered,
/// or, given a byte count, delivers the head and that many body bytes and
/// closes.
async fn forward(
    mut client: TcpStream,
    head: Head,
    body_len: u64,
    upstream: &str,
    ctl: &Ctl,
    cut: Option<(String, Option<u64>)>,
) {
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        linger_zero(client.as_raw_fd());
        return;
    };
    let _ = up.set_nodelay(true);
    // No 100-continue dance through the proxy: the body follows the head.
    if up
        .write_all(&head.rewritten(&["connection", "expect"]))
        .await
        .is_err()
    {
        return;
    }
    let first = head.rest.len().min(body_len as usize);
    if up.write_all(&head.rest[..first]).await.is_err() {
        return;
    }
    let mut left = body_len - first as u64;
    let mut buf = vec![0u8; 64 << 10];
    while left > 0 {
        let want = buf.len().min(left as usize);
        match client.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => return,
            Ok(k) => {
                if up.write_all(&buf[..k]).await.is_err() {
                    return;
                }
                left -= k as u64;
            }
        }
    }
    ctl.shared.update(|s| s.bytes_up += body_len);
    let Some(answer) = read_head(&mut up).await else {
        linger_zero(client.as_raw_fd());
        return;
    };
    if let Some((what, Some(limit))) = &cut {
        let mut sent = 0u64;
        let mut pending = answer.rest.clone();
        let head_bytes = answer.rewritten(&["connection"]);
        if client.write_all(&head_bytes).await.is_err() {
            return;
        }
        loop {
            let room = (limit - sent) as usize;
            let k = pending.len().min(room);
            if client.write_all(&pending[..k]).await.is_err() {
                return;
            }
            sent += k as u64;
            if sent >= *limit {
                break;
            }
            match up.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => pending = buf[..n].to_vec(),
            }
        }
        // A clean close: every byte sent arrives, then the body ends early.
        let _ = client.shutdown().await;
        ctl.shared.fault(what.clone());
        return;
    }
    if let Some((what, None)) = cut {
        // Let the store finish, then lose its answer.
        let mut rest = Vec::new();
        let _ = up.read_to_end(&mut rest).await;
        linger_zero(client.as_raw_fd());
        ctl.shared.fault(format!(
            "{what} ({})",
            answer.lines.first().cloned().unwrap_or_default()
        ));
        return;
    }
    if client
        .write_all(&answer.rewritten(&["connection"]))
        .await
        .is_err()
    {
        return;
    }
    let mut down = answer.rest.len() as u64;
    if client.write_all(&answer.rest).await.is_err() {
        return;
    }
    loop {
        match up.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                if client.write_all(&buf[..k]).await.is_err() {
                    return;
                }
                down += k as u64;
            }
        }
    }
    ctl.shared.update(|s| s.bytes_down += down);
    let _ = client.shutdown().await;
}
