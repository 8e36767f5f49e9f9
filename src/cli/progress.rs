//! Backup progress: a bar (bytes, rate, ETA) when stderr is a terminal,
//! periodic log lines otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

use pitr::backup::take::Progress;

pub enum Reporter {
    Bar(ProgressBar),
    Log(Mutex<LogState>),
}

pub struct LogState {
    total: u64,
    started: Instant,
    last: Instant,
}

const LOG_EVERY: Duration = Duration::from_secs(10);

impl Reporter {
    pub fn new() -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {bytes}/{total_bytes} [{bar:30}] {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            Reporter::Bar(bar)
        } else {
            let now = Instant::now();
            Reporter::Log(Mutex::new(LogState {
                total: 0,
                started: now,
                last: now,
            }))
        }
    }

    pub fn finish(&self) {
        if let Reporter::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Reporter {
    fn total(&self, bytes: u64) {
        match self {
            Reporter::Bar(bar) => bar.set_length(bytes),
            Reporter::Log(s) => s.lock().unwrap().total = bytes,
        }
    }

    fn advance(&self, done: u64) {
        match self {
            Reporter::Bar(bar) => bar.set_position(done),
            Reporter::Log(s) => {
                let mut s = s.lock().unwrap();
                if s.last.elapsed() >= LOG_EVERY {
                    s.last = Instant::now();
                    let secs = s.started.elapsed().as_secs_f64().max(0.001);
                    let rate = done as f64 / secs / (1 << 20) as f64;
                    let pct = if s.total > 0 {
                        done as f64 * 100.0 / s.total as f64
                    } else {
                        0.0
                    };
                    info!(
                        done_bytes = done,
                        total_bytes = s.total,
                        "backup progress: {pct:.0}% at {rate:.1} MiB/s"
                    );
                }
            }
        }
    }

    fn phase(&self, what: &str) {
        match self {
            Reporter::Bar(bar) => bar.set_message(what.to_string()),
            Reporter::Log(_) => info!("backup: {what}"),
        }
    }
}
