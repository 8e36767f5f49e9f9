//! The fault proxy as a program, for bench scripts (bench/restore-jobs.sh,
//! bench/soak.sh): a TCP proxy with latency, a bandwidth cap, and a reset
//! every few seconds. Runs until killed.
//!
//!     fault-proxy --upstream https://127.0.0.1:7480 [--listen 127.0.0.1:0]
//!                 [--rtt-ms N] [--bandwidth BYTES_PER_S]
//!                 [--reset-every SECS] [--reset-after-bytes N]
//!                 [--stats FILE]
//!
//! Prints `listening 127.0.0.1:PORT` on its first line; with --stats,
//! rewrites FILE every second with `connections=N faults=N bytes_up=N
//! bytes_down=N`.

use std::io::Write;
use std::time::{Duration, Instant};

use fault_proxy::{Dir, Shaping, TcpFault, TcpProxy, TcpRule};

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut upstream) = ("127.0.0.1:0".to_string(), None);
    let (mut rtt_ms, mut bandwidth, mut reset_every, mut reset_after) =
        (0u64, None, None, 16384u64);
    let mut stats_file = None;
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--listen" => listen = value(),
            "--upstream" => upstream = Some(value()),
            "--rtt-ms" => rtt_ms = num(&value()),
            "--bandwidth" => bandwidth = Some(num(&value())),
            "--reset-every" => reset_every = Some(num(&value())),
            "--reset-after-bytes" => reset_after = num(&value()),
            "--stats" => stats_file = Some(value()),
            other => die(&format!("unknown argument {other}")),
        }
    }
    let upstream = upstream.unwrap_or_else(|| die("--upstream URL is required"));
    let proxy = TcpProxy::start_on(&listen, &upstream);
    let half = Duration::from_millis(rtt_ms) / 2;
    proxy.shape(Shaping {
        latency_up: half,
        latency_down: half,
        bandwidth,
    });
    println!("listening 127.0.0.1:{}", proxy.port());
    std::io::stdout().flush().ok();
    let start = Instant::now();
    let mut armed = 0u64;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if let Some(every) = reset_every.filter(|e| *e > 0) {
            let due = start.elapsed().as_secs() / every;
            while armed < due {
                armed += 1;
                // Alternate directions: a request body, then an answer.
                let dir = if armed.is_multiple_of(2) {
                    Dir::Up
                } else {
                    Dir::Down
                };
                // At most one reset pending: one that found no connection
                // long enough is replaced, not saved up for a burst.
                proxy.clear();
                proxy.add(TcpRule::once(TcpFault::Reset {
                    dir,
                    after: reset_after,
                }));
            }
        }
        if let Some(f) = &stats_file {
            let s = proxy.stats();
            let line = format!(
                "connections={} faults={} bytes_up={} bytes_down={}\n",
                s.connections, s.faults, s.bytes_up, s.bytes_down
            );
            let tmp = format!("{f}.tmp");
            if std::fs::write(&tmp, line).is_ok() {
                let _ = std::fs::rename(&tmp, f);
            }
        }
    }
}

fn num(v: &str) -> u64 {
    v.parse()
        .unwrap_or_else(|_| die(&format!("'{v}' is not a number")))
}

fn die(msg: &str) -> ! {
    eprintln!("fault-proxy: {msg}");
    std::process::exit(2)
}
