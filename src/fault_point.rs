//! Named points where a test can freeze pitr to kill it there (`kill -9`
//! at a chosen stage), in debug builds only; a release build compiles
//! every point to nothing.
//!
//! With `PITR_TEST_STOP_AT=<point>` and `PITR_TEST_STOP_DIR=<dir>` in its
//! environment, the first time a process reaches `<point>` it writes
//! `<dir>/<point>.<pid>` (holding what it was doing) and stops itself with
//! SIGSTOP, every thread at once; the test waits for that file, then sends
//! SIGKILL (or SIGCONT to let it go on).

/// Marks the point `name`; `detail` (a file name, a key) goes into the
/// stop file.
#[inline]
pub fn reached(name: &str, detail: &str) {
    #[cfg(debug_assertions)]
    stop_if_asked(name, detail);
    #[cfg(not(debug_assertions))]
    let _ = (name, detail);
}

#[cfg(debug_assertions)]
fn stop_if_asked(name: &str, detail: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static STOPPED: AtomicBool = AtomicBool::new(false);
    if std::env::var("PITR_TEST_STOP_AT").ok().as_deref() != Some(name) {
        return;
    }
    let Ok(dir) = std::env::var("PITR_TEST_STOP_DIR") else {
        return;
    };
    if STOPPED.swap(true, Ordering::SeqCst) {
        return;
    }
    let pid = std::process::id();
    let path = std::path::Path::new(&dir).join(format!("{name}.{pid}"));
    // A temporary name of this process's own: processes stopping at the
    // same point at once must not take each other's file.
    let temp = std::path::Path::new(&dir).join(format!(".{name}.{pid}.tmp"));
    if std::fs::write(&temp, detail).is_ok() && std::fs::rename(&temp, &path).is_ok() {
        // SAFETY: raise() only sends a signal to this process.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}
