//! The fast path of JSON decoding: flat objects of scalars, the shape of nearly every event.
//!
//! `arrow-json` first tokenizes records onto a tape and then walks the tape once per column; on
//! the benchmarks that was half of all CPU. This decoder reads each record once, straight into
//! the column builders, and predicts each key from the previous one (producers write their keys
//! in a stable order).
//!
//! It is deliberately a strict subset of `arrow-json`: a record it is not sure about (a syntax
//! or type error, a missing NOT NULL field, a duplicate key, a nested value in an undeclared
//! field, a number in an unusual form, a UTF-16 surrogate escape, ...) is *declined*, not
//! rejected, and [`crate::decode::JsonDecoder`] hands it to `arrow-json`, which accepts it or
//! explains why not. Every value it does accept is converted with the same functions
//! `arrow-json` uses (`string_to_datetime`, a correctly rounded float parse), so the rows are
//! identical; `decode::tests` checks that on random, partly broken records.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::timezone::Tz;
use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder, Int16Builder,
    Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::compute::kernels::cast_utils::{string_to_datetime, Parser};
use arrow::datatypes::{DataType, Date32Type, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use chrono::Utc;

/// Deepest nesting skipped inside an undeclared field; deeper records are declined.
const MAX_SKIP_DEPTH: usize = 32;

/// Decodes flat JSON objects whose declared columns all have scalar types.
#[derive(Debug, Clone)]
pub struct FlatJsonDecoder {
    schema: SchemaRef,
    fields: Vec<FlatField>,
}

/// One declared column.
#[derive(Debug, Clone)]
struct FlatField {
    name: Box<[u8]>,
    kind: Kind,
    data_type: DataType,
    nullable: bool,
}

/// The column types the fast path decodes.
#[derive(Debug, Clone)]
enum Kind {
    Utf8,
    Boolean,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Date32,
    /// Milliseconds in UTC (or no zone, which `arrow-json` also reads as UTC).
    TimestampMsUtc,
    /// Milliseconds; the zone is the one `arrow-json` interprets zone-less strings in.
    TimestampMs(Tz),
}

/// What one call to [`FlatJsonDecoder::decode`] produced.
#[derive(Debug)]
pub struct FlatDecoded {
    /// The accepted records, in input order.
    pub batch: RecordBatch,
    /// Indices (into the caller's `records`) of the rows of `batch`.
    pub kept: Vec<usize>,
    /// Indices (into the caller's `records`) of the records left to `arrow-json`.
    pub declined: Vec<usize>,
}

/// A field's raw value inside a record, before conversion.
#[derive(Debug, Clone, Copy)]
enum Slot<'a> {
    Missing,
    Null,
    /// The bytes between the quotes; `escaped` when they contain a backslash.
    Str {
        raw: &'a [u8],
        escaped: bool,
    },
    /// A number that follows JSON's grammar.
    Number(&'a [u8]),
    Bool(bool),
}

/// A converted value, ready to append.
#[derive(Debug)]
enum Cell<'a> {
    Null,
    Text(Cow<'a, str>),
    Bool(bool),
    Int(i64),
    Float(f64),
    Float32(f32),
}

impl FlatJsonDecoder {
    /// A decoder for `schema`, or `None` when a column has a type the fast path does not
    /// decode (then `arrow-json` decodes everything) or there are more than 64 columns.
    pub fn try_new(schema: &SchemaRef) -> Option<Self> {
        if schema.fields().len() > 64 {
            return None;
        }
        let mut fields = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let kind = match field.data_type() {
                DataType::Utf8 => Kind::Utf8,
                DataType::Boolean => Kind::Boolean,
                DataType::Int16 => Kind::Int16,
                DataType::Int32 => Kind::Int32,
                DataType::Int64 => Kind::Int64,
                DataType::Float32 => Kind::Float32,
                DataType::Float64 => Kind::Float64,
                DataType::Date32 => Kind::Date32,
                // UTC has no transitions, so chrono's `Utc` reads every string exactly as the
                // "UTC" zone arrow-json uses would, without a zone-table lookup per value.
                DataType::Timestamp(TimeUnit::Millisecond, None) => Kind::TimestampMsUtc,
                DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) if tz.as_ref() == "UTC" => {
                    Kind::TimestampMsUtc
                }
                DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) => {
                    Kind::TimestampMs(tz.parse().ok()?)
                }
                _ => return None,
            };
            let name: Box<[u8]> = field.name().as_bytes().into();
            if fields.iter().any(|f: &FlatField| f.name == name) {
                return None;
            }
            fields.push(FlatField {
                name,
                kind,
                data_type: field.data_type().clone(),
                nullable: field.is_nullable(),
            });
        }
        Some(FlatJsonDecoder {
            schema: schema.clone(),
            fields,
        })
    }

    /// Decodes the records at `subset` (indices into `records`, ranges into `data`).
    pub fn decode(
        &self,
        data: &[u8],
        records: &[Range<usize>],
        subset: impl ExactSizeIterator<Item = usize>,
    ) -> Result<FlatDecoded, ArrowError> {
        let mut builders: Vec<ColumnBuilder> = self
            .fields
            .iter()
            .map(|f| ColumnBuilder::new(f, subset.len()))
            .collect();
        let mut kept = Vec::with_capacity(subset.len());
        let mut declined = Vec::new();
        let mut slots: Vec<Slot> = vec![Slot::Missing; self.fields.len()];
        let mut cells: Vec<Cell> = Vec::with_capacity(self.fields.len());
        for i in subset {
            let record = &data[records[i].clone()];
            slots.fill(Slot::Missing);
            cells.clear();
            let accepted = self.parse_record(record, &mut slots).is_some()
                && self.convert(&slots, &mut cells).is_some();
            if accepted {
                for (builder, cell) in builders.iter_mut().zip(cells.drain(..)) {
                    builder.append(cell);
                }
                kept.push(i);
            } else {
                declined.push(i);
            }
        }
        let columns: Vec<ArrayRef> = builders.iter_mut().map(ColumnBuilder::finish).collect();
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        Ok(FlatDecoded {
            batch,
            kept,
            declined,
        })
    }

    /// Splits one record into its declared fields' raw values; `None` declines it.
    fn parse_record<'a>(&self, record: &'a [u8], slots: &mut [Slot<'a>]) -> Option<()> {
        // Outside strings the grammar admits only ASCII, and `string_body` checks strings'
        // UTF-8, so the whole record is known to be valid UTF-8 once it parses.
        let mut cur = Cursor {
            bytes: record,
            pos: 0,
        };
        cur.skip_ws();
        cur.expect(b'{')?;
        cur.skip_ws();
        let mut seen: u64 = 0;
        let mut next_guess = 0usize;
        if cur.peek() == Some(b'}') {
            cur.pos += 1;
        } else {
            loop {
                cur.expect(b'"')?;
                let (key, escaped) = cur.string_body()?;
                if escaped {
                    return None;
                }
                cur.skip_ws();
                cur.expect(b':')?;
                cur.skip_ws();
                match self.field_index(key, next_guess) {
                    Some(f) => {
                        if seen & (1u64 << f) != 0 {
                            return None;
                        }
                        seen |= 1u64 << f;
                        next_guess = f + 1;
                        slots[f] = cur.scalar()?;
                    }
                    None => cur.skip_value(0)?,
                }
                cur.skip_ws();
                match cur.next()? {
                    b',' => cur.skip_ws(),
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        cur.skip_ws();
        cur.at_end().then_some(())
    }

    /// The declared field named `key`, trying `guess` first.
    fn field_index(&self, key: &[u8], guess: usize) -> Option<usize> {
        if let Some(f) = self.fields.get(guess) {
            if *f.name == *key {
                return Some(guess);
            }
        }
        self.fields.iter().position(|f| *f.name == *key)
    }

    /// Converts every slot to its column's type; `None` declines the record.
    fn convert<'a>(&self, slots: &[Slot<'a>], cells: &mut Vec<Cell<'a>>) -> Option<()> {
        for (field, slot) in self.fields.iter().zip(slots) {
            let cell = match (slot, &field.kind) {
                (Slot::Missing | Slot::Null, _) if field.nullable => Cell::Null,
                (Slot::Missing | Slot::Null, _) => return None,
                (Slot::Str { raw, escaped }, Kind::Utf8) => Cell::Text(text(raw, *escaped)?),
                (Slot::Bool(b), Kind::Boolean) => Cell::Bool(*b),
                (Slot::Number(n), Kind::Int16) => {
                    Cell::Int(i16::try_from(plain_integer(n)?).ok()?.into())
                }
                (Slot::Number(n), Kind::Int32) => {
                    Cell::Int(i32::try_from(plain_integer(n)?).ok()?.into())
                }
                (Slot::Number(n), Kind::Int64) => Cell::Int(plain_integer(n)?),
                (Slot::Number(n), Kind::Float64) => {
                    let v: f64 = std::str::from_utf8(n).ok()?.parse().ok()?;
                    v.is_finite().then_some(Cell::Float(v))?
                }
                (Slot::Number(n), Kind::Float32) => {
                    let v: f32 = std::str::from_utf8(n).ok()?.parse().ok()?;
                    v.is_finite().then_some(Cell::Float32(v))?
                }
                (Slot::Str { raw, escaped }, Kind::Date32) => {
                    let s = text(raw, *escaped)?;
                    Cell::Int(Date32Type::parse(&s)?.into())
                }
                (Slot::Number(n), Kind::Date32) => {
                    Cell::Int(i32::try_from(plain_integer(n)?).ok()?.into())
                }
                (Slot::Str { raw, escaped }, Kind::TimestampMs(tz)) => {
                    let s = text(raw, *escaped)?;
                    Cell::Int(string_to_datetime(tz, &s).ok()?.timestamp_millis())
                }
                (Slot::Str { raw, escaped }, Kind::TimestampMsUtc) => {
                    let s = text(raw, *escaped)?;
                    Cell::Int(string_to_datetime(&Utc, &s).ok()?.timestamp_millis())
                }
                (Slot::Number(n), Kind::TimestampMs(_) | Kind::TimestampMsUtc) => {
                    Cell::Int(plain_integer(n)?)
                }
                _ => return None,
            };
            cells.push(cell);
        }
        Some(())
    }
}

