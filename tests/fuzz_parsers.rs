//! Property-based fuzzing of every parser pitr applies to input it did not
//! write itself (stable Rust, proptest): WAL names, LSNs, page headers, WAL
//! records, timeline history files, backup.info and the Python literals in
//! it, connection strings and URIs, the tar walker and the extractor, and
//! the encryption header. Arbitrary input must never panic; where a printer
//! exists, what it prints parses back to the same value. (The settings file
//! parser lives in the binary: its target is in src/cli/config_file.rs.)
//!
//! Needs no RGW and no PostgreSQL. The default `cargo test` runs each
//! target with PITR_FUZZ_CASES cases (64 unless set); `tests/support/fuzz.sh`
//! runs them for longer. A failing input proptest finds is written to
//! tests/fuzz_parsers.proptest-regressions and replayed first on every run.

use std::io::{Read, Write};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use proptest::prelude::*;

use pitr::backup::info::BackupInfo;
use pitr::backup::pyrepr;
use pitr::codec::{decoder, decoder_reporting, Codec, Compression, EncryptionKey};
use pitr::pgwire::conninfo::ConnectParams;
use pitr::restore::extract::{ExtractSink, Extractor};
use pitr::tar_walk::{TarMember, TarVisitor, TarWalker};
use pitr::wal::history::TimelinePath;
use pitr::wal::page_header::LongPageHeader;
use pitr::wal::records::WalScanner;
use pitr::wal::{Lsn, SegmentName, TimelineId, WalFileName};

