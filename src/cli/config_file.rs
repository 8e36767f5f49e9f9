//! The settings file: KEY=VALUE lines (comments with `#`, optional quotes,
//! optional `export `), loaded into the environment before flags are parsed,
//! so archive_command and restore_command can carry secrets without putting
//! them in postgresql.conf or on a command line. Variables already set in
//! the environment win.

use std::ffi::OsString;
use std::path::PathBuf;

/// The settings file named by `--config FILE` / `--config=FILE` or PITR_CONFIG.
pub fn path_from(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("PITR_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Parses the file's text into (key, value) pairs; errors name the line.
pub fn parse(text: &str, file: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("{file}:{}: expected KEY=VALUE", i + 1));
        };
        let k = k.trim();
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("{file}:{}: '{k}' is not a variable name", i + 1));
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
            .unwrap_or(v);
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Loads the settings file, if one is named, into the environment. Must run
/// before any thread is started.
pub fn load(args: &[OsString]) -> Result<(), String> {
    let Some(path) = path_from(args) else {
        return Ok(());
    };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read settings file {shown} (--config / PITR_CONFIG): {e}"))?;
    for (k, v) in parse(&text, &shown)? {
        if std::env::var_os(&k).is_none() {
            std::env::set_var(k, v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_env_style_lines() {
        let got = parse(
            "# c\nexport PITR_REPO=s3://b/p\nS3_SECRET_ACCESS_KEY=\"a=b\"\n\nX='y'\n",
            "f",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("PITR_REPO".into(), "s3://b/p".into()),
                ("S3_SECRET_ACCESS_KEY".into(), "a=b".into()),
                ("X".into(), "y".into())
            ]
        );
        assert!(parse("novalue\n", "f").unwrap_err().contains("f:1"));
    }
}
