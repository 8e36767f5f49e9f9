//! What both proxies count, shared between the proxy thread and the test.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Counters a test reads after (or waits on during) a command.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Connections accepted (including those then refused or reset).
    pub connections: u64,
    /// HTTP requests read from clients (HTTP mode only).
    pub requests: u64,
    /// Faults injected, of any kind.
    pub faults: u64,
    /// Bytes forwarded client -> upstream and upstream -> client.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Whether the TCP proxy's listening socket is open.
    pub listening: bool,
    /// One line per fault injected, in order ("reset connection 3 after
    /// 1048576 bytes up", "503 SlowDown to PUT /bucket/key").
    pub events: Vec<String>,
}

#[derive(Clone, Default)]
pub(crate) struct Shared {
    inner: Arc<(Mutex<Stats>, Condvar)>,
}

impl Shared {
    pub fn update(&self, f: impl FnOnce(&mut Stats)) {
        let (m, c) = &*self.inner;
        f(&mut m.lock().unwrap());
        c.notify_all();
    }

    pub fn fault(&self, what: String) {
        eprintln!("fault-proxy: {what}");
        self.update(|s| {
            s.faults += 1;
            s.events.push(what);
        });
    }

    pub fn snapshot(&self) -> Stats {
        self.inner.0.lock().unwrap().clone()
    }

    /// Blocks until `pred` holds, or panics naming `what` after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Stats) -> bool) -> Stats {
        let (m, c) = &*self.inner;
        let deadline = Instant::now() + timeout;
        let mut s = m.lock().unwrap();
        while !pred(&s) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "fault-proxy: timed out waiting for {what}: {s:?}"
            );
            s = c.wait_timeout(s, left).unwrap().0;
        }
        s.clone()
    }
}

/// A rule's budget: let `skip` matches pass, then fire `times` times
/// (`None`: every time).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub skip: u32,
    pub times: Option<u32>,
}

impl Budget {
    /// Whether this match fires, consuming the budget.
    pub fn take(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        match &mut self.times {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }
}

/// The thread a proxy runs on, stopped when the handle is dropped.
pub(crate) struct Runner {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Runner {
    pub fn spawn<F>(make: impl FnOnce() -> F + Send + 'static) -> Runner
    where
        F: std::future::Future<Output = ()> + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("fault-proxy runtime");
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                tokio::select! {
                    _ = make() => {}
                    _ = rx => {}
                }
            });
        });
        Runner {
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
