//! Byte-level mode: every connection is piped to the upstream, and rules
//! break chosen connections after a byte count in one direction. TLS
//! passes through, so this sits in front of RGW's HTTPS endpoint.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::rst::linger_zero;
use crate::shared::{Budget, Runner, Shared, Stats};

/// A direction of traffic: `Up` is client -> upstream (request bodies,
/// a PUT's data), `Down` upstream -> client (answers, a GET's body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Up,
    Down,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Up => "up",
            Dir::Down => "down",
        }
    }
}

/// What a rule does to a connection.
#[derive(Debug, Clone, Copy)]
pub enum TcpFault {
    /// Accept the connection and reset it at once (a refused connection
    /// as a client behind a firewall or a dying server sees it).
    Refuse,
    /// Forward `after` bytes in `dir`, then reset both sides (RST).
    Reset { dir: Dir, after: u64 },
    /// Forward `after` bytes in `dir`, then close both sides (FIN): a
    /// body cut short.
    Cut { dir: Dir, after: u64 },
    /// Forward `after` bytes in `dir`, then hold that direction for `time`.
    Stall {
        dir: Dir,
        after: u64,
        time: Duration,
    },
}

/// A fault and how often it fires: each connection that reaches the
/// fault's byte count (or, for `Refuse`, each new connection) is a match.
#[derive(Debug, Clone, Copy)]
pub struct TcpRule {
    pub fault: TcpFault,
    budget: Budget,
}

impl TcpRule {
    /// Fires on the first match only.
    pub fn once(fault: TcpFault) -> TcpRule {
        TcpRule::times(fault, 1)
    }
    /// Fires on the first `n` matches.
    pub fn times(fault: TcpFault, n: u32) -> TcpRule {
        TcpRule {
            fault,
            budget: Budget {
                skip: 0,
                times: Some(n),
            },
        }
    }
    /// Fires on every match.
    pub fn always(fault: TcpFault) -> TcpRule {
        TcpRule {
            fault,
            budget: Budget {
                skip: 0,
                times: None,
            },
        }
    }
    /// Lets the first `n` matches pass before firing.
    pub fn after_matches(mut self, n: u32) -> TcpRule {
        self.budget.skip = n;
        self
    }
}

/// Traffic shaping for every new connection: latency per direction (each
/// chunk is delivered that long after it was read, without slowing the
/// stream: a round trip is `up + down`), and a bandwidth cap per
/// connection and direction, as WAN links and object stores have.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shaping {
    pub latency_up: Duration,
    pub latency_down: Duration,
    /// Bytes per second per connection and direction (`None`: no cap).
    pub bandwidth: Option<u64>,
}

struct Ctl {
    rules: Mutex<Vec<TcpRule>>,
    shaping: Mutex<Shaping>,
    shared: Shared,
    listening: watch::Sender<bool>,
}

impl Ctl {
    /// The first rule `pick` selects whose budget fires now.
    fn take(&self, pick: impl Fn(&TcpFault) -> bool) -> Option<TcpFault> {
        let mut rules = self.rules.lock().unwrap();
        for r in rules.iter_mut() {
            if pick(&r.fault) && r.budget.take() {
                return Some(r.fault);
            }
        }
        None
    }
}

/// A running TCP proxy; stops when dropped.
pub struct TcpProxy {
    port: u16,
    ctl: Arc<Ctl>,
    _runner: Runner,
}

