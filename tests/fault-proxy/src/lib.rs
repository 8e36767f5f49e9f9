//! A fault-injecting proxy for pitr's tests and bench scripts: it sits
//! between pitr and Ceph RGW and, on a rule's cue, breaks the traffic the
//! way real networks and stores do.
//!
//! - [`TcpProxy`]: byte-level, in front of RGW's HTTPS endpoint (TLS passes
//!   through untouched). Resets a connection (RST), stalls it, cuts one
//!   direction after N bytes, refuses connections, adds latency or a
//!   bandwidth cap per connection.
//! - [`HttpProxy`]: request-aware, in front of RGW's plain-HTTP endpoint.
//!   Answers chosen requests (by method, path substring, count) with an S3
//!   error (503 SlowDown, 500 InternalError), delays them, resets them, or
//!   forwards them and drops the answer.
//!
//! Both run on their own thread and are driven from synchronous tests
//! through a handle: rules are added before the command runs, and
//! [`Stats`] counts what happened (connections, requests, faults injected)
//! so that a test asserts the fault really fired, and can wait for an
//! event ([`TcpProxy::wait_for`]) instead of sleeping.

mod http;
mod rst;
mod shared;
mod tcp;

pub use http::{HttpAction, HttpProxy, HttpRule};
pub use shared::Stats;
pub use tcp::{Dir, Shaping, TcpFault, TcpProxy, TcpRule};
