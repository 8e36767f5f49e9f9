//! Walks a tar stream as it goes by, without holding it: a push parser
//! (bytes in, any chunking) that tells a [`TarVisitor`] about each member.
//! Backups use it to capture backup_label while they stream and to drop
//! members; verify hashes every file; restore extracts. It reads the ustar
//! members PostgreSQL writes and the PAX and GNU long-name headers Python's
//! tarfile (Barman) writes.
//!
//! It refuses damage rather than guessing where the archive ends: every
//! header's checksum is checked, and [`TarWalker::finish`] (called at the
//! end of the stream) fails unless the stream ended after the end-of-archive
//! marker, two zero blocks, which PostgreSQL 15+ (each BASE_BACKUP archive),
//! Python's tarfile and GNU tar all write. Only zero padding (to a record
//! size) may follow the marker.

use bytes::Bytes;

use crate::error::{Error, Result};

const BLOCK: usize = 512;
/// PAX and GNU long-name headers hold a name or a few records: a larger one
/// is damage, and is not collected into memory.
const MAX_META: u64 = 1 << 20;

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
    /// Expecting a header block (or the first zero block of the end marker).
    Header,
    /// Content of a member: the visitor sees it when `visible` (regular
    /// files), else it is skipped (content a directory or link declares).
    Data {
        size: u64,
        remaining: u64,
        padded: u64,
        visible: bool,
    },
    /// Content of a PAX (`x`, `g`) or GNU long-name (`L`, `K`) header,
    /// collected here to apply to the next member.
    Meta {
        kind: u8,
        remaining: u64,
        padded: u64,
    },
    /// The first zero block of the end-of-archive marker: the next block
    /// must be the second.
    OneZero,
    /// After the end-of-archive marker (which ended at `at`): only zero
    /// padding may follow.
    End { at: u64 },
    /// A failure was reported; every later call reports it again.
    Failed(String),
}

pub struct TarWalker<V: TarVisitor> {
    pub visitor: V,
    /// The archive, as errors name it (an object key, a file).
    what: String,
    state: State,
    header: Vec<u8>,
    meta: Vec<u8>,
    next_name: Option<String>,
    next_link: Option<String>,
    /// Bytes of the stream consumed so far.
    offset: u64,
    /// Where the header of the member being read starts.
    header_at: u64,
    /// Name of the member being read, for error messages.
    pub current: Option<String>,
    /// Name of the last member read whole, for error messages.
    last: Option<String>,
}

/// A numeric header field: octal text, or GNU base-256 (high bit set) for
/// large values. None if unreadable, negative, or beyond 64 bits.
fn number(field: &[u8]) -> Option<u64> {
    match field.first() {
        Some(0x80) => field[1..].iter().try_fold(0u64, |acc, b| {
            (acc >> 56 == 0).then(|| (acc << 8) | u64::from(*b))
        }),
        Some(b) if b & 0x80 != 0 => None, // negative base-256
        _ => {
            let text = std::str::from_utf8(field).ok()?;
            let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
            if text.is_empty() {
                return Some(0);
            }
            u64::from_str_radix(text, 8).ok()
        }
    }
}

