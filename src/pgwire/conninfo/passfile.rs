//! Who is connecting and with which password when none is given: the
//! operating-system user name, and the password file (`~/.pgpass`) looked
//! up as libpq does.

use std::path::Path;

use super::Host;
use crate::config::Secret;

/// The operating-system user name (as libpq: the password database entry of
/// the effective user), else `$USER` / `$LOGNAME`.
pub(super) fn os_user_name(env: &impl Fn(&str) -> Option<String>) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok().map(|m| m.uid());
    let from_passwd = uid.and_then(|uid| {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?;
            let _pw = f.next()?;
            (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_string())
        })
    });
    from_passwd
        .or_else(|| env("USER"))
        .or_else(|| env("LOGNAME"))
        .filter(|u| !u.is_empty())
}

/// Looks the password up in a libpq password file
/// (`hostname:port:database:username:password`, `*` matches anything, `\`
/// escapes `:` and `\`). Unix sockets match `localhost`, as in libpq; a
/// physical replication connection without a database matches
/// `replication`. A file readable by group or others is ignored, as libpq
/// does.
pub(super) fn passfile_lookup(
    file: &Path,
    host: &Host,
    port: u16,
    dbname: Option<&str>,
    user: &str,
) -> Option<Secret> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "password file \"{}\" has group or world access; permissions should be u=rw (0600) \
             or less: ignoring it",
            file.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let host = match host {
        Host::Tcp(h) => h.as_str(),
        Host::Unix(_) => "localhost",
    };
    let port = port.to_string();
    let want = [host, port.as_str(), dbname.unwrap_or("replication"), user];
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = split_passfile_line(line);
            if fields.len() < 5 {
                return None;
            }
            let matches = want.iter().zip(&fields).all(|(w, f)| f == "*" || f == w);
            matches.then(|| Secret::new(fields[4..].join(":")))
        })
}

pub(super) fn split_passfile_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("non-empty").push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("non-empty").push(c),
        }
    }
    fields
}
