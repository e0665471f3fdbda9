//! Dead letters: records a source delivered but the pipeline could not use, kept with the raw
//! text, the reason, where they came from and the epoch, so nothing is silently lost.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use crate::format::json::decode::Rejected;
use crate::operators::window::EVENT_TIME_COLUMN;
use crate::source::raw::RawBatch;

/// The columns every dead-letter table has, whatever its source. `table`, `watermark` and
/// `event_time` are set for late rows only: which windowed table found the row late, the
/// watermark it used, and the row's event time (a record that could not be decoded has none
/// of them).
pub fn base_dead_letter_schema() -> SchemaRef {
    dead_letter_schema(&[])
}

/// The schema of a source's dead-letter table: the base columns, then the source's own
/// metadata columns (`_file`, `_line`; `_topic`, `_partition`, `_offset`, `_key`, ...), null
/// for rows that were not records of the source (late rows, rows a query failed on). With
/// them a dead letter can be traced to its record, and a dead-letter topic keyed like it.
pub fn dead_letter_schema(source_metadata: &[FieldRef]) -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut fields: Vec<FieldRef> = vec![
        Arc::new(Field::new("source", DataType::Utf8, false)),
        Arc::new(Field::new("epoch", DataType::Int64, false)),
        Arc::new(Field::new("position", DataType::Utf8, false)),
        Arc::new(Field::new("error", DataType::Utf8, false)),
        Arc::new(Field::new("raw", DataType::Utf8, false)),
        Arc::new(Field::new("table", DataType::Utf8, true)),
        Arc::new(Field::new("watermark", ts.clone(), true)),
        Arc::new(Field::new("event_time", ts, true)),
    ];
    fields.extend(
        source_metadata
            .iter()
            .map(|f| Arc::new(f.as_ref().clone().with_nullable(true))),
    );
    Arc::new(Schema::new(fields))
}

/// `batch` (dead-letter rows with the base columns, or some of a source's metadata columns)
/// with every column of `schema`: a column it lacks is all nulls. A batch already of
/// `schema` is returned as it is.
pub fn conform_to(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema() == *schema {
        return Ok(batch);
    }
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.schema().index_of(field.name()) {
            Ok(i) => Ok(batch.column(i).clone()),
            Err(_) if field.is_nullable() => Ok(arrow::array::new_null_array(
                field.data_type(),
                batch.num_rows(),
            )),
            Err(_) => Err(ArrowError::SchemaError(format!(
                "dead-letter rows have no `{}` column",
                field.name()
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// The error text of a late row (the table, watermark and event time are columns of their
/// own, so `GROUP BY error` counts late rows as one kind of error).
pub const LATE_WINDOW_ENDED: &str = "late: its window had ended at or before the watermark";

/// The error text of a late row of a session window.
pub const LATE_BEFORE_WATERMARK: &str = "late: its event time was before the watermark";

/// One batch of dead-letter rows for the `rejected` records of `raw`, with the records'
/// metadata columns (see [`dead_letter_schema`]).
pub fn dead_letter_batch(
    source: &str,
    epoch: u64,
    raw: &RawBatch,
    rejected: &[Rejected],
) -> Result<RecordBatch, ArrowError> {
    let base = dead_letter_rows(
        source,
        epoch,
        rejected.iter().map(|r| raw.position(r.index)).collect(),
        rejected
            .iter()
            .map(|r| match std::str::from_utf8(raw.record(r.index)) {
                Ok(_) => r.error.clone(),
                Err(_) => format!("{}{NOT_UTF8_NOTE}", r.error),
            })
            .collect(),
        rejected
            .iter()
            .map(|r| raw_text(raw.record(r.index)))
            .collect(),
        None,
    )?;
    let indices =
        arrow::array::UInt32Array::from_iter_values(rejected.iter().map(|r| r.index as u32));
    let fields: Vec<FieldRef> = raw.metadata.iter().map(|(f, _)| f.clone()).collect();
    let schema = dead_letter_schema(&fields);
    let mut columns = base.columns().to_vec();
    for (_, values) in &raw.metadata {
        columns.push(arrow::compute::take(values.as_ref(), &indices, None)?);
    }
    RecordBatch::try_new(schema, columns)
}

/// Added to the error of a record that is not valid UTF-8, whose `raw` is escaped.
pub const NOT_UTF8_NOTE: &str = " (the record is not valid UTF-8: `raw` holds it with each \
     byte that is not UTF-8 written as \\xNN and each backslash doubled)";

/// A record's bytes as the `raw` column's text: byte for byte when it is UTF-8; otherwise
/// escaped reversibly (each byte outside valid UTF-8 as `\xNN`, each `\` as `\\`), never
/// replaced with U+FFFD, so the exact bytes can be recovered.
pub fn raw_text(bytes: &[u8]) -> String {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return text.to_string();
    }
    let mut out = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

/// Dead-letter rows of one source and epoch: one per position, error and raw text.
fn dead_letter_rows(
    source: &str,
    epoch: u64,
    positions: Vec<String>,
    errors: Vec<String>,
    raw: Vec<String>,
    late: Option<LateColumns>,
) -> Result<RecordBatch, ArrowError> {
    let n = raw.len();
    let late = late.unwrap_or_else(|| LateColumns::none(n));
    let columns: Vec<arrow::array::ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            source, n,
        ))),
        Arc::new(Int64Array::from_iter_values(std::iter::repeat_n(
            epoch as i64,
            n,
        ))),
        Arc::new(StringArray::from(positions)),
        Arc::new(StringArray::from(errors)),
        Arc::new(StringArray::from(raw)),
        late.table,
        late.watermark,
        late.event_time,
    ];
    RecordBatch::try_new(base_dead_letter_schema(), columns)
}

/// The `table`, `watermark` and `event_time` columns of dead-letter rows.
struct LateColumns {
    table: ArrayRef,
    watermark: ArrayRef,
    event_time: ArrayRef,
}

impl LateColumns {
    /// Null columns, for records that were not late but undecodable.
    fn none(n: usize) -> Self {
        let null_ts = || -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(vec![None::<i64>; n]).with_timezone("UTC"))
        };
        LateColumns {
            table: Arc::new(StringArray::from(vec![None::<&str>; n])),
            watermark: null_ts(),
            event_time: null_ts(),
        }
    }
}