/// Whether the checksum field matches the block: the standard unsigned
/// sum of all bytes with the field itself read as spaces, or the signed
/// sum some old tars wrote (GNU tar accepts both).
fn checksum_ok(h: &[u8]) -> Result<(), String> {
    let stored = number(&h[148..156]).ok_or("has an unreadable checksum field")?;
    let mut unsigned = 0u64;
    let mut signed = 0i64;
    for (i, b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed) {
        return Ok(());
    }
    Err(format!(
        "fails its checksum (stored {stored:o}, computed {unsigned:o})"
    ))
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// The member name a raw header holds (ustar prefix applied).
fn header_name(h: &[u8]) -> String {
    let name = cstr(&h[0..100]);
    if &h[257..262] == b"ustar" {
        let prefix = cstr(&h[345..500]);
        if !prefix.is_empty() {
            return format!("{prefix}/{name}");
        }
    }
    name
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

/// Content and padding to the next block boundary.
fn padded(size: u64) -> Option<u64> {
    size.checked_next_multiple_of(BLOCK as u64)
}

impl<V: TarVisitor> TarWalker<V> {
    /// A walker for the archive `what` names (in errors).
    pub fn new(what: impl Into<String>, visitor: V) -> Self {
        TarWalker {
            visitor,
            what: what.into(),
            state: State::Header,
            header: Vec::with_capacity(BLOCK),
            meta: Vec::new(),
            next_name: None,
            next_link: None,
            offset: 0,
            header_at: 0,
            current: None,
            last: None,
        }
    }

    /// Watches `data` go by. Fails (a `Corrupt` error naming the archive,
    /// the member and the byte offset) at the first damage, and again on
    /// every call after that.
    pub fn feed(&mut self, data: &[u8]) -> Result<()> {
        self.walk(data, &mut |_| {}, &mut |_, _| {})
    }

    /// Watches `data` go by and returns it less the members the visitor
    /// does not keep: pieces of the input (no copy) and kept headers.
    pub fn filter(&mut self, data: &Bytes) -> Result<Vec<Bytes>> {
        let out = std::cell::RefCell::new(Vec::new());
        self.walk(
            data,
            &mut |header| out.borrow_mut().push(Bytes::copy_from_slice(header)),
            &mut |start, end| out.borrow_mut().push(data.slice(start..end)),
        )?;
        Ok(out.into_inner())
    }

    /// Called at the end of the stream: fails unless the archive ended with
    /// its end-of-archive marker (a stream cut inside a member, or at a
    /// member boundary, is truncated).
    pub fn finish(&mut self) -> Result<()> {
        let problem = match &self.state {
            State::End { .. } => return Ok(()),
            State::Failed(msg) => return Err(Error::Corrupt(msg.clone())),
            State::Header if self.offset == 0 => {
                format!("{} is empty: not a tar archive", self.what)
            }
            State::Header if !self.header.is_empty() => format!(
                "{} ends inside a tar header at byte {}{}: the tar is truncated",
                self.what,
                self.offset,
                self.after_last()
            ),
            State::Header => format!(
                "{} ends at byte {}{} without the end-of-archive marker (two zero blocks): \
                 the tar is truncated",
                self.what,
                self.offset,
                self.after_last()
            ),
            State::OneZero => format!(
                "{} ends at byte {} after a single zero block: the end-of-archive marker is two \
                 zero blocks, so the tar is truncated",
                self.what, self.offset
            ),
            State::Data {
                size, remaining, ..
            } => format!(
                "{} ends at byte {} inside member '{}' (header at byte {}), after {} of its {} \
                 bytes: the tar is truncated",
                self.what,
                self.offset,
                self.current.as_deref().unwrap_or("?"),
                self.header_at,
                size - remaining,
                size
            ),
            State::Meta { .. } => format!(
                "{} ends at byte {} inside the extended header at byte {}: the tar is truncated",
                self.what, self.offset, self.header_at
            ),
        };
        Err(self.fail(problem))
    }

    fn after_last(&self) -> String {
        match &self.last {
            Some(name) => format!(" (after member '{name}')"),
            None => String::new(),
        }
    }

    fn fail(&mut self, msg: String) -> Error {
        self.state = State::Failed(msg.clone());
        self.current = None;
        Error::Corrupt(msg)
    }

    /// The state machine: `header` gets each kept header once it is whole,
    /// `body` the offsets in `data` of everything else that passes.
    fn walk(
        &mut self,
        data: &[u8],
        header: &mut dyn FnMut(&[u8]),
        body: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        let mut pos = 0;
        while pos < data.len() {
            let step = self.step(&data[pos..], pos, header, body);
            match step {
                Ok(n) => {
                    pos += n;
                    self.offset += n as u64;
                }
                Err(msg) => return Err(self.fail(msg)),
            }
        }
        if let State::Failed(msg) = &self.state {
            return Err(Error::Corrupt(msg.clone()));
        }
        Ok(())
    }

    /// Consumes the start of `rest` (at `at` in the caller's chunk) and
    /// returns how many bytes it took.
    fn step(
        &mut self,
        rest: &[u8],
        at: usize,
        header: &mut dyn FnMut(&[u8]),
        body: &mut dyn FnMut(usize, usize),
    ) -> Result<usize, String> {
        match &mut self.state {
            State::Failed(msg) => Err(msg.clone()),
            State::End { at: end } => {
                if let Some(i) = rest.iter().position(|b| *b != 0) {
                    return Err(format!(
                        "{} has non-zero data at byte {}, after its end-of-archive marker \
                         (which ends at byte {end}): the object is damaged or has something \
                         appended",
                        self.what,
                        self.offset + i as u64
                    ));
                }
                body(at, at + rest.len());
                Ok(rest.len())
            }
            State::Header | State::OneZero => {
                let take = (BLOCK - self.header.len()).min(rest.len());
                self.header.extend_from_slice(&rest[..take]);
                if self.header.len() == BLOCK {
                    self.header_at = self.offset + take as u64 - BLOCK as u64;
                    let (next, keep) = self.parse_header()?;
                    if keep {
                        header(&self.header);
                    }
                    self.state = next;
                    self.header.clear();
                }
                Ok(take)
            }
            State::Data {
                remaining,
                padded,
                visible,
                ..
            } => {
                let take = (*padded).min(rest.len() as u64) as usize;
                let content = take.min(*remaining as usize);
                if content > 0 && *visible {
                    self.visitor.data(&rest[..content]);
                }
                body(at, at + take);
                *remaining -= content as u64;
                *padded -= take as u64;
                if *padded == 0 {
                    if *visible {
                        self.visitor.end();
                    }
                    self.last = self.current.take();
                    self.state = State::Header;
                }
                Ok(take)
            }
            State::Meta {
                kind,
                remaining,
                padded,
            } => {
                let take = (*padded).min(rest.len() as u64) as usize;
                let content = take.min(*remaining as usize);
                self.meta.extend_from_slice(&rest[..content]);
                body(at, at + take);
                *remaining -= content as u64;
                *padded -= take as u64;
                if *padded == 0 {
                    let kind = *kind;
                    self.apply_meta(kind);
                    self.state = State::Header;
                }
                Ok(take)
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

    /// A problem with the header block just collected, as an error message.
    fn header_problem(&self, problem: &str) -> String {
        format!(
            "{}: the tar header at byte {} ('{}'){} {problem}: the object is damaged",
            self.what,
            self.header_at,
            header_name(&self.header),
            self.after_last()
        )
    }

    /// Reads the header just collected: the next state, and whether the
    /// header stays in filtered output.
    fn parse_header(&mut self) -> Result<(State, bool), String> {
        let h = &self.header;
        if h.iter().all(|b| *b == 0) {
            return Ok(match self.state {
                State::OneZero => (
                    State::End {
                        at: self.header_at + BLOCK as u64,
                    },
                    true,
                ),
                _ => (State::OneZero, true),
            });
        }
        if matches!(self.state, State::OneZero) {
            return Err(format!(
                "{}: a lone zero block at byte {} is followed by a header, not by the second \
                 zero block of the end-of-archive marker: the object is damaged",
                self.what,
                self.header_at - BLOCK as u64
            ));
        }
        checksum_ok(h).map_err(|p| self.header_problem(&p))?;
        let size = number(&h[124..136])
            .ok_or_else(|| self.header_problem("has an unreadable size field"))?;
        let padded = padded(size)
            .ok_or_else(|| self.header_problem(&format!("claims an impossible size {size}")))?;
        let kind = h[156];
        if matches!(kind, b'x' | b'g' | b'L' | b'K') {
            if size > MAX_META {
                return Err(self.header_problem(&format!(
                    "is an extended header of {size} bytes (at most {MAX_META} are accepted)"
                )));
            }
            let state = match padded {
                0 => State::Header,
                _ => State::Meta {
                    kind,
                    remaining: size,
                    padded,
                },
            };
            return Ok((state, true));
        }
        let name = self.next_name.take().unwrap_or_else(|| header_name(h));
        let link = self.next_link.take().unwrap_or_else(|| cstr(&h[157..257]));
        let mut member = TarMember {
            name: name.trim_start_matches("./").to_string(),
            size,
            kind,
            mode: number(&h[100..108]).unwrap_or(0o600) as u32,
            mtime: number(&h[136..148]).unwrap_or(0),
            link,
        };
        let visible = member.is_file();
        if !visible {
            member.size = 0;
        }
        // A member that declares content keeps its header, or the content
        // would pass without one.
        let keep = padded > 0 || self.visitor.keep(&member);
        self.visitor.start(&member);
        if !visible {
            self.visitor.end();
        }
        self.current = Some(member.name);
        if padded == 0 {
            if visible {
                self.visitor.end();
            }
            self.last = self.current.take();
            return Ok((State::Header, keep));
        }
        Ok((
            State::Data {
                size,
                remaining: size,
                padded,
                visible,
            },
            keep,
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Sets a hand-made header's checksum (the standard unsigned sum).
    pub(crate) fn seal(h: &mut [u8]) {
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    pub(crate) fn header(name: &str, size: usize, kind: u8) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000600\0");
        let s = format!("{size:011o}\0");
        h[124..136].copy_from_slice(s.as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        seal(&mut h);
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
        seal(&mut h);
        h
    }

    /// The end-of-archive marker: two zero blocks.
    pub(crate) fn end_marker() -> Vec<u8> {
        vec![0u8; 2 * BLOCK]
    }

    /// What one member looked like: (name, type flag, content, link).
    type Seen = (String, u8, Vec<u8>, String);

    /// Records what a walk saw.
    #[derive(Default)]
    pub(crate) struct Recorder {
        pub seen: Vec<Seen>,
        pub keep_links: bool,
    }

    impl TarVisitor for Recorder {
        fn keep(&self, m: &TarMember) -> bool {
            self.keep_links || m.kind != b'2'
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

    fn walker() -> TarWalker<Recorder> {
        TarWalker::new("base/x/data.tar", Recorder::default())
    }

    /// Feeds `tar` in `pieces` and finishes: what the walker saw, or its error.
    fn walk_pieces<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<Seen>> {
        let mut w = walker();
        for piece in pieces {
            w.feed(piece)?;
        }
        w.finish()?;
        Ok(w.visitor.seen)
    }

    fn walk_all(tar: &[u8]) -> Result<Vec<Seen>> {
        walk_pieces([tar])
    }

    /// The error a damaged `tar` gives, checked to be `Corrupt` and to name
    /// the archive.
    fn damage(tar: &[u8]) -> String {
        let e = walk_all(tar).expect_err("damage must be refused");
        assert_eq!(e.kind(), crate::error::ErrorKind::Corrupt, "{e}");
        let msg = e.to_string();
        assert!(msg.contains("base/x/data.tar"), "names the archive: {msg}");
        msg
    }

    /// What the `tar` crate reads from `tar`: the oracle.
    fn oracle(tar: &[u8]) -> Vec<Seen> {
        use std::io::Read;
        let mut archive = ::tar::Archive::new(tar);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            let name = name.trim_start_matches("./").to_string();
            let kind = entry.header().entry_type().as_byte();
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8(l.into_owned()).unwrap())
                .unwrap_or_default();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            out.push((name, kind, content, link));
        }
        out
    }

    /// A tiny deterministic PRNG (xorshift64) for chunk sizes and content.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn tar_file(b: &mut ::tar::Builder<Vec<u8>>, header: ::tar::Header, path: &str, body: &[u8]) {
        let mut h = header;
        h.set_size(body.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(::tar::EntryType::Regular);
        b.append_data(&mut h, path, body).unwrap();
    }

    fn tar_dir(b: &mut ::tar::Builder<Vec<u8>>, path: &str) {
        let mut h = ::tar::Header::new_ustar();
        h.set_size(0);
        h.set_mode(0o700);
        h.set_entry_type(::tar::EntryType::Directory);
        b.append_data(&mut h, path, std::io::empty()).unwrap();
    }

    fn tar_symlink(b: &mut ::tar::Builder<Vec<u8>>, header: ::tar::Header, path: &str, to: &str) {
        let mut h = header;
        h.set_size(0);
        h.set_entry_type(::tar::EntryType::Symlink);
        b.append_link(&mut h, path, to).unwrap();
    }

    /// A file whose long name only a PAX `path` record carries.
    fn tar_pax_file(b: &mut ::tar::Builder<Vec<u8>>, path: &str, body: &[u8]) {
        b.append_pax_extensions([("path", path.as_bytes())])
            .unwrap();
        let mut h = ::tar::Header::new_ustar();
        h.set_path("pax-truncated-name").unwrap();
        h.set_size(body.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(::tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, body).unwrap();
    }

    fn small_tar() -> Vec<u8> {
        let mut b = ::tar::Builder::new(Vec::new());
        tar_dir(&mut b, "base/");
        tar_file(&mut b, ::tar::Header::new_ustar(), "PG_VERSION", b"15\n");
        tar_file(&mut b, ::tar::Header::new_ustar(), "empty", b"");
        tar_file(&mut b, ::tar::Header::new_gnu(), "base/exact", &[9u8; 512]);
        tar_symlink(&mut b, ::tar::Header::new_ustar(), "pg_wal", "../wal");
        b.into_inner().unwrap()
    }

    fn large_tar(rng: &mut Rng) -> Vec<u8> {
        let mut b = ::tar::Builder::new(Vec::new());
        let long = format!("base/16384/{}", "n".repeat(150));
        tar_dir(&mut b, "./");
        tar_dir(&mut b, "base/16384/");
        for i in 0..20 {
            let size = match i % 5 {
                0 => 0,
                1 => 512,
                2 => 511,
                3 => 513,
                _ => rng.below(70_000) as usize,
            };
            let body = rng.bytes(size);
            tar_file(
                &mut b,
                ::tar::Header::new_ustar(),
                &format!("base/16384/{i}"),
                &body,
            );
        }
        // Long names three ways: GNU 'L' entries, ustar's prefix field, PAX.
        tar_file(
            &mut b,
            ::tar::Header::new_gnu(),
            &format!("{long}-gnu"),
            &rng.bytes(3000),
        );
        let prefixed = format!("{}/file", "p".repeat(120));
        tar_file(
            &mut b,
            ::tar::Header::new_ustar(),
            &prefixed,
            &rng.bytes(100),
        );
        tar_pax_file(&mut b, &format!("{long}-pax"), &rng.bytes(1024));
        // A long link target (GNU 'K').
        let target = format!("../{}", "t".repeat(140));
        tar_symlink(&mut b, ::tar::Header::new_gnu(), "base/longlink", &target);
        tar_file(
            &mut b,
            ::tar::Header::new_ustar(),
            "last",
            &rng.bytes(100_000),
        );
        b.into_inner().unwrap()
    }

    #[test]
    fn matches_the_tar_crate_when_split_at_every_offset() {
        let tar = small_tar();
        let expected = oracle(&tar);
        assert_eq!(expected.len(), 5);
        assert_eq!(expected[3].2.len(), 512, "a file of exactly one block");
        for split in 0..=tar.len() {
            let (a, b) = tar.split_at(split);
            let seen = walk_pieces([a, b]).unwrap_or_else(|e| panic!("split {split}: {e}"));
            assert_eq!(seen, expected, "split at {split}");
        }
    }

    #[test]
    fn matches_the_tar_crate_with_random_chunks() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let tar = large_tar(&mut rng);
        let expected = oracle(&tar);
        assert_eq!(expected.len(), 27);
        let names: Vec<&str> = expected.iter().map(|s| s.0.as_str()).collect();
        assert!(names.iter().any(|n| n.ends_with("-gnu") && n.len() > 150));
        assert!(names.iter().any(|n| n.ends_with("-pax") && n.len() > 150));
        assert!(names
            .iter()
            .any(|n| n.starts_with("ppp") && n.ends_with("/file")));
        assert!(expected.iter().any(|s| s.3.len() > 140), "long link target");
        for round in 0..30 {
            let mut pieces = Vec::new();
            let mut rest = tar.as_slice();
            let max = [2, 600, 5000, 70_000][round % 4];
            while !rest.is_empty() {
                let n = (1 + rng.below(max) as usize).min(rest.len());
                let (piece, tail) = rest.split_at(n);
                pieces.push(piece);
                rest = tail;
            }
            let seen = walk_pieces(pieces.iter().copied())
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(seen, expected, "round {round}");
        }
    }

    #[test]
    fn filter_keeping_everything_returns_the_input() {
        let mut rng = Rng(7);
        let tar = large_tar(&mut rng);
        let mut w = TarWalker::new(
            "t.tar",
            Recorder {
                keep_links: true,
                ..Default::default()
            },
        );
        let mut out = Vec::new();
        for piece in tar.chunks(777) {
            for b in w.filter(&Bytes::copy_from_slice(piece)).unwrap() {
                out.extend_from_slice(&b);
            }
        }
        w.finish().unwrap();
        assert_eq!(out, tar);
    }

    #[test]
    fn walks_members_across_any_chunking() {
        let mut tar = header("global", 0, b'5');
        tar.extend(member("./PG_VERSION", b"15\n"));
        tar.extend(member("big", &vec![7u8; 3000]));
        tar.extend(symlink("pg_tblspc/16384", "/srv/ts"));
        tar.extend(end_marker());
        for chunk in [1usize, 7, 511, 512, 4096] {
            let s = walk_pieces(tar.chunks(chunk)).unwrap();
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
        tar.extend(end_marker());
        let mut expected = member("PG_VERSION", b"15\n");
        expected.extend(member("base/1/1", &[1u8; 700]));
        expected.extend(end_marker());
        for chunk in [1usize, 100, 512, 513, 10_000] {
            let mut w = walker();
            let mut out = Vec::new();
            for piece in tar.chunks(chunk) {
                for b in w.filter(&Bytes::copy_from_slice(piece)).unwrap() {
                    out.extend_from_slice(&b);
                }
            }
            w.finish().unwrap();
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
        tar.extend(end_marker());
        let seen = walk_all(&tar).unwrap();
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(names, vec![long.as_str(), format!("{long}-gnu").as_str()]);
        assert_eq!(seen[0].2, b"abc");
    }

    fn two_members() -> Vec<u8> {
        let mut tar = member("PG_VERSION", b"15\n");
        tar.extend(member("base/1/1259", &[5u8; 2000]));
        tar
    }

    #[test]
    fn a_flipped_header_byte_fails_its_checksum() {
        let mut tar = two_members();
        tar.extend(end_marker());
        tar[BLOCK * 2 + 3] ^= 0x20; // inside the second header's name
        let msg = damage(&tar);
        assert!(msg.contains("fails its checksum"), "{msg}");
        assert!(msg.contains("at byte 1024"), "{msg}");
        assert!(msg.contains("after member 'PG_VERSION'"), "{msg}");
        // A flip in the size field is caught the same way, not read as a size.
        let mut tar = two_members();
        tar.extend(end_marker());
        tar[BLOCK * 2 + 130] = b'7';
        assert!(damage(&tar).contains("fails its checksum"));
    }

    #[test]
    fn the_signed_checksum_variant_is_accepted() {
        let mut h = header("caf\u{e9}", 0, b'5'); // bytes >= 0x80 in the name
        h[148..156].copy_from_slice(b"        ");
        let signed: i64 = h.iter().map(|b| i64::from(*b as i8)).sum();
        h[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
        let unsigned: u64 = h.iter().map(|b| u64::from(*b)).sum();
        assert_ne!(
            signed as u64, unsigned,
            "the test needs the two sums to differ"
        );
        let mut tar = h;
        tar.extend(end_marker());
        assert_eq!(walk_all(&tar).unwrap()[0].0, "caf\u{e9}");
    }

    #[test]
    fn a_stream_cut_inside_a_member_is_truncated() {
        let mut tar = two_members();
        tar.extend(end_marker());
        // Cut in the content, in the padding, and inside a header.
        for cut in [1024 + 512 + 1000, 1024 + 512 + 2000 + 10, 1024 + 100] {
            let msg = damage(&tar[..cut]);
            assert!(msg.contains("truncated"), "cut {cut}: {msg}");
            assert!(msg.contains(&format!("at byte {cut}")), "cut {cut}: {msg}");
            if cut > 1536 {
                assert!(msg.contains("inside member 'base/1/1259'"), "{msg}");
                assert!(msg.contains("of its 2000 bytes"), "{msg}");
            } else {
                assert!(msg.contains("inside a tar header"), "{msg}");
            }
        }
    }

    #[test]
    fn a_stream_cut_at_a_member_boundary_has_no_end_marker() {
        let tar = two_members();
        for cut in [1024, tar.len()] {
            let msg = damage(&tar[..cut]);
            assert!(
                msg.contains("without the end-of-archive marker") && msg.contains("truncated"),
                "{msg}"
            );
        }
        assert!(damage(&tar[..1024]).contains("after member 'PG_VERSION'"));
        assert!(damage(b"").contains("is empty"));
    }

    #[test]
    fn a_single_zero_block_is_not_an_end_marker() {
        let mut tar = two_members();
        tar.extend(vec![0u8; BLOCK]);
        assert!(damage(&tar).contains("single zero block"));
        // Nor is a lone zero block between members.
        let mut tar = member("a", b"1");
        tar.extend(vec![0u8; BLOCK]);
        tar.extend(member("b", b"2"));
        tar.extend(end_marker());
        assert!(damage(&tar).contains("lone zero block at byte 1024"));
    }

    #[test]
    fn zero_padding_after_the_marker_is_fine_and_anything_else_is_not() {
        let mut tar = two_members();
        tar.extend(end_marker());
        let good = tar.len();
        tar.resize(good.next_multiple_of(10240) + 10240, 0); // record padding
        assert_eq!(walk_all(&tar).unwrap().len(), 2);
        tar.extend_from_slice(b"garbage");
        let msg = damage(&tar);
        assert!(
            msg.contains(&format!("non-zero data at byte {}", tar.len() - 7))
                && msg.contains(&format!("ends at byte {good}")),
            "{msg}"
        );
        // Reported by feed at once, and by every call after it.
        let mut w = walker();
        assert!(w.feed(&tar).is_err());
        assert!(w.feed(&[0u8; 512]).is_err());
        assert!(w.finish().is_err());
    }

    #[test]
    fn a_header_claiming_a_huge_size_is_refused() {
        // Regular files claiming the largest octal size (8 GiB - 1) and,
        // in GNU base-256, 1 TiB, in a short stream: truncated.
        let mut h = header("base/1/2", 0, b'0');
        h[124..136].copy_from_slice(b"77777777777\0");
        seal(&mut h);
        let mut tar = h.clone();
        tar.extend(vec![1u8; 4096]);
        tar.extend(end_marker());
        let msg = damage(&tar);
        assert!(msg.contains("after 5120 of its 8589934591 bytes"), "{msg}");
        h[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]);
        seal(&mut h);
        let mut tar = h.clone();
        tar.extend(end_marker());
        let msg = damage(&tar);
        assert!(msg.contains("of its 1099511627776 bytes"), "{msg}");
        // A base-256 size beyond 64 bits.
        h[124] = 0x80;
        h[125..136].copy_from_slice(&[0xff; 11]);
        seal(&mut h);
        let mut tar = h.clone();
        tar.extend(end_marker());
        assert!(damage(&tar).contains("unreadable size field"));
        // A PAX header claiming 1 GiB is not collected into memory.
        let mut tar = header("PaxHeader", 1 << 30, b'x');
        tar.extend(vec![b'a'; 4096]);
        let mut w = walker();
        let e = w.feed(&tar).unwrap_err().to_string();
        assert!(e.contains("extended header of 1073741824 bytes"), "{e}");
        assert!(w.meta.is_empty());
    }
}