/// The string a JSON string body stands for; `None` for escapes left to `arrow-json`.
fn text(raw: &[u8], escaped: bool) -> Option<Cow<'_, str>> {
    let s = std::str::from_utf8(raw).ok()?;
    if !escaped {
        return Some(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = u32::from_str_radix(&hex, 16).ok()?;
                // Surrogates (pairs or lone) follow arrow-json's own rules: leave them to it.
                char::from_u32(code).filter(|_| hex.len() == 4)?
            }
            _ => return None,
        });
    }
    Some(Cow::Owned(out))
}

/// An integer written as plain digits (`-12`), the only number form accepted for integer and
/// timestamp columns here; `1.0`, `1e3` and out-of-range values are left to `arrow-json`.
fn plain_integer(n: &[u8]) -> Option<i64> {
    if n.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        return None;
    }
    std::str::from_utf8(n).ok()?.parse().ok()
}

/// A position in one record.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.peek() {
            self.pos += 1;
        }
    }

    /// Reads a string's body after its opening quote, up to and past the closing quote.
    /// Raw control characters, malformed escapes and invalid UTF-8 decline the record.
    fn string_body(&mut self) -> Option<(&'a [u8], bool)> {
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
    fn number(&mut self) -> Option<&'a [u8]> {
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

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.pos;
        self.digits();
        (self.pos > start).then_some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos + word.len();
        (self.bytes.get(self.pos..end)? == word).then(|| self.pos = end)?;
        match self.peek() {
            None | Some(b' ' | b'\t' | b'\r' | b'\n' | b',' | b'}' | b']') => Some(()),
            _ => None,
        }
    }

    /// Reads a declared field's value; nested values decline the record.
    fn scalar(&mut self) -> Option<Slot<'a>> {
        match self.peek()? {
            b'"' => {
                self.pos += 1;
                let (raw, escaped) = self.string_body()?;
                Some(Slot::Str { raw, escaped })
            }
            b'-' | b'0'..=b'9' => self.number().map(Slot::Number),
            b't' => self.literal(b"true").map(|_| Slot::Bool(true)),
            b'f' => self.literal(b"false").map(|_| Slot::Bool(false)),
            b'n' => self.literal(b"null").map(|_| Slot::Null),
            _ => None,
        }
    }

    /// Checks and skips the value of an undeclared field.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
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
            _ => self.scalar().map(|_| ()),
        }
    }
}

