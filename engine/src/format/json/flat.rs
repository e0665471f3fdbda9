//! The fast path of JSON decoding: flat objects of scalars, the shape of nearly every event.
//!
//! `arrow-json` first tokenizes records onto a tape and then walks the tape once per column; on
//! the benchmarks that was half of all CPU. This decoder reads each record once, converting each
//! value straight into its column's buffer, and predicts each key from the previous one
//! (producers write their keys in a stable order). A record found bad halfway is rolled back:
//! every column drops what it got from that record.
//!
//! It is deliberately a strict subset of `arrow-json`: a record it is not sure about (a syntax
//! or type error, a missing NOT NULL field, a duplicate key, a nested value in an undeclared
//! field, a number in an unusual form, a UTF-16 surrogate escape, ...) is *declined*, not
//! rejected, and [`crate::format::json::decode::JsonDecoder`] hands it to `arrow-json`, which accepts it or
//! explains why not. Every value it does accept is converted with the same functions
//! `arrow-json` uses (`string_to_datetime`, a correctly rounded float parse), so the rows are
//! identical; `decode::tests` checks that on random, partly broken records.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::timezone::Tz;
use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float32Array, Float64Array, Int16Array, Int32Array,
    Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::kernels::cast_utils::{string_to_datetime, Parser};