/// `host:port` of a URL such as `https://127.0.0.1:7480/` (or of a bare
/// `host:port`).
pub(crate) fn host_port(url: &str) -> String {
    let rest = url.split("://").last().unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_string()
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`
    /// (`host:port` or a URL).
    pub fn start(upstream: &str) -> TcpProxy {
        TcpProxy::start_on("127.0.0.1:0", upstream)
    }

    /// As [`TcpProxy::start`], on a chosen address.
    pub fn start_on(listen: &str, upstream: &str) -> TcpProxy {
        let std_listener = std::net::TcpListener::bind(listen)
            .unwrap_or_else(|e| panic!("fault-proxy: cannot listen on {listen}: {e}"));
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (listening, _) = watch::channel(true);
        let ctl = Arc::new(Ctl {
            rules: Mutex::new(Vec::new()),
            shaping: Mutex::new(Shaping::default()),
            shared: Shared::default(),
            listening,
        });
        ctl.shared.update(|s| s.listening = true);
        let upstream = host_port(upstream);
        let c = ctl.clone();
        let runner = Runner::spawn(move || accept_loop(std_listener, addr, upstream, c));
        TcpProxy {
            port: addr.port(),
            ctl,
            _runner: runner,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `scheme://127.0.0.1:port`: the endpoint to give pitr.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn add(&self, rule: TcpRule) {
        self.ctl.rules.lock().unwrap().push(rule);
    }

    /// Drops every rule (connections already broken stay broken).
    pub fn clear(&self) {
        self.ctl.rules.lock().unwrap().clear();
    }

    /// Shaping for connections accepted from now on.
    pub fn shape(&self, s: Shaping) {
        *self.ctl.shaping.lock().unwrap() = s;
    }

    /// Closes the listening socket: new connections are refused by the
    /// kernel (ECONNREFUSED) until [`TcpProxy::resume_listening`]. Returns
    /// once the socket is closed.
    pub fn stop_listening(&self) {
        self.set_listening(false);
    }

    pub fn resume_listening(&self) {
        self.set_listening(true);
    }

    fn set_listening(&self, on: bool) {
        self.ctl.listening.send_replace(on);
        self.ctl
            .shared
            .wait_for("the listener to change", Duration::from_secs(10), |s| {
                s.listening == on
            });
    }

    pub fn stats(&self) -> Stats {
        self.ctl.shared.snapshot()
    }

    /// Blocks until `pred` holds for the counters (panics after `timeout`).
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Stats) -> bool) -> Stats {
        self.ctl.shared.wait_for(what, timeout, pred)
    }
}

async fn accept_loop(
    std_listener: std::net::TcpListener,
    addr: SocketAddr,
    upstream: String,
    ctl: Arc<Ctl>,
) {
    let mut listener = Some(TcpListener::from_std(std_listener).expect("tokio listener"));
    let mut listening = ctl.listening.subscribe();
    let mut n = 0u64;
    loop {
        let Some(l) = &listener else {
            let _ = listening.wait_for(|on| *on).await;
            listener = Some(rebind(addr).await);
            ctl.shared.update(|s| s.listening = true);
            continue;
        };
        tokio::select! {
            accepted = l.accept() => {
                let Ok((client, _)) = accepted else { continue };
                n += 1;
                ctl.shared.update(|s| s.connections += 1);
                tokio::task::spawn_local(serve(client, n, upstream.clone(), ctl.clone()));
            }
            _ = listening.wait_for(|on| !*on) => {
                listener = None;
                ctl.shared.update(|s| s.listening = false);
            }
        }
    }
}

