//! A PostgreSQL password given on the command line (`-d "... password=X"`,
//! `postgresql://user:X@host`) would be readable by every local user in
//! `ps` and /proc/<pid>/cmdline for as long as pitr runs (a backup: hours).
//! Once pitr has copied its arguments, it overwrites each such password in
//! its own argument memory, which is what `ps` shows, with `x`s. (The short
//! moment between exec and the overwrite remains: PGPASSWORD, a password
//! file or the settings file keep a password out of the arguments entirely.)

/// Overwrites, in `arg` (one command-line argument), the value of each
/// conninfo `password` keyword and the password of a `postgres://` or
/// `postgresql://` URI (also `?password=`), with `x`s of the same length.
/// Returns whether anything was hidden.
pub fn mask_passwords(arg: &mut [u8]) -> bool {
    let mut hidden = false;
    for range in password_ranges(arg) {
        arg[range].fill(b'x');
        hidden = true;
    }
    hidden
}

/// The byte ranges of the passwords in `arg`.
fn password_ranges(arg: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let lower = arg.to_ascii_lowercase();
    // URIs: scheme://user:PASSWORD@host, and ?password=... / &password=...
    for scheme in [&b"postgresql://"[..], b"postgres://"] {
        let mut from = 0;
        while let Some(at) = find(&lower[from..], scheme) {
            let start = from + at + scheme.len();
            let end = arg[start..]
                .iter()
                .position(|b| matches!(b, b'/' | b'?' | b' '))
                .map_or(arg.len(), |p| start + p);
            let authority = &arg[start..end];
            if let Some(at_sign) = authority.iter().rposition(|b| *b == b'@') {
                if let Some(colon) = authority[..at_sign].iter().position(|b| *b == b':') {
                    out.push(start + colon + 1..start + at_sign);
                }
            }
            from = end.max(start);
        }
    }
    // password=... as a conninfo keyword, or a URI parameter.
    let key = b"password";
    let mut from = 0;
    while let Some(at) = find(&lower[from..], key) {
        let k = from + at;
        from = k + key.len();
        let boundary = k == 0 || matches!(arg[k - 1], b' ' | b'\t' | b'\n' | b'?' | b'&');
        if !boundary {
            continue;
        }
        let mut i = k + key.len();
        while i < arg.len() && matches!(arg[i], b' ' | b'\t') {
            i += 1;
        }
        if i >= arg.len() || arg[i] != b'=' {
            continue;
        }
        i += 1;
        while i < arg.len() && matches!(arg[i], b' ' | b'\t') {
            i += 1;
        }
        let (start, end) = if arg.get(i) == Some(&b'\'') {
            // A quoted value: up to the closing quote; \' and \\ escape.
            let start = i + 1;
            let mut j = start;
            while j < arg.len() && arg[j] != b'\'' {
                j += if arg[j] == b'\\' { 2 } else { 1 };
            }
            (start, j.min(arg.len()))
        } else {
            let end = arg[i..]
                .iter()
                .position(|b| matches!(b, b' ' | b'\t' | b'\n' | b'&'))
                .map_or(arg.len(), |p| i + p);
            (i, end)
        };
        if end > start {
            out.push(start..end);
        }
        from = end.max(from);
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod process_args {
    use std::ffi::{c_char, c_int};
    use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

    static ARGC: AtomicUsize = AtomicUsize::new(0);
    static ARGV: AtomicPtr<*mut c_char> = AtomicPtr::new(std::ptr::null_mut());

    /// glibc calls the functions in `.init_array` with the process's own
    /// argc and argv (the memory `ps` reads), before `main`.
    #[used]
    #[link_section = ".init_array"]
    static CAPTURE: extern "C" fn(c_int, *mut *mut c_char, *mut *mut c_char) = capture;

    extern "C" fn capture(argc: c_int, argv: *mut *mut c_char, _env: *mut *mut c_char) {
        ARGC.store(usize::try_from(argc).unwrap_or(0), Ordering::Relaxed);
        ARGV.store(argv, Ordering::Relaxed);
    }

    /// Applies `mask` to every argument, in place.
    pub fn rewrite(mask: impl Fn(&mut [u8]) -> bool) {
        let argv = ARGV.load(Ordering::Relaxed);
        if argv.is_null() {
            return;
        }
        for i in 0..ARGC.load(Ordering::Relaxed) {
            // SAFETY: argv holds argc pointers to NUL-terminated strings
            // that live (and stay writable) for the whole process; nothing
            // else writes them, and their length is unchanged.
            unsafe {
                let p = *argv.add(i);
                if p.is_null() {
                    break;
                }
                let len = libc::strlen(p);
                mask(std::slice::from_raw_parts_mut(p.cast::<u8>(), len));
            }
        }
    }
}

/// Hides the passwords of this process's command line from `ps`. Call it
/// once the arguments have been copied (`std::env::args_os`).
pub fn hide_passwords_from_ps() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    process_args::rewrite(mask_passwords);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(s: &str) -> String {
        let mut b = s.as_bytes().to_vec();
        mask_passwords(&mut b);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn conninfo_passwords_are_hidden_and_nothing_else() {
        assert_eq!(
            masked("host=db password=s3cret dbname=x"),
            "host=db password=xxxxxx dbname=x"
        );
        assert_eq!(
            masked("password = 'a b\\'c' user=u"),
            "password = 'xxxxxx' user=u"
        );
        assert_eq!(masked("PASSWORD=Zz"), "PASSWORD=xx");
        assert_eq!(masked("host=db user=password"), "host=db user=password");
        assert_eq!(masked("mypassword=keep"), "mypassword=keep");
        assert_eq!(masked("password="), "password=");
        assert_eq!(masked("--wal-timeout"), "--wal-timeout");
    }

    #[test]
    fn uri_passwords_are_hidden() {
        assert_eq!(
            masked("postgresql://alice:pw@db:5432/app?sslmode=require"),
            "postgresql://alice:xx@db:5432/app?sslmode=require"
        );
        assert_eq!(masked("postgres://alice@db/app"), "postgres://alice@db/app");
        assert_eq!(
            masked("postgres://db/app?user=a&password=pw2&sslmode=disable"),
            "postgres://db/app?user=a&password=xxx&sslmode=disable"
        );
        assert_eq!(masked("postgres://a:p@ss@db"), "postgres://a:xxxx@db");
    }
}