/// The builder of one output column.
enum ColumnBuilder {
    Utf8(StringBuilder),
    Boolean(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Date32(Date32Builder),
    TimestampMs(TimestampMillisecondBuilder, DataType),
}

impl ColumnBuilder {
    fn new(field: &FlatField, rows: usize) -> Self {
        match &field.kind {
            Kind::Utf8 => ColumnBuilder::Utf8(StringBuilder::with_capacity(rows, rows * 16)),
            Kind::Boolean => ColumnBuilder::Boolean(BooleanBuilder::with_capacity(rows)),
            Kind::Int16 => ColumnBuilder::Int16(Int16Builder::with_capacity(rows)),
            Kind::Int32 => ColumnBuilder::Int32(Int32Builder::with_capacity(rows)),
            Kind::Int64 => ColumnBuilder::Int64(Int64Builder::with_capacity(rows)),
            Kind::Float32 => ColumnBuilder::Float32(Float32Builder::with_capacity(rows)),
            Kind::Float64 => ColumnBuilder::Float64(Float64Builder::with_capacity(rows)),
            Kind::Date32 => ColumnBuilder::Date32(Date32Builder::with_capacity(rows)),
            Kind::TimestampMs(_) | Kind::TimestampMsUtc => ColumnBuilder::TimestampMs(
                TimestampMillisecondBuilder::with_capacity(rows),
                field.data_type.clone(),
            ),
        }
    }