/// What a windowed node knows about the late rows it dead-letters.
pub struct LateRows<'a> {
    /// The windowed table (or view) that found them late.
    pub node: &'a str,
    /// The error text ([`LATE_WINDOW_ENDED`] or [`LATE_BEFORE_WATERMARK`]).
    pub reason: &'static str,
    /// The watermark the node used, in epoch milliseconds.
    pub watermark_ms: Option<i64>,
    /// The column of the rows that holds their event time (for TUMBLE and HOP the carried
    /// [`EVENT_TIME_COLUMN`]); `event_time` is null where the rows have no such column.
    pub time_column: &'a str,
}

/// Dead-letter rows for rows a windowed node found late (`late_data = 'dead_letter'` on their
/// source): each row as JSON, with why, the table, the watermark and the row's event time.
pub fn late_rows_batch(
    source: &str,
    epoch: u64,
    late: &LateRows<'_>,
    rows: &[RecordBatch],
) -> Result<RecordBatch, ArrowError> {
    let rows: Vec<&RecordBatch> = rows.iter().filter(|b| b.num_rows() > 0).collect();
    let mut event_times: Vec<Option<i64>> = Vec::new();
    for batch in &rows {
        match batch.schema().index_of(late.time_column) {
            Ok(i) => {
                let micros = arrow::compute::cast(
                    batch.column(i),
                    &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                )?;
                let micros = micros
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .ok_or_else(|| ArrowError::CastError("event time".into()))?;
                event_times
                    .extend((0..micros.len()).map(|r| micros.is_valid(r).then(|| micros.value(r))));
            }
            Err(_) => event_times.extend(std::iter::repeat_n(None, batch.num_rows())),
        }
    }
    let mut json = Vec::new();
    {
        let mut writer = arrow::json::LineDelimitedWriter::new(&mut json);
        for batch in &rows {
            // The carried event time is a column of its own, not part of the row.
            let shown: Vec<usize> = (0..batch.num_columns())
                .filter(|&i| batch.schema().field(i).name() != EVENT_TIME_COLUMN)
                .collect();
            writer.write(&batch.project(&shown)?)?;
        }
        writer.finish()?;
    }
    let lines: Vec<String> = String::from_utf8_lossy(&json)
        .lines()
        .map(str::to_string)
        .collect();
    let n = lines.len();
    let watermark = late.watermark_ms.map(|ms| ms.saturating_mul(1000));
    dead_letter_rows(
        source,
        epoch,
        vec![format!("late at {}", late.node); n],
        vec![late.reason.to_string(); n],
        lines,
        Some(LateColumns {
            table: Arc::new(StringArray::from(vec![late.node; n])),
            watermark: Arc::new(
                TimestampMicrosecondArray::from(vec![watermark; n]).with_timezone("UTC"),
            ),
            event_time: Arc::new(TimestampMicrosecondArray::from(event_times).with_timezone("UTC")),
        }),
    )
}

/// Dead-letter rows for input rows a table's query failed on (a cast, a division by zero):
/// each row as JSON, with the query's error and the table.
pub fn failed_rows_batch(
    source: &str,
    epoch: u64,
    node: &str,
    input: &str,
    rows: &[crate::operators::row_errors::FailedRow],
) -> Result<RecordBatch, ArrowError> {
    let mut raw = Vec::with_capacity(rows.len());
    for failed in rows {
        let mut json = Vec::new();
        let mut writer = arrow::json::LineDelimitedWriter::new(&mut json);
        writer.write(&failed.row)?;
        writer.finish()?;
        raw.push(String::from_utf8_lossy(&json).trim_end().to_string());
    }
    let n = rows.len();
    dead_letter_rows(
        source,
        epoch,
        vec![format!("row of `{input}` in `{node}`"); n],
        rows.iter().map(|r| r.error.clone()).collect(),
        raw,
        Some(LateColumns {
            table: Arc::new(StringArray::from(vec![node; n])),
            ..LateColumns::none(n)
        }),
    )
}
