//! Walks a tar stream as it goes by, without holding it: a push parser
//! (bytes in, any chunking) that tells a [`TarVisitor`] about each member.
//! Backups use it to capture backup_label while they stream and to drop
//! members; verify hashes every file; restore extracts. It reads the ustar
//! members PostgreSQL writes and the PAX and GNU long-name headers Python's
//! tarfile (Barman) writes.

use bytes::Bytes;

const BLOCK: usize = 512;

/// One member's header, after any PAX or GNU long-name header applied.
/// Names have any leading `./` removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarMember {
    pub name: String,
    /// Bytes of content (0 for anything but a regular file).
    pub size: u64,
    /// The ustar type flag: b'0' file, b'5' directory, b'2' symlink, b'1' hard link.
    pub kind: u8,
    pub mode: u32,
    pub mtime: u64,
    /// Target of a symbolic or hard link.
    pub link: String,
}

impl TarMember {
    pub fn is_file(&self) -> bool {
        matches!(self.kind, b'0' | 0 | b'7')
    }
}

/// What a walk reports.
pub trait TarVisitor {
    /// Whether a member stays in the output of [`TarWalker::filter`]. Only
    /// members without content (directories, links) can be dropped.
    fn keep(&self, _member: &TarMember) -> bool {
        true
    }
    fn start(&mut self, member: &TarMember);
    fn data(&mut self, bytes: &[u8]);
    fn end(&mut self);
}

enum State {
    Header,
    /// Content of a member the visitor sees.
    Data {
        remaining: u64,
        padded: u64,
    },
    /// Content of a PAX (`x`) or GNU long-name (`L`, `K`) header, collected
    /// here to apply to the next member.
    Meta {
        kind: u8,
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
    meta: Vec<u8>,
    next_name: Option<String>,
    next_link: Option<String>,
    /// Name of the member being read, for error messages.
    pub current: Option<String>,
}

fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // base-256 (GNU) encoding for large numbers
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

/// PAX records: "<len> <key>=<value>\n", repeated.
fn pax_records(data: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(space) = rest.iter().position(|b| *b == b' ') {
        let Some(len) = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
        else {
            break;
        };
        if len <= space + 1 || len > rest.len() {
            break;
        }
        let record = &rest[space + 1..len - 1]; // without the trailing newline
        if let Some(eq) = record.iter().position(|b| *b == b'=') {
            out.push((
                String::from_utf8_lossy(&record[..eq]).into_owned(),
                String::from_utf8_lossy(&record[eq + 1..]).into_owned(),
            ));
        }
        rest = &rest[len..];
    }
    out
}

impl<V: TarVisitor> TarWalker<V> {
    pub fn new(visitor: V) -> Self {
        TarWalker {
            visitor,
            state: State::Header,
            header: Vec::with_capacity(BLOCK),
            meta: Vec::new(),
            next_name: None,
            next_link: None,
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
        let out = std::cell::RefCell::new(Vec::new());
        self.walk(
            data,
            &mut |header| out.borrow_mut().push(Bytes::copy_from_slice(header)),
            &mut |start, end| out.borrow_mut().push(data.slice(start..end)),
        );
        out.into_inner()
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
                State::Meta {
                    kind,
                    remaining,
                    padded,
                } => {
                    let take = (*padded).min((data.len() - pos) as u64) as usize;
                    let content = take.min(*remaining as usize);
                    self.meta.extend_from_slice(&data[pos..pos + content]);
                    body(pos, pos + take);
                    *remaining -= content as u64;
                    *padded -= take as u64;
                    pos += take;
                    if *padded == 0 {
                        let kind = *kind;
                        self.apply_meta(kind);
                        self.state = State::Header;
                    }
                }
            }
        }
    }

