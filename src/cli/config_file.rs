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
            // The line is not shown: a mistyped line may hold a secret
            // (`S3_SECRET_ACCESS_KEY abc/d=ef`).
            return Err(format!(
                "{file}:{}: the name before '=' is not a variable name (letters, digits and _ \
                 only; the line is not shown, as it may hold a secret)",
                i + 1
            ));
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

    #[test]
    fn a_bad_line_is_not_echoed() {
        let e = parse("S3_SECRET_ACCESS_KEY wJalrXUt/K7MDENG=x\n", "f").unwrap_err();
        assert!(e.contains("f:1") && !e.contains("wJalrXUt"), "{e}");
    }

    // Property-based fuzzing of the settings file parser (the other
    // parsers' targets are in tests/fuzz_parsers.rs; same PITR_FUZZ_CASES).
    mod fuzz {
        use super::super::parse;
        use proptest::prelude::*;

        fn config() -> ProptestConfig {
            let cases = std::env::var("PITR_FUZZ_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(64);
            ProptestConfig {
                cases,
                ..ProptestConfig::default()
            }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn never_panics(text in "\\PC{0,400}", bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
                let _ = parse(&text, "f");
                let _ = parse(&String::from_utf8_lossy(&bytes), "f");
            }

            #[test]
            fn round_trips_and_never_echoes_a_value(
                lines in proptest::collection::vec(("[A-Z_][A-Z0-9_]{0,20}", "[!-~]([ -~]{0,30}[!-~])?", 0u8..3), 1..8),
                secret in "[A-Za-z0-9/+]{16,24}",
                bad_at in any::<usize>(),
            ) {
                let quote = |v: &str, q: u8| match q {
                    1 => format!("\"{v}\""),
                    2 => format!("'{v}'"),
                    _ => v.to_string(),
                };
                let text: String = lines.iter().map(|(k, v, q)| format!("{k}={}\n", quote(v, *q))).collect();
                let got = parse(&text, "f").unwrap();
                let want: Vec<(String, String)> = lines
                    .iter()
                    .map(|(k, v, q)| {
                        // An unquoted value that looks quoted loses its quotes, as in a shell.
                        let v = match q {
                            0 => parse(&format!("K={v}"), "f").unwrap()[0].1.clone(),
                            _ => v.clone(),
                        };
                        (k.clone(), v)
                    })
                    .collect();
                prop_assert_eq!(got, want);
                // One line mistyped (a space for '='): the error never shows
                // the secret on it.
                let mut all: Vec<String> = text.lines().map(str::to_string).collect();
                let at = bad_at % (all.len() + 1);
                all.insert(at, format!("S3_SECRET_ACCESS_KEY {secret}"));
                all.insert(at, format!("S3_SECRET_ACCESS_KEY {secret}=x"));
                let e = parse(&all.join("\n"), "f").unwrap_err();
                prop_assert!(!e.contains(&secret), "{}", e);
            }
        }
    }
}