fn config() -> ProptestConfig {
    let cases = std::env::var("PITR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        // Shrinking a failure to its smallest form, bounded.
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

/// Bytes that look like a WAL segment's start more often than random ones.
fn wal_like() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(any::<u8>(), 0..20_000),
        any::<u64>(),
        prop::sample::select(vec![1u32 << 20, 16 << 20, 3, 0]),
        any::<bool>(),
    )
        .prop_map(|(mut bytes, addr, seg, long)| {
            if bytes.len() >= 40 {
                bytes[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
                bytes[2..4].copy_from_slice(&(if long { 0x0002u16 } else { 0x0005 }).to_le_bytes());
                bytes[8..16].copy_from_slice(&addr.to_le_bytes());
                bytes[32..36].copy_from_slice(&seg.to_le_bytes());
                bytes[36..40].copy_from_slice(&8192u32.to_le_bytes());
            }
            bytes
        })
}

/// One member as seen: name, type flag, size, content.
type Member = (String, u8, u64, Vec<u8>);

/// A tar visitor that records what it saw.
#[derive(Default)]
struct Seen(Vec<Member>);

impl TarVisitor for Seen {
    fn start(&mut self, m: &TarMember) {
        self.0.push((m.name.clone(), m.kind, m.size, Vec::new()));
    }
    fn data(&mut self, bytes: &[u8]) {
        self.0.last_mut().unwrap().3.extend_from_slice(bytes);
    }
    fn end(&mut self) {}
}

/// Walks `tar` fed in pieces cut at `cuts`: what was seen and the outcome.
fn walk(tar: &[u8], cuts: &[usize]) -> (Vec<Member>, Result<(), String>) {
    let mut w = TarWalker::new("fuzz.tar", Seen::default());
    let mut at = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (tar.len() + 1)).collect();
    points.sort_unstable();
    points.push(tar.len());
    let mut result = Ok(());
    for p in points {
        if result.is_ok() {
            result = w.feed(&tar[at..p]).map_err(|e| e.to_string());
        }
        at = p;
    }
    if result.is_ok() {
        result = w.finish().map_err(|e| e.to_string());
    }
    (w.visitor.0, result)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn wal_names(s in "\\PC{0,40}", hexish in "[0-9A-Fa-f.a-z]{0,40}") {
        for s in [&s, &hexish] {
            if let Ok(name) = s.parse::<WalFileName>() {
                let printed = name.to_string();
                prop_assert_eq!(printed.parse::<WalFileName>().unwrap(), name);
            }
        }
    }

    #[test]
    fn wal_names_round_trip(tli in 1u32.., number in 0u64..(1 << 40)) {
        let seg = SegmentName::from_number(TimelineId::new(tli).unwrap(), number, 16 << 20);
        for name in [WalFileName::Segment(seg), WalFileName::Partial(seg),
                     WalFileName::TimelineHistory(TimelineId::new(tli).unwrap())] {
            prop_assert_eq!(name.to_string().parse::<WalFileName>().unwrap(), name);
        }
    }

    #[test]
    fn lsns(s in "\\PC{0,30}", hexish in "[0-9A-Fa-f/]{0,20}", v in any::<u64>()) {
        let _ = s.parse::<Lsn>();
        if let Ok(l) = hexish.parse::<Lsn>() {
            prop_assert_eq!(l.to_string().parse::<Lsn>().unwrap(), l);
        }
        prop_assert_eq!(Lsn(v).to_string().parse::<Lsn>().unwrap(), Lsn(v));
    }

    #[test]
    fn page_headers_and_records(bytes in wal_like(), split in any::<usize>()) {
        if let Ok(h) = LongPageHeader::parse(&bytes, "fuzz") {
            prop_assert!(h.segment_size.is_power_of_two());
        }
        let _ = WalScanner::default().scan(&bytes, "fuzz");
        // Two segments in a row, the second continuing the first.
        let mut scanner = WalScanner::default();
        let cut = split % (bytes.len() + 1);
        let _ = scanner.scan(&bytes[..cut], "fuzz-1");
        let _ = scanner.scan(&bytes[cut..], "fuzz-2");
    }

    #[test]
    fn history_files(text in "\\PC{0,300}", tli in 1u32..10, lines in proptest::collection::vec(("[0-9]{1,3}", "[0-9A-F]{1,8}/[0-9A-F]{1,8}", "\\PC{0,20}"), 0..6), seg in any::<u64>()) {
        let tli = TimelineId::new(tli).unwrap();
        let structured: String = lines.iter().map(|(t, l, r)| format!("{t}\t{l}\t{r}\n")).collect();
        for text in [text, structured] {
            if let Ok(p) = TimelinePath::parse(tli, &text, "fuzz.history") {
                prop_assert_eq!(p.target(), tli);
                let _ = p.timeline_at(Lsn(seg));
                let _ = p.timeline_of_segment(seg, 16 << 20);
                // Ancestors strictly older, switch points in order.
                for w in p.spans.windows(2) {
                    prop_assert!(w[0].timeline < w[1].timeline);
                    prop_assert!(w[0].begin <= w[1].begin);
                }
            }
        }
    }

    #[test]
    fn history_round_trip(steps in proptest::collection::vec((1u32..5, 0u64..(1 << 30)), 0..8)) {
        let mut tli = 1u32;
        let mut lsn = 0u64;
        let mut text = String::new();
        let mut expected = Vec::new();
        for (dt, dl) in steps {
            lsn += dl;
            text.push_str(&format!("{tli}\t{}\tsome reason\n", Lsn(lsn)));
            expected.push((tli, lsn));
            tli += dt;
        }
        let p = TimelinePath::parse(TimelineId::new(tli).unwrap(), &text, "h").unwrap();
        let got: Vec<(u32, u64)> = p.spans[..p.spans.len() - 1]
            .iter()
            .map(|s| (s.timeline.get(), s.end.unwrap().0))
            .collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn python_literals(text in "\\PC{0,200}", s in "\\PC{0,60}", bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = pyrepr::parse(&text);
        let _ = pyrepr::parse(&String::from_utf8_lossy(&bytes));
        let printed = pyrepr::repr_str(&s);
        let back = pyrepr::parse(&printed);
        prop_assert_eq!(back.as_ref().and_then(|v| v.as_str()), Some(s.as_str()), "{}", printed);
        // Nested the way backup.info nests them.
        let nested = format!("[({printed}, 16384, {printed})]");
        let v = pyrepr::parse(&nested).unwrap();
        let items = v.items().unwrap()[0].items().unwrap();
        prop_assert_eq!(items[0].as_str(), Some(s.as_str()));
        prop_assert_eq!(items[1].as_int(), Some(16384));
    }

    #[test]
    fn backup_info(text in "\\PC{0,400}", fields in proptest::collection::vec(("[a-z_]{1,20}", "\\PC{0,40}"), 0..12)) {
        let id: pitr::backup::id::BackupId = "20261122T034155".parse().unwrap();
        let _ = BackupInfo::parse(id.clone(), &text, "fuzz/backup.info");
        let kv: String = fields.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        if let Ok(info) = BackupInfo::parse(id.clone(), &kv, "fuzz/backup.info") {
            // What pitr writes, it reads back the same.
            let again = BackupInfo::parse(id, &info.to_barman_text(), "again").unwrap();
            prop_assert_eq!(again, info);
        }
    }

    #[test]
    fn backup_info_round_trip(label in "\\PC{0,80}", name in "[ -~]{1,30}", begin in any::<u64>(), len in any::<u32>(), tli in 1u32.., tablespaces in proptest::collection::vec(("[ -~]{0,20}", any::<u32>(), "[ -~]{0,30}"), 0..3)) {
        let id: pitr::backup::id::BackupId = "20261122T034155".parse().unwrap();
        let mut info = BackupInfo::new(id.clone(), "main");
        info.backup_label = Some(label);
        info.backup_name = Some(name.trim().to_string()).filter(|n| !n.is_empty() && n != "None");
        info.begin_xlog = Some(Lsn(begin));
        info.end_xlog = Some(Lsn(begin.saturating_add(u64::from(len))));
        info.timeline = Some(tli);
        info.xlog_segment_size = Some(16 << 20);
        info.tablespaces = tablespaces
            .into_iter()
            .map(|(n, oid, loc)| pitr::backup::info::Tablespace { name: n, oid, location: loc })
            .collect();
        let back = BackupInfo::parse(id, &info.to_barman_text(), "rt").unwrap();
        prop_assert_eq!(back, info);
    }

    #[test]
    fn conninfo(s in "\\PC{0,120}", kvs in proptest::collection::vec(("[a-z_]{1,12}", "[ -~]{0,20}"), 0..6), uri in "[ -~]{0,80}", pw in "[A-Za-z0-9]{12,20}") {
        let _ = ConnectParams::resolve_with(Some(&s), |_| None);
        let _ = ConnectParams::resolve_with(Some(&format!("postgresql://{uri}")), |_| None);
        let _ = ConnectParams::resolve_with(Some(&format!("postgres://{s}")), |_| None);
        // The password never shows in an error or in Debug, wherever it is.
        let pw = format!("PW{pw}");
        let mut parts: Vec<String> = kvs.iter().map(|(k, v)| format!("{k}='{}'", v.replace(['\\', '\''], ""))).collect();
        let at = parts.len() / 2;
        parts.insert(at, format!("password={pw}"));
        let text = parts.join(" ");
        match ConnectParams::resolve_with(Some(&text), |_| None) {
            Ok(p) => {
                let debug = format!("{:?}", p);
                prop_assert!(!debug.contains(&pw));
                prop_assert!(!p.describe().contains(&pw));
            }
            Err(e) => prop_assert!(!e.to_string().contains(&pw), "{}", e),
        }
        let as_uri = format!("postgresql://u:{pw}@{}", uri.replace(['@', '/'], ""));
        if let Err(e) = ConnectParams::resolve_with(Some(&as_uri), |_| None) {
            prop_assert!(!e.to_string().contains(&pw), "{}", e);
        }
    }

    #[test]
    fn tar_walker_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096), cuts in proptest::collection::vec(any::<usize>(), 0..5)) {
        let (seen, result) = walk(&bytes, &cuts);
        // However the stream is cut, the same members and the same verdict.
        let (seen_whole, result_whole) = walk(&bytes, &[]);
        prop_assert_eq!(seen, seen_whole);
        prop_assert_eq!(result, result_whole);
    }

    #[test]
    fn tar_walker_reads_what_tar_writes(files in proptest::collection::vec(("[a-z]{1,8}(/[a-z]{1,8}){0,3}", proptest::collection::vec(any::<u8>(), 0..3000)), 1..6), long in "[a-z]{100,140}", cuts in proptest::collection::vec(any::<usize>(), 0..6), flip in any::<(usize, u8)>()) {
        let mut b = tar::Builder::new(Vec::new());
        let mut expected = Vec::new();
        for (i, (name, body)) in files.iter().enumerate() {
            let name = if i == 0 { format!("{long}/{name}") } else { format!("{i}/{name}") };
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o600);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, &name, &body[..]).unwrap();
            expected.push((name, body.clone()));
        }
        let tar = b.into_inner().unwrap();
        let (seen, result) = walk(&tar, &cuts);
        prop_assert!(result.is_ok(), "{:?}", result);
        let got: Vec<(String, Vec<u8>)> = seen.into_iter().map(|(n, _, _, d)| (n, d)).collect();
        prop_assert_eq!(got, expected);
        // One flipped byte in a header is caught or changes nothing seen
        // beyond it; it never panics.
        let mut damaged = tar.clone();
        let at = flip.0 % damaged.len();
        damaged[at] ^= flip.1 | 1;
        let _ = walk(&damaged, &cuts);
    }

    #[test]
    fn extraction_never_leaves_the_target(members in proptest::collection::vec((0u8..5, proptest::collection::vec(prop::sample::select(vec!["a", "b", "s", "t", "..", ".", "", "/"]), 1..5), proptest::collection::vec(prop::sample::select(vec!["a", "b", "s", "t", "..", ".", "/", "outside"]), 0..5)), 1..8)) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pgdata");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(dir.path().join("outside"), b"sentinel").unwrap();
        let mut tar = Vec::new();
        for (kind, name, link) in &members {
            let name = name.join("/");
            let link = link.join("/");
            if name.is_empty() || name.len() > 99 || link.len() > 99 {
                continue;
            }
            let (flag, body): (u8, &[u8]) = match kind {
                0 => (b'0', b"data"),
                1 => (b'5', b""),
                2 => (b'2', b""),
                3 => (b'1', b""),
                _ => (b'6', b""),
            };
            tar.extend(raw_header(&name, body.len() as u64, flag, &link));
            tar.extend_from_slice(body);
            tar.resize(tar.len().div_ceil(512) * 512, 0);
        }
        tar.extend([0u8; 1024]);
        let mut sink = ExtractSink {
            walker: TarWalker::new("fuzz.tar", Extractor::new(&root, "fuzz.tar", Arc::new(AtomicU64::new(0)))),
        };
        if sink.write_all(&tar).is_ok() {
            let _ = sink.finish();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        prop_assert_eq!(names, vec!["outside".to_string(), "pgdata".to_string()]);
        prop_assert_eq!(std::fs::read(dir.path().join("outside")).unwrap(), b"sentinel");
        // No file in the target is the sentinel (a hard link to it).
        use std::os::unix::fs::MetadataExt;
        prop_assert_eq!(std::fs::metadata(dir.path().join("outside")).unwrap().nlink(), 1);
    }

    #[test]
    fn encryption_header_and_decoding(bytes in proptest::collection::vec(any::<u8>(), 0..3000), data in proptest::collection::vec(any::<u8>(), 0..70_000), flip in any::<(usize, u8)>(), gz in any::<bool>()) {
        let key = Arc::new(EncryptionKey::from_bytes([7u8; 32]));
        let compression = if gz { Compression::Gzip { level: 1 } } else { Compression::None };
        // Arbitrary bytes, with and without the encryption magic in front.
        let mut magic = b"PITRENC".to_vec();
        magic.extend(&bytes);
        for input in [bytes.clone(), magic] {
            for k in [None, Some(key.as_ref())] {
                if let Ok(mut r) = decoder(std::io::Cursor::new(input.clone()), compression, k, "fuzz") {
                    let mut out = Vec::new();
                    let _ = r.read_to_end(&mut out);
                }
            }
        }
        // Round trip, and any one flipped byte is refused.
        let codec = Codec { compression, key: Some(key.clone()) };
        let mut enc = codec.encoder(Vec::new()).unwrap();
        enc.write_all(&data).unwrap();
        let stored = enc.finish().unwrap();
        let mut out = Vec::new();
        decoder(std::io::Cursor::new(stored.clone()), compression, Some(&key), "rt").unwrap().read_to_end(&mut out).unwrap();
        prop_assert_eq!(&out, &data);
        let mut damaged = stored;
        let at = flip.0 % damaged.len();
        damaged[at] ^= flip.1 | 1;
        // A flip in the magic makes the object read as not encrypted (and
        // callers that expect encryption refuse it, as wal-fetch does);
        // anywhere else it fails authentication.
        let read = decoder_reporting(std::io::Cursor::new(damaged), compression, Some(&key), "rt")
            .and_then(|(mut r, encrypted)| { let mut o = Vec::new(); r.read_to_end(&mut o).map(|_| encrypted) });
        prop_assert!(matches!(read, Err(_) | Ok(false)), "a flipped byte at {} went unnoticed", at);
        prop_assert!(read.is_err() || at < 7, "a flipped byte at {} went unnoticed", at);
    }
}

/// A ustar header with any name and link (no checks).
fn raw_header(name: &str, size: u64, kind: u8, link: &str) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000600\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}
