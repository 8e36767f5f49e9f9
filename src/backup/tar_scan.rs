//! Walks a tar stream as it goes by, without holding it: a push parser
//! (bytes in, any chunking) that tells a [`TarVisitor`] about each member.
//! Used to capture backup_label while a backup streams, and to check every
//! member against the server's manifest when a backup is verified.

use std::collections::BTreeMap;

use bytes::Bytes;

const BLOCK: usize = 512;

/// What a walk reports. Names have any leading `./` removed.
pub trait TarVisitor {
    /// Whether a member stays in the output of [`TarWalker::filter`]. Only
    /// members without data (directories, links) can be dropped.
    fn keep(&self, _name: &str, _kind: u8) -> bool {
        true
    }
    fn start(&mut self, name: &str, size: u64, regular_file: bool);
    fn data(&mut self, bytes: &[u8]);
    fn end(&mut self);
}

enum State {
    Header,
    Data {
        remaining: u64,
        padded: u64,
    },
    /// A header we cannot read: stop looking.
    Done,
}

pub struct TarWalker<V: TarVisitor> {
    pub visitor: V,
    state: State,
    header: Vec<u8>,
    /// Name of the member being read, for error messages.
    pub current: Option<String>,
}

fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // base-256 (GNU) encoding for large sizes
        return Some(
            field[1..]
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        );
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

impl<V: TarVisitor> TarWalker<V> {
    pub fn new(visitor: V) -> Self {
        TarWalker {
            visitor,
            state: State::Header,
            header: Vec::with_capacity(BLOCK),
            current: None,
        }
    }

    /// Watches `data` go by.
    pub fn feed(&mut self, data: &[u8]) {
        self.walk(data, &mut |_| {}, &mut |_, _| {});
    }

    /// Watches `data` go by and returns it less the members the visitor
    /// does not keep: pieces of the input (no copy) and kept headers.
    pub fn filter(&mut self, data: &Bytes) -> Vec<Bytes> {
        let mut out = Vec::new();
        let cell = std::cell::RefCell::new(&mut out);
        self.walk(
            data,
            &mut |header| cell.borrow_mut().push(Bytes::copy_from_slice(header)),
            &mut |start, end| cell.borrow_mut().push(data.slice(start..end)),
        );
        out
    }

    /// The state machine: `header` gets each kept header once it is whole,
    /// `body` the offsets in `data` of everything else that passes.
    fn walk(
        &mut self,
        data: &[u8],
        header: &mut dyn FnMut(&[u8]),
        body: &mut dyn FnMut(usize, usize),
    ) {
        let mut pos = 0;
        while pos < data.len() {
            match &mut self.state {
                State::Done => {
                    body(pos, data.len());
                    return;
                }
                State::Header => {
                    let take = (BLOCK - self.header.len()).min(data.len() - pos);
                    self.header.extend_from_slice(&data[pos..pos + take]);
                    pos += take;
                    if self.header.len() == BLOCK {
                        let (next, keep) = self.parse_header();
                        if keep {
                            header(&self.header);
                        }
                        self.state = next;
                        self.header.clear();
                    }
                }
                State::Data { remaining, padded } => {
                    let take = (*padded).min((data.len() - pos) as u64) as usize;
                    let content = take.min(*remaining as usize);
                    if content > 0 {
                        self.visitor.data(&data[pos..pos + content]);
                    }
                    body(pos, pos + take);
                    *remaining -= content as u64;
                    *padded -= take as u64;
                    pos += take;
                    if *padded == 0 {
                        self.visitor.end();
                        self.current = None;
                        self.state = State::Header;
                    }
                }
            }
        }
    }