    fn apply_meta(&mut self, kind: u8) {
        let meta = std::mem::take(&mut self.meta);
        match kind {
            b'L' => self.next_name = Some(cstr(&meta)),
            b'K' => self.next_link = Some(cstr(&meta)),
            b'x' => {
                for (k, v) in pax_records(&meta) {
                    match k.as_str() {
                        "path" => self.next_name = Some(v),
                        "linkpath" => self.next_link = Some(v),
                        _ => {}
                    }
                }
            }
            _ => {} // global PAX headers, skipped content
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
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        let kind = h[156];
        if matches!(kind, b'x' | b'g' | b'L' | b'K') {
            let state = if padded == 0 {
                State::Header
            } else {
                State::Meta {
                    kind,
                    remaining: size,
                    padded,
                }
            };
            return (state, true);
        }
        let mut name = cstr(&h[0..100]);
        if &h[257..262] == b"ustar" {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let name = self.next_name.take().unwrap_or(name);
        let link = self.next_link.take().unwrap_or_else(|| cstr(&h[157..257]));
        let mut member = TarMember {
            name: name.trim_start_matches("./").to_string(),
            size,
            kind,
            mode: octal(&h[100..108]).unwrap_or(0o600) as u32,
            mtime: octal(&h[136..148]).unwrap_or(0),
            link,
        };
        if !member.is_file() {
            member.size = 0;
        }
        let keep = member.size > 0 || self.visitor.keep(&member);
        self.visitor.start(&member);
        if member.size == 0 {
            self.visitor.end();
            // A non-file member that still declares content: skip it.
            return if padded == 0 {
                (State::Header, keep)
            } else {
                (
                    State::Meta {
                        kind: b'g',
                        remaining: size,
                        padded,
                    },
                    keep,
                )
            };
        }
        self.current = Some(member.name);
        (
            State::Data {
                remaining: size,
                padded,
            },
            keep,
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn header(name: &str, size: usize, kind: u8) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000600\0");
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

    pub(crate) fn symlink(name: &str, target: &str) -> Vec<u8> {
        let mut h = header(name, 0, b'2');
        h[157..157 + target.len()].copy_from_slice(target.as_bytes());
        h
    }

    /// Records what a walk saw.
    #[derive(Default)]
    pub(crate) struct Recorder {
        pub seen: Vec<(String, u8, Vec<u8>, String)>,
    }

    impl TarVisitor for Recorder {
        fn keep(&self, m: &TarMember) -> bool {
            m.kind != b'2'
        }
        fn start(&mut self, m: &TarMember) {
            self.seen
                .push((m.name.clone(), m.kind, Vec::new(), m.link.clone()));
        }
        fn data(&mut self, bytes: &[u8]) {
            self.seen.last_mut().unwrap().2.extend_from_slice(bytes);
        }
        fn end(&mut self) {}
    }

    #[test]
    fn walks_members_across_any_chunking() {
        let mut tar = header("global", 0, b'5');
        tar.extend(member("./PG_VERSION", b"15\n"));
        tar.extend(member("big", &vec![7u8; 3000]));
        tar.extend(symlink("pg_tblspc/16384", "/srv/ts"));
        tar.extend(vec![0u8; 1024]);
        for chunk in [1usize, 7, 511, 512, 4096] {
            let mut w = TarWalker::new(Recorder::default());
            for piece in tar.chunks(chunk) {
                w.feed(piece);
            }
            let s = &w.visitor.seen;
            assert_eq!(s.len(), 4, "chunk {chunk}");
            assert_eq!(
                (s[1].0.as_str(), s[1].2.as_slice()),
                ("PG_VERSION", &b"15\n"[..])
            );
            assert_eq!(s[2].2.len(), 3000);
            assert_eq!((s[3].1, s[3].3.as_str()), (b'2', "/srv/ts"));
        }
    }

    #[test]
    fn filter_drops_members_and_keeps_the_rest() {
        let mut tar = member("PG_VERSION", b"15\n");
        tar.extend(symlink("pg_tblspc/16384", "/srv/tblsp"));
        tar.extend(member("base/1/1", &[1u8; 700]));
        tar.extend(vec![0u8; 1024]);
        let mut expected = member("PG_VERSION", b"15\n");
        expected.extend(member("base/1/1", &[1u8; 700]));
        expected.extend(vec![0u8; 1024]);
        for chunk in [1usize, 100, 512, 513, 10_000] {
            let mut w = TarWalker::new(Recorder::default());
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
    fn applies_pax_and_gnu_long_names() {
        let long = format!("base/16384/{}", "x".repeat(120));
        let record = format!("path={long}\n");
        let len = record.len() + 4; // "NNN " prefix, 3 digits
        let pax = format!("{len} {record}");
        let mut tar = header("PaxHeader", pax.len(), b'x');
        tar.extend_from_slice(pax.as_bytes());
        tar.resize(tar.len().div_ceil(BLOCK) * BLOCK, 0);
        tar.extend(member("truncated-name", b"abc"));
        let gnu_name = format!("{long}-gnu\0");
        tar.extend(header("././@LongLink", gnu_name.len(), b'L'));
        tar.extend_from_slice(gnu_name.as_bytes());
        tar.resize(tar.len().div_ceil(BLOCK) * BLOCK, 0);
        tar.extend(member("short", b"de"));
        let mut w = TarWalker::new(Recorder::default());
        w.feed(&tar);
        let names: Vec<&str> = w.visitor.seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(names, vec![long.as_str(), format!("{long}-gnu").as_str()]);
        assert_eq!(w.visitor.seen[0].2, b"abc");
    }
}