    /// Appends a converted cell; `convert` guarantees it matches the column's kind.
    fn append(&mut self, cell: Cell) {
        match (self, cell) {
            (ColumnBuilder::Utf8(b), Cell::Text(s)) => b.append_value(s),
            (ColumnBuilder::Boolean(b), Cell::Bool(v)) => b.append_value(v),
            (ColumnBuilder::Int16(b), Cell::Int(v)) => b.append_value(v as i16),
            (ColumnBuilder::Int32(b), Cell::Int(v)) => b.append_value(v as i32),
            (ColumnBuilder::Int64(b), Cell::Int(v)) => b.append_value(v),
            (ColumnBuilder::Float32(b), Cell::Float32(v)) => b.append_value(v),
            (ColumnBuilder::Float64(b), Cell::Float(v)) => b.append_value(v),
            (ColumnBuilder::Date32(b), Cell::Int(v)) => b.append_value(v as i32),
            (ColumnBuilder::TimestampMs(b, _), Cell::Int(v)) => b.append_value(v),
            (b, Cell::Null) => b.append_null(),
            (_, cell) => unreachable!("convert produced {cell:?} for another column type"),
        }
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Utf8(b) => b.append_null(),
            ColumnBuilder::Boolean(b) => b.append_null(),
            ColumnBuilder::Int16(b) => b.append_null(),
            ColumnBuilder::Int32(b) => b.append_null(),
            ColumnBuilder::Int64(b) => b.append_null(),
            ColumnBuilder::Float32(b) => b.append_null(),
            ColumnBuilder::Float64(b) => b.append_null(),
            ColumnBuilder::Date32(b) => b.append_null(),
            ColumnBuilder::TimestampMs(b, _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Utf8(b) => Arc::new(b.finish()),
            ColumnBuilder::Boolean(b) => Arc::new(b.finish()),
            ColumnBuilder::Int16(b) => Arc::new(b.finish()),
            ColumnBuilder::Int32(b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(b) => Arc::new(b.finish()),
            ColumnBuilder::Float32(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
            ColumnBuilder::Date32(b) => Arc::new(b.finish()),
            ColumnBuilder::TimestampMs(b, data_type) => {
                Arc::new(b.finish().with_data_type(data_type.clone()))
            }
        }
    }
}
