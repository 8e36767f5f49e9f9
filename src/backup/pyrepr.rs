//! The slice of Python literal syntax Barman's backup.info uses: `repr()` of
//! strings (for backup_label), lists of tuples (tablespaces) and small dicts,
//! written and read back.

/// Python's `repr()` of a str: single quotes unless the text has a single
/// quote and no double quote; backslash escapes for control characters.
pub fn repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// A parsed Python literal (only the kinds backup.info holds).
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<PyValue>),
    Tuple(Vec<PyValue>),
    Dict(Vec<(PyValue, PyValue)>),
}

impl PyValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            PyValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn items(&self) -> Option<&[PyValue]> {
        match self {
            PyValue::List(v) | PyValue::Tuple(v) => Some(v),
            _ => None,
        }
    }
}

/// Parses a Python literal; `None` if the text is not one we understand.
pub fn parse(text: &str) -> Option<PyValue> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value()?;
    p.ws();
    (p.i == p.s.len()).then_some(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, word: &str) -> bool {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<PyValue> {
        self.ws();
        match self.peek()? {
            b'\'' | b'"' => self.string().map(PyValue::Str),
            b'[' => self.seq(b']').map(PyValue::List),
            b'(' => self.seq(b')').map(PyValue::Tuple),
            b'{' => self.dict(),
            _ if self.eat("None") => Some(PyValue::None),
            _ if self.eat("True") => Some(PyValue::Bool(true)),
            _ if self.eat("False") => Some(PyValue::Bool(false)),
            _ => self.number(),
        }
    }

    fn number(&mut self) -> Option<PyValue> {
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_digit() || b"+-.eE".contains(&self.s[self.i]))
        {
            self.i += 1;
        }
        let t = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        t.parse::<i64>()
            .map(PyValue::Int)
            .ok()
            .or_else(|| t.parse::<f64>().ok().map(PyValue::Float))
    }

    fn string(&mut self) -> Option<String> {
        let quote = self.peek()?;
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            if c == quote {
                break;
            }
            if c != b'\\' {
                out.push(c);
                continue;
            }
            let e = self.peek()?;
            self.i += 1;
            match e {
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'\\' | b'\'' | b'"' => out.push(e),
                b'x' => {
                    let hex = std::str::from_utf8(self.s.get(self.i..self.i + 2)?).ok()?;
                    let ch = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    self.i += 2;
                }
                other => {
                    out.push(b'\\');
                    out.push(other);
                }
            }
        }
        String::from_utf8(out).ok()
    }

    fn seq(&mut self, close: u8) -> Option<Vec<PyValue>> {
        self.i += 1;
        let mut items = Vec::new();
        loop {
            self.ws();
            if self.peek()? == close {
                self.i += 1;
                return Some(items);
            }
            items.push(self.value()?);
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                c if c == close => {}
                _ => return None,
            }
        }
    }

    fn dict(&mut self) -> Option<PyValue> {
        self.i += 1;
        let mut items = Vec::new();
        loop {
            self.ws();
            if self.peek()? == b'}' {
                self.i += 1;
                return Some(PyValue::Dict(items));
            }
            let k = self.value()?;
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.i += 1;
            let v = self.value()?;
            items.push((k, v));
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {}
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_matches_python() {
        assert_eq!(repr_str("a\nb"), "'a\\nb'");
        assert_eq!(repr_str("it's"), "\"it's\"");
        assert_eq!(repr_str("both ' and \""), "'both \\' and \"'");
        assert_eq!(repr_str("back\\slash"), "'back\\\\slash'");
    }

    #[test]
    fn round_trips_strings() {
        for s in [
            "START WAL LOCATION: 4/E4000028\nLABEL: x\n",
            "it's",
            "a'b\"c",
            "tab\there",
            "\u{1}",
        ] {
            assert_eq!(
                parse(&repr_str(s)),
                Some(PyValue::Str(s.to_string())),
                "{s:?}"
            );
        }
    }

    #[test]
    fn parses_barman_values() {
        let t = parse("[('ts1', 16592, '/srv/tblspc'), ('b', 2, '/x')]").unwrap();
        let first = &t.items().unwrap()[0];
        assert_eq!(first.items().unwrap()[0].as_str(), Some("ts1"));
        assert_eq!(first.items().unwrap()[1].as_int(), Some(16592));
        let d = parse("{'total_time': 84.629754, 'number_of_workers': 2}").unwrap();
        assert!(matches!(d, PyValue::Dict(ref v) if v.len() == 2));
        assert_eq!(parse("None"), Some(PyValue::None));
        assert_eq!(
            parse("['/a/postgresql.auto.conf']")
                .unwrap()
                .items()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(parse("[1, 2"), None);
    }
}
