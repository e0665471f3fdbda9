//! Dead letters: records a source delivered but the pipeline could not use, kept with the raw
//! text, the reason, where they came from and the epoch, so nothing is silently lost.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;

use crate::decode::Rejected;
use crate::raw::RawBatch;

/// The schema of every dead-letter table.
pub fn dead_letter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("epoch", DataType::Int64, false),
        Field::new("position", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
    ]))
}

/// One batch of dead-letter rows for the `rejected` records of `raw`.
pub fn dead_letter_batch(
    source: &str,
    epoch: u64,
    raw: &RawBatch,
    rejected: &[Rejected],
) -> Result<RecordBatch, ArrowError> {
    dead_letter_rows(
        source,
        epoch,
        rejected.iter().map(|r| raw.position(r.index)).collect(),
        rejected.iter().map(|r| r.error.clone()).collect(),
        rejected
            .iter()
            .map(|r| String::from_utf8_lossy(raw.record(r.index)).into_owned())
            .collect(),
    )
}

/// Dead-letter rows of one source and epoch: one per position, error and raw text.
fn dead_letter_rows(
    source: &str,
    epoch: u64,
    positions: Vec<String>,
    errors: Vec<String>,
    raw: Vec<String>,
) -> Result<RecordBatch, ArrowError> {
    let n = raw.len();
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
    ];
    RecordBatch::try_new(dead_letter_schema(), columns)
}

/// Dead-letter rows for rows a windowed node found late (`late_data = 'dead_letter'` on their
/// source): each row as JSON, with why and where.
pub fn late_rows_batch(
    source: &str,
    epoch: u64,
    node: &str,
    reason: &str,
    rows: &[RecordBatch],
) -> Result<RecordBatch, ArrowError> {
    let mut json = Vec::new();
    {
        let mut writer = arrow::json::LineDelimitedWriter::new(&mut json);
        for batch in rows.iter().filter(|b| b.num_rows() > 0) {
            writer.write(batch)?;
        }
        writer.finish()?;
    }
    let lines: Vec<String> = String::from_utf8_lossy(&json)
        .lines()
        .map(str::to_string)
        .collect();
    let n = lines.len();
    dead_letter_rows(
        source,
        epoch,
        vec![format!("late at {node}"); n],
        vec![reason.to_string(); n],
        lines,
    )
}