    /// Reads the header just collected: the next state, and whether the
    /// header stays in filtered output.
    fn parse_header(&mut self) -> (State, bool) {
        let h = &self.header;
        if h.iter().all(|b| *b == 0) {
            return (State::Header, true); // end-of-archive blocks
        }
        let Some(size) = octal(&h[124..136]) else {
            return (State::Done, true);
        };
        let mut name = cstr(&h[0..100]);
        if &h[257..262] == b"ustar" {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let name = name.trim_start_matches("./").to_string();
        let kind = h[156];
        // Only regular files carry data in PostgreSQL's tars.
        let regular = kind == b'0' || kind == 0;
        let size = if regular { size } else { 0 };
        let keep = size > 0 || self.visitor.keep(&name, kind);
        self.visitor.start(&name, size, regular);
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        if padded == 0 {
            self.visitor.end();
            return (State::Header, keep);
        }
        self.current = Some(name);
        (
            State::Data {
                remaining: size,
                padded,
            },
            keep,
        )
    }
}

/// Captures the content of a few small members (backup_label) as they pass.
pub struct Capture {
    wanted: Vec<String>,
    capturing: Option<String>,
    pub captured: BTreeMap<String, Vec<u8>>,
}

/// Members larger than this are never captured.
const MAX_CAPTURE: u64 = 1 << 20;

impl Capture {
    pub fn new(wanted: &[&str]) -> Self {
        Capture {
            wanted: wanted.iter().map(|s| s.to_string()).collect(),
            capturing: None,
            captured: BTreeMap::new(),
        }
    }

    pub fn text(&self, name: &str) -> Option<String> {
        self.captured
            .get(name)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

impl TarVisitor for Capture {
    /// Drops the `pg_tblspc/<oid>` symbolic links: restores create them from
    /// backup.info's tablespace list (where they can be relocated), as
    /// Barman's own backups expect; a link already in the tar would make
    /// barman-cloud-restore fail and would point at the original location.
    fn keep(&self, name: &str, kind: u8) -> bool {
        !(kind == b'2' && name.starts_with("pg_tblspc/"))
    }

    fn start(&mut self, name: &str, size: u64, regular: bool) {
        self.capturing = (regular && size <= MAX_CAPTURE && self.wanted.iter().any(|w| w == name))
            .then(|| {
                self.captured.insert(name.to_string(), Vec::new());
                name.to_string()
            });
    }

    fn data(&mut self, bytes: &[u8]) {
        if let Some(name) = &self.capturing {
            self.captured
                .get_mut(name)
                .expect("started")
                .extend_from_slice(bytes);
        }
    }

    fn end(&mut self) {
        self.capturing = None;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn header(name: &str, size: usize, kind: u8) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let s = format!("{size:011o}\0");
        h[124..136].copy_from_slice(s.as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h
    }

    pub(crate) fn member(name: &str, body: &[u8]) -> Vec<u8> {
        let mut v = header(name, body.len(), b'0');
        v.extend_from_slice(body);
        v.resize(v.len().div_ceil(BLOCK) * BLOCK, 0);
        v
    }

    pub(crate) fn sample_tar() -> Vec<u8> {
        let mut tar = header("global", 0, b'5');
        tar.extend(member("PG_VERSION", b"15\n"));
        tar.extend(member("big", &vec![7u8; 3000]));
        tar.extend(member("backup_label", b"START WAL LOCATION: 0/2000028\n"));
        tar.extend(vec![0u8; 1024]);
        tar
    }

    #[test]
    fn filter_drops_tablespace_links_and_keeps_the_rest() {
        let mut link = header("pg_tblspc/16384", 0, b'2');
        link[157..167].copy_from_slice(b"/srv/tblsp");
        let mut tar = member("PG_VERSION", b"15\n");
        tar.extend(link);
        tar.extend(member("base/1/1", &[1u8; 700]));
        tar.extend(vec![0u8; 1024]);
        let mut expected = member("PG_VERSION", b"15\n");
        expected.extend(member("base/1/1", &[1u8; 700]));
        expected.extend(vec![0u8; 1024]);
        for chunk in [1usize, 100, 512, 513, 10_000] {
            let mut w = TarWalker::new(Capture::new(&[]));
            let mut out = Vec::new();
            for piece in tar.chunks(chunk) {
                for b in w.filter(&Bytes::copy_from_slice(piece)) {
                    out.extend_from_slice(&b);
                }
            }
            assert_eq!(out, expected, "chunk {chunk}");
        }
    }

    #[test]
    fn captures_wanted_members_across_any_chunking() {
        let tar = sample_tar();
        for chunk in [1usize, 7, 511, 512, 4096] {
            let mut w = TarWalker::new(Capture::new(&["backup_label", "tablespace_map"]));
            for piece in tar.chunks(chunk) {
                w.feed(piece);
            }
            assert_eq!(
                w.visitor.text("backup_label").as_deref(),
                Some("START WAL LOCATION: 0/2000028\n"),
                "chunk {chunk}"
            );
            assert!(w.visitor.text("tablespace_map").is_none());
            assert!(w.current.is_none());
        }
    }
}
