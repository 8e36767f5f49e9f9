//! The proxy against a local upstream (no S3 needed): each fault does what
//! it says, and is counted.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use fault_proxy::{Dir, HttpAction, HttpProxy, HttpRule, TcpFault, TcpProxy, TcpRule};

/// An upstream that sends `size` bytes to each connection, then closes.
fn sender(size: usize) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                let _ = c.write_all(&vec![7u8; size]);
            });
        }
    });
    addr
}

fn read_all(port: u16) -> (Vec<u8>, Option<ErrorKind>) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return (got, None),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Some(e.kind())),
        }
    }
}

#[test]
fn reset_cut_and_pass_through() {
    let p = TcpProxy::start(&sender(1 << 20));
    p.add(TcpRule::once(TcpFault::Reset {
        dir: Dir::Down,
        after: 100_000,
    }));
    let (got, err) = read_all(p.port());
    assert_eq!(
        err,
        Some(ErrorKind::ConnectionReset),
        "a reset, not a close"
    );
    assert!(got.len() <= 100_000, "{}", got.len());
    assert_eq!(p.stats().faults, 1);

    p.add(TcpRule::once(TcpFault::Cut {
        dir: Dir::Down,
        after: 5000,
    }));
    let (got, err) = read_all(p.port());
    assert_eq!(
        (got.len(), err),
        (5000, None),
        "exactly 5000 bytes, then EOF"
    );

    let (got, err) = read_all(p.port());
    assert_eq!(
        (got.len(), err),
        (1 << 20, None),
        "rules used up: all bytes"
    );
    let s = p.stats();
    assert_eq!((s.faults, s.connections), (2, 3));
}

#[test]
fn refusing_and_stopping_to_listen() {
    let p = TcpProxy::start(&sender(10));
    p.add(TcpRule::once(TcpFault::Refuse));
    let (got, err) = read_all(p.port());
    assert!(
        got.is_empty() && err == Some(ErrorKind::ConnectionReset),
        "{err:?}"
    );
    p.stop_listening();
    let e = TcpStream::connect(("127.0.0.1", p.port())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    p.resume_listening();
    assert_eq!(read_all(p.port()).0.len(), 10);
}

#[test]
fn http_rules_answer_s3_errors() {
    // An upstream answering every request 200 with a small body.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let p = HttpProxy::start(&addr);
    p.add(
        HttpRule::once(HttpAction::SlowDown)
            .method("PUT")
            .path("/b/k"),
    );
    let ask = |req: &str| {
        let mut c = TcpStream::connect(("127.0.0.1", p.port())).unwrap();
        c.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    };
    let get = "GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n";
    let put = "PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
    assert!(ask(get).starts_with("HTTP/1.1 200"), "GET does not match");
    let a = ask(put);
    assert!(a.starts_with("HTTP/1.1 503"), "{a}");
    assert!(a.contains("<Code>SlowDown</Code>"), "{a}");
    assert!(ask(put).ends_with("ok"), "once only");
    let s = p.stats();
    assert_eq!((s.requests, s.faults), (3, 1));
}