use arrow::datatypes::{DataType, Date32Type, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use chrono::Utc;

use super::cursor::{plain_integer, text, unescape_into, Cursor};

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
    /// The name has no character JSON must escape, so a key can be compared with it as is.
    written_as_is: bool,
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
                // A name JSON writes with escapes can never match the raw bytes of a key.
                written_as_is: !name.iter().any(|b| matches!(b, b'"' | b'\\' | 0x00..=0x1f)),
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
        let bytes: usize = records.iter().map(|r| r.len()).sum();
        let string_columns = self
            .fields
            .iter()
            .filter(|f| matches!(f.kind, Kind::Utf8))
            .count()
            .max(1);
        // Strings are most of a record's bytes; share an estimate of them among the columns.
        let string_bytes = bytes.saturating_mul(subset.len()) / records.len().max(1) / 2;
        let mut columns: Vec<ColumnBuffer> = self
            .fields
            .iter()
            .map(|f| ColumnBuffer::new(&f.kind, subset.len(), string_bytes / string_columns))
            .collect();
        let mut rows = 0;
        let mut kept = Vec::with_capacity(subset.len());
        let mut declined = Vec::new();
        for i in subset {
            let record = &data[records[i].clone()];
            if self.parse_record(record, &mut columns, rows).is_some() {
                rows += 1;
                kept.push(i);
            } else {
                for column in &mut columns {
                    column.truncate(rows);
                }
                declined.push(i);
            }
        }
        let arrays = self
            .fields
            .iter()
            .zip(columns)
            .map(|(field, column)| column.finish(&field.data_type, rows))
            .collect::<Result<Vec<ArrayRef>, ArrowError>>()?;
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)?;
        Ok(FlatDecoded {
            batch,
            kept,
            declined,
        })
    }

    /// Reads one record into row `row` of `columns`; `None` declines it (then some columns may
    /// hold a value of it, which the caller rolls back).
    fn parse_record(&self, record: &[u8], columns: &mut [ColumnBuffer], row: usize) -> Option<()> {
        // `string_body` checks the UTF-8 of every non-ASCII string, so a bad string declines
        // its record here and the column-wide check in `ColumnBuffer::finish` cannot fail.
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
                let field = match self.expected_key(&mut cur, next_guess) {
                    Some(f) => Some(f),
                    None => {
                        let (key, escaped) = cur.string_body()?;
                        if escaped {
                            return None;
                        }
                        self.fields.iter().position(|f| *f.name == *key)
                    }
                };
                cur.skip_ws();
                cur.expect(b':')?;
                cur.skip_ws();
                match field {
                    Some(f) => {
                        if seen & (1u64 << f) != 0 {
                            return None;
                        }
                        seen |= 1u64 << f;
                        next_guess = f + 1;
                        columns[f].read_value(&mut cur, &self.fields[f], row)?;
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
        if !cur.at_end() {
            return None;
        }
        // Fields the record does not have are null, if they may be.
        let all = u64::MAX >> (64 - self.fields.len().max(1));
        let mut missing = all & !seen;
        while missing != 0 {
            let f = missing.trailing_zeros() as usize;
            missing &= missing - 1;
            if !self.fields.get(f)?.nullable {
                return None;
            }
            columns[f].push_null(row);
        }
        Some(())
    }

    /// When the key at the cursor (just past its opening quote) is the declared field `guess`,
    /// moves past its closing quote and returns it; otherwise leaves the cursor alone.
    fn expected_key(&self, cur: &mut Cursor, guess: usize) -> Option<usize> {
        let field = self.fields.get(guess).filter(|f| f.written_as_is)?;
        let end = cur.pos + field.name.len();
        if cur.bytes.get(cur.pos..end)? == &*field.name && cur.bytes.get(end) == Some(&b'"') {
            cur.pos = end + 1;
            Some(guess)
        } else {
            None
        }
    }
}

/// One output column of a chunk as it is built. Rows are appended one value at a time, and a
/// declined record's values are dropped again with [`ColumnBuffer::truncate`].
struct ColumnBuffer {
    values: Values,
    /// The rows that are null, ascending (their slot in `values` holds a placeholder).
    null_rows: Vec<usize>,
}

/// A column's values, in the representation of its Arrow array.
enum Values {
    /// Offsets (one more than rows) into `bytes`, the strings' UTF-8 back to back.
    Utf8 {
        offsets: Vec<i32>,
        bytes: Vec<u8>,
    },
    Boolean(Vec<bool>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Float32(Vec<f32>),
    Float64(Vec<f64>),
    Date32(Vec<i32>),
    /// Milliseconds, in any zone.
    TimestampMs(Vec<i64>),
}

impl ColumnBuffer {
    fn new(kind: &Kind, rows: usize, string_bytes: usize) -> Self {
        let values = match kind {
            Kind::Utf8 => {
                let mut offsets = Vec::with_capacity(rows + 1);
                offsets.push(0);
                Values::Utf8 {
                    offsets,
                    bytes: Vec::with_capacity(string_bytes),
                }
            }
            Kind::Boolean => Values::Boolean(Vec::with_capacity(rows)),
            Kind::Int16 => Values::Int16(Vec::with_capacity(rows)),
            Kind::Int32 => Values::Int32(Vec::with_capacity(rows)),
            Kind::Int64 => Values::Int64(Vec::with_capacity(rows)),
            Kind::Float32 => Values::Float32(Vec::with_capacity(rows)),
            Kind::Float64 => Values::Float64(Vec::with_capacity(rows)),
            Kind::Date32 => Values::Date32(Vec::with_capacity(rows)),
            Kind::TimestampMs(_) | Kind::TimestampMsUtc => {
                Values::TimestampMs(Vec::with_capacity(rows))
            }
        };
        ColumnBuffer {
            values,
            null_rows: Vec::new(),
        }
    }

    /// Reads a declared field's value (at the cursor) into row `row`; a nested value or one of
    /// the wrong type declines the record.
    fn read_value(&mut self, cur: &mut Cursor, field: &FlatField, row: usize) -> Option<()> {
        match cur.peek()? {
            b'"' => {
                cur.pos += 1;
                let (raw, escaped) = cur.string_body()?;
                self.push_string(&field.kind, raw, escaped)
            }
            b'-' | b'0'..=b'9' => self.push_number(cur.number()?),
            b't' => {
                cur.literal(b"true")?;
                self.push_bool(true)
            }
            b'f' => {
                cur.literal(b"false")?;
                self.push_bool(false)
            }
            b'n' => {
                cur.literal(b"null")?;
                field.nullable.then(|| self.push_null(row))
            }
            _ => None,
        }
    }

    /// Appends a JSON string's value; `None` when the column's type cannot take it as
    /// `arrow-json` would.
    fn push_string(&mut self, kind: &Kind, raw: &[u8], escaped: bool) -> Option<()> {
        match (&mut self.values, kind) {
            (Values::Utf8 { offsets, bytes }, _) => {
                if escaped {
                    let start = bytes.len();
                    if unescape_into(raw, bytes).is_none() {
                        bytes.truncate(start);
                        return None;
                    }
                } else {
                    bytes.extend_from_slice(raw);
                }
                // Offsets are 32-bit: a chunk with more than 2 GiB of strings is left to
                // arrow-json, record by record.
                match i32::try_from(bytes.len()) {
                    Ok(end) => offsets.push(end),
                    Err(_) => {
                        bytes.truncate(*offsets.last()? as usize);
                        return None;
                    }
                }
            }
            (Values::Date32(v), _) => v.push(Date32Type::parse(&text(raw, escaped)?)?),
            (Values::TimestampMs(v), Kind::TimestampMsUtc) => v.push(
                string_to_datetime(&Utc, &text(raw, escaped)?)
                    .ok()?
                    .timestamp_millis(),
            ),
            (Values::TimestampMs(v), Kind::TimestampMs(tz)) => v.push(
                string_to_datetime(tz, &text(raw, escaped)?)
                    .ok()?
                    .timestamp_millis(),
            ),
            _ => return None,
        }
        Some(())
    }

    /// Appends a JSON number (as `number` read it); `None` when the column's type cannot take
    /// it as `arrow-json` would.
    fn push_number(&mut self, n: &[u8]) -> Option<()> {
        match &mut self.values {
            Values::Int16(v) => v.push(i16::try_from(plain_integer(n)?).ok()?),
            Values::Int32(v) | Values::Date32(v) => v.push(i32::try_from(plain_integer(n)?).ok()?),
            Values::Int64(v) | Values::TimestampMs(v) => v.push(plain_integer(n)?),
            Values::Float64(v) => {
                let x: f64 = std::str::from_utf8(n).ok()?.parse().ok()?;
                v.push(x.is_finite().then_some(x)?)
            }
            Values::Float32(v) => {
                let x: f32 = std::str::from_utf8(n).ok()?.parse().ok()?;
                v.push(x.is_finite().then_some(x)?)
            }
            Values::Utf8 { .. } | Values::Boolean(_) => return None,
        }
        Some(())
    }

    /// Appends `true` or `false`; only a BOOLEAN column takes them.
    fn push_bool(&mut self, b: bool) -> Option<()> {
        match &mut self.values {
            Values::Boolean(v) => v.push(b),
            _ => return None,
        }
        Some(())
    }

    /// Appends a null as row `row`.
    fn push_null(&mut self, row: usize) {
        match &mut self.values {
            // An empty string: it ends where the previous one did.
            Values::Utf8 { offsets, .. } => offsets.push(offsets.last().copied().unwrap_or(0)),
            Values::Boolean(v) => v.push(false),
            Values::Int16(v) => v.push(0),
            Values::Int32(v) | Values::Date32(v) => v.push(0),
            Values::Int64(v) | Values::TimestampMs(v) => v.push(0),
            Values::Float32(v) => v.push(0.0),
            Values::Float64(v) => v.push(0.0),
        }
        self.null_rows.push(row);
    }

    /// Drops every row from `rows` on (the values of a declined record).
    fn truncate(&mut self, rows: usize) {
        match &mut self.values {
            Values::Utf8 { offsets, bytes } => {
                offsets.truncate(rows + 1);
                bytes.truncate(offsets[rows] as usize);
            }
            Values::Boolean(v) => v.truncate(rows),
            Values::Int16(v) => v.truncate(rows),
            Values::Int32(v) | Values::Date32(v) => v.truncate(rows),
            Values::Int64(v) | Values::TimestampMs(v) => v.truncate(rows),
            Values::Float32(v) => v.truncate(rows),
            Values::Float64(v) => v.truncate(rows),
        }
        while self.null_rows.last().is_some_and(|&r| r >= rows) {
            self.null_rows.pop();
        }
    }

    /// The Arrow array of `data_type` holding the column's `rows` rows. Strings' UTF-8 is
    /// checked once here, for the whole column.
    fn finish(self, data_type: &DataType, rows: usize) -> Result<ArrayRef, ArrowError> {
        let nulls = (!self.null_rows.is_empty()).then(|| {
            let mut valid = vec![true; rows];
            for &row in &self.null_rows {
                valid[row] = false;
            }
            NullBuffer::from(valid)
        });
        Ok(match self.values {
            Values::Utf8 { offsets, bytes } => Arc::new(StringArray::try_new(
                OffsetBuffer::new(ScalarBuffer::from(offsets)),
                Buffer::from_vec(bytes),
                nulls,
            )?),
            Values::Boolean(v) => Arc::new(BooleanArray::new(BooleanBuffer::from(v), nulls)),
            Values::Int16(v) => Arc::new(Int16Array::try_new(v.into(), nulls)?),
            Values::Int32(v) => Arc::new(Int32Array::try_new(v.into(), nulls)?),
            Values::Int64(v) => Arc::new(Int64Array::try_new(v.into(), nulls)?),
            Values::Float32(v) => Arc::new(Float32Array::try_new(v.into(), nulls)?),
            Values::Float64(v) => Arc::new(Float64Array::try_new(v.into(), nulls)?),
            Values::Date32(v) => Arc::new(Date32Array::try_new(v.into(), nulls)?),
            Values::TimestampMs(v) => Arc::new(
                TimestampMillisecondArray::try_new(v.into(), nulls)?
                    .with_data_type(data_type.clone()),
            ),
        })
    }
}
