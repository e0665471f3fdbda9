//! Reading one JSON record byte by byte for the flat decoder: a [`Cursor`] over the record
//! (whitespace, strings, numbers, literals, skipping nested values) and the conversions of
//! string bodies and plain integers. Anything unusual returns `None`: the record is declined
//! and left to `arrow-json`.

use std::borrow::Cow;

/// Deepest nesting skipped inside an undeclared field; deeper records are declined.
const MAX_SKIP_DEPTH: usize = 32;

/// The string a JSON string body stands for; `None` for escapes left to `arrow-json`.
pub(super) fn text(raw: &[u8], escaped: bool) -> Option<Cow<'_, str>> {
    if !escaped {
        return std::str::from_utf8(raw).ok().map(Cow::Borrowed);
    }
    let mut out = Vec::with_capacity(raw.len());
    unescape_into(raw, &mut out)?;
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// Appends the string a JSON string body with escapes stands for; `None` for escapes left to
/// `arrow-json` (surrogates, which follow its own rules). `raw` is what `string_body` accepted:
/// valid UTF-8 whose escapes are well formed.
pub(super) fn unescape_into(raw: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut rest = raw;
    while let Some(at) = memchr::memchr(b'\\', rest) {
        out.extend_from_slice(&rest[..at]);
        let escape = *rest.get(at + 1)?;
        rest = &rest[at + 2..];
        let c = match escape {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hex = std::str::from_utf8(rest.get(..4)?).ok()?;
                rest = &rest[4..];
                // Surrogates (pairs or lone) follow arrow-json's own rules: leave them to it.
                char::from_u32(u32::from_str_radix(hex, 16).ok()?)?
            }
            _ => return None,
        };
        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    }
    out.extend_from_slice(rest);
    Some(())
}

/// An integer written as plain digits (`-12`), the only number form accepted for integer and
/// timestamp columns here; `1.0`, `1e3` and out-of-range values are left to `arrow-json`.
pub(super) fn plain_integer(n: &[u8]) -> Option<i64> {
    if n.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        return None;
    }
    std::str::from_utf8(n).ok()?.parse().ok()
}

/// A position in one record.
pub(super) struct Cursor<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    pub(super) fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    pub(super) fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    pub(super) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.peek() {
            self.pos += 1;
        }
    }

    /// Reads a string's body after its opening quote, up to and past the closing quote.
    /// Raw control characters, malformed escapes and invalid UTF-8 decline the record.
    pub(super) fn string_body(&mut self) -> Option<(&'a [u8], bool)> {
        let start = self.pos;
        let mut escaped = false;
        let mut ascii = true;
        loop {
            // Plain characters are most of every string: skip them in a tight loop.
            let rest = &self.bytes[self.pos..];
            let plain = rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b))
                .unwrap_or(rest.len());
            self.pos += plain;
            match self.next()? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    match self.next()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            for _ in 0..4 {
                                if !self.next()?.is_ascii_hexdigit() {
                                    return None;
                                }
                            }
                        }
                        _ => return None,
                    }
                }
                0x00..=0x1f => return None,
                _ => ascii = false,
            }
        }
        let raw = &self.bytes[start..self.pos - 1];
        if !ascii {
            std::str::from_utf8(raw).ok()?;
        }
        Some((raw, escaped))
    }

    /// Reads a number that follows JSON's grammar: `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`.
    pub(super) fn number(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.some_digits()?;
        }
        // A number must end at a delimiter, not run into letters (`12abc`).
        match self.peek() {
            None | Some(b' ' | b'\t' | b'\r' | b'\n' | b',' | b'}' | b']') => {
                Some(&self.bytes[start..self.pos])
            }
            _ => None,
        }
    }

    pub(super) fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    pub(super) fn some_digits(&mut self) -> Option<()> {
        let start = self.pos;
        self.digits();
        (self.pos > start).then_some(())
    }

    pub(super) fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos + word.len();
        (self.bytes.get(self.pos..end)? == word).then(|| self.pos = end)?;
        match self.peek() {
            None | Some(b' ' | b'\t' | b'\r' | b'\n' | b',' | b'}' | b']') => Some(()),
            _ => None,
        }
    }

    /// Checks and skips a number, `true`, `false` or `null`.
    pub(super) fn skip_number_or_literal(&mut self) -> Option<()> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => None,
        }
    }

    /// Checks and skips the value of an undeclared field.
    pub(super) fn skip_value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'{' | b'[' if depth >= MAX_SKIP_DEPTH => None,
            b'{' => {
                self.pos += 1;
                self.skip_ws();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Some(());
                }
                loop {
                    self.expect(b'"')?;
                    let (_, escaped) = self.string_body()?;
                    if escaped {
                        return None;
                    }
                    self.skip_ws();
                    self.expect(b':')?;
                    self.skip_ws();
                    self.skip_value(depth + 1)?;
                    self.skip_ws();
                    match self.next()? {
                        b',' => self.skip_ws(),
                        b'}' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.pos += 1;
                self.skip_ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Some(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    self.skip_ws();
                    match self.next()? {
                        b',' => self.skip_ws(),
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'"' => {
                self.pos += 1;
                let (raw, escaped) = self.string_body()?;
                // Its escapes must be ones this decoder understands, as for declared fields.
                if escaped {
                    text(raw, true)?;
                }
                Some(())
            }
            _ => self.skip_number_or_literal(),
        }
    }
}