async fn rebind(addr: SocketAddr) -> TcpListener {
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn serve(client: TcpStream, n: u64, upstream: String, ctl: Arc<Ctl>) {
    let client_fd = client.as_raw_fd();
    if ctl.take(|f| matches!(f, TcpFault::Refuse)).is_some() {
        linger_zero(client_fd);
        drop(client);
        ctl.shared
            .fault(format!("refused connection {n} (reset at accept)"));
        return;
    }
    let Ok(up) = TcpStream::connect(&upstream).await else {
        linger_zero(client_fd);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let fds = [client_fd, up.as_raw_fd()];
    let shaping = *ctl.shaping.lock().unwrap();
    let (cr, cw) = client.into_split();
    let (ur, uw) = up.into_split();
    let (kill, _) = watch::channel(false);
    let link = Link {
        conn: n,
        fds,
        kill,
        ctl: ctl.clone(),
    };
    tokio::join!(
        pump(
            cr,
            uw,
            Dir::Up,
            shaping.latency_up,
            shaping.bandwidth,
            &link
        ),
        pump(
            ur,
            cw,
            Dir::Down,
            shaping.latency_down,
            shaping.bandwidth,
            &link
        ),
    );
}

/// What both directions of one connection share.
struct Link {
    conn: u64,
    fds: [RawFd; 2],
    kill: watch::Sender<bool>,
    ctl: Arc<Ctl>,
}

enum Item {
    Data(Instant, Vec<u8>),
    Stall(Duration),
    Reset(String),
    Cut(String),
    Eof,
}

/// One direction: a reader that applies the rules, and a writer that
/// delivers in order, late by the latency and no faster than the cap.
async fn pump(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    dir: Dir,
    latency: Duration,
    bandwidth: Option<u64>,
    link: &Link,
) {
    let (tx, mut rx) = mpsc::channel::<Item>(64);
    let reader = async {
        let mut killed = link.kill.subscribe();
        let mut seen = 0u64;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = tokio::select! {
                r = r.read(&mut buf) => r.unwrap_or(0),
                _ = killed.wait_for(|k| *k) => return,
            };
            if n == 0 {
                let _ = tx.send(Item::Eof).await;
                return;
            }
            let due = Instant::now() + latency;
            let end = seen + n as u64;
            let fault = link.ctl.take(|f| match *f {
                TcpFault::Reset { dir: d, after }
                | TcpFault::Cut { dir: d, after }
                | TcpFault::Stall { dir: d, after, .. } => d == dir && after >= seen && after < end,
                TcpFault::Refuse => false,
            });
            let Some(fault) = fault else {
                seen = end;
                if tx.send(Item::Data(due, buf[..n].to_vec())).await.is_err() {
                    return;
                }
                continue;
            };
            let (after, what) = match fault {
                TcpFault::Reset { after, .. } => (after, "reset"),
                TcpFault::Cut { after, .. } => (after, "cut"),
                TcpFault::Stall { after, .. } => (after, "stalled"),
                TcpFault::Refuse => unreachable!(),
            };
            let split = (after - seen) as usize;
            let desc = format!(
                "{what} connection {} after {after} bytes {}",
                link.conn,
                dir.name()
            );
            if split > 0 {
                let _ = tx.send(Item::Data(due, buf[..split].to_vec())).await;
            }
            match fault {
                TcpFault::Stall { time, .. } => {
                    link.ctl.shared.fault(format!("{desc} for {time:?}"));
                    let _ = tx.send(Item::Stall(time)).await;
                    let _ = tx.send(Item::Data(due, buf[split..n].to_vec())).await;
                    seen = end;
                }
                TcpFault::Reset { .. } => {
                    let _ = tx.send(Item::Reset(desc)).await;
                    return;
                }
                _ => {
                    let _ = tx.send(Item::Cut(desc)).await;
                    return;
                }
            }
        }
    };
    let writer = async {
        let mut killed = link.kill.subscribe();
        let mut next = Instant::now();
        loop {
            let item = tokio::select! {
                i = rx.recv() => i,
                _ = killed.wait_for(|k| *k) => None,
            };
            match item {
                Some(Item::Data(due, bytes)) => {
                    tokio::time::sleep_until(due).await;
                    if w.write_all(&bytes).await.is_err() {
                        link.kill.send_replace(true);
                        break;
                    }
                    let len = bytes.len() as u64;
                    link.ctl.shared.update(|s| match dir {
                        Dir::Up => s.bytes_up += len,
                        Dir::Down => s.bytes_down += len,
                    });
                    if let Some(rate) = bandwidth.filter(|r| *r > 0) {
                        next = next.max(Instant::now() - Duration::from_millis(50))
                            + Duration::from_secs_f64(len as f64 / rate as f64);
                        tokio::time::sleep_until(next).await;
                    }
                }
                Some(Item::Stall(t)) => {
                    tokio::select! {
                        _ = tokio::time::sleep(t) => {}
                        _ = killed.wait_for(|k| *k) => break,
                    }
                }
                Some(Item::Reset(what)) => {
                    for fd in link.fds {
                        linger_zero(fd);
                    }
                    link.ctl.shared.fault(what);
                    link.kill.send_replace(true);
                    break;
                }
                Some(Item::Cut(what)) => {
                    link.ctl.shared.fault(what);
                    let _ = w.shutdown().await;
                    link.kill.send_replace(true);
                    return;
                }
                Some(Item::Eof) => {
                    let _ = w.shutdown().await;
                    return;
                }
                None => break,
            }
        }
        // Killed: close without a FIN of our own (a reset stays a reset).
        w.forget();
    };
    tokio::join!(reader, writer);
}
