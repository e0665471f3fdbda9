//! One epoch's input: each source's planned range read, decoded into its declared columns plus
//! metadata, and its undecodable records turned into dead-letter rows.
//!
//! Ingest is kept apart from running the plans so that the pipeline can prepare epoch N+1's
//! input while epoch N's tables are still being committed (reading and JSON decoding are most
//! of an epoch's CPU; Parquet encoding of the commits is the rest).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use serde_json::Value;

use super::partition::SourcePartition;
use crate::dead_letter::dead_letter_batch;
use crate::error::Result;
use crate::event_time::reject_bad_event_times;
use crate::format::json::decode::{take_rows, JsonDecoder};
use crate::source::raw::constant_string;
use crate::source::Source;

/// One source's share of an epoch, ready for the plans.
#[derive(Debug)]
pub struct SourceInput {
    /// Decoded rows with every metadata column, in the stream's registered schema.
    pub rows: RecordBatch,
    /// Records read, good and bad.
    pub records_read: u64,
    /// Dead-letter rows for the records that could not be decoded, if any.
    pub dead_letters: Option<RecordBatch>,
    /// How many records were dead-lettered.
    pub dead_count: u64,
    /// The largest event time among the rows (epoch ms) per partition (the Kafka
    /// `_partition`, as `topic/partition`; `None` for sources without partitions), for sources
    /// with a WATERMARK.
    pub max_event_ms: BTreeMap<Option<SourcePartition>, i64>,
}

/// An epoch's input from every source that had a range in it.
#[derive(Debug)]
pub struct EpochInput {
    /// The epoch the input belongs to (its rows carry it in `_epoch`).
    pub epoch: u64,
    /// When reading began, so an epoch's reported duration includes its ingest.
    pub started: Instant,
    /// Per source name.
    pub sources: BTreeMap<String, SourceInput>,
}

/// What ingest needs to know about one source.
pub struct SourceReader<'a> {
    /// The source's name (for `_source` and dead letters).
    pub name: &'a str,
    /// The connector.
    pub source: &'a mut dyn Source,
    /// Decodes its records.
    pub decoder: &'a JsonDecoder,
    /// The stream schema SQL sees (declared + metadata columns).
    pub schema: SchemaRef,
    /// The event-time column, when the source has a WATERMARK.
    pub event_time_column: Option<&'a str>,
    /// How far after the wall clock an event time may be (`max_event_time_ahead`).
    pub max_ahead_ms: Option<i64>,
}

impl SourceReader<'_> {
    /// Reads `range` and decodes it with up to `threads` threads, then moves the source past
    /// the range so the next epoch can be planned (a failed epoch ends the run, and a restart
    /// restores positions from the offset log, so moving on before the commit is safe).
    pub fn ingest(&mut self, epoch: u64, range: &Value, threads: usize) -> Result<SourceInput> {
        let raw = self.source.read(range)?;
        let mut decoded = self.decoder.decode(&raw.data, &raw.records, threads)?;
        if let Some(column) = self.event_time_column {
            let now_ms = chrono::Utc::now().timestamp_millis();
            let latest = self.max_ahead_ms.map(|ahead| now_ms.saturating_add(ahead));
            reject_bad_event_times(&mut decoded, column, latest)?;
        }
        let rows = take_rows_with_metadata(&decoded.batch, &decoded.kept, &raw.metadata)?;
        let rows = append_common_metadata(rows, self.name, epoch, self.schema.clone())?;
        let dead_letters = if decoded.rejected.is_empty() {
            None
        } else {
            Some(dead_letter_batch(
                self.name,
                epoch,
                &raw,
                &decoded.rejected,
            )?)
        };
        let max_event_ms = match self.event_time_column {
            Some(column) => max_timestamp_per_partition(&rows, column),
            None => BTreeMap::new(),
        };
        self.source.advance(range)?;
        Ok(SourceInput {
            rows,
            records_read: raw.len() as u64,
            dead_letters,
            dead_count: decoded.rejected.len() as u64,
            max_event_ms,
        })
    }
}

/// The largest value of a millisecond timestamp column, per partition when the batch has
/// Kafka's `_topic` / `_partition` columns (so each partition has its own watermark).
fn max_timestamp_per_partition(
    batch: &RecordBatch,
    column: &str,
) -> BTreeMap<Option<SourcePartition>, i64> {
    let mut out = BTreeMap::new();
    let Some(ts) = batch.schema().index_of(column).ok().and_then(|i| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .cloned()
    }) else {
        return out;
    };
    let partitions = batch.schema().index_of("_partition").ok().and_then(|i| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<Int32Array>()
            .cloned()
    });
    let topics = batch.schema().index_of("_topic").ok().and_then(|i| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<StringArray>()
            .cloned()
    });
    match (partitions, topics) {
        (Some(partitions), Some(topics)) => {
            for i in 0..batch.num_rows() {
                if ts.is_null(i) {
                    continue;
                }
                let key = Some(SourcePartition {
                    topic: topics.value(i).to_string(),
                    partition: partitions.value(i),
                });
                let entry = out.entry(key).or_insert(i64::MIN);
                *entry = (*entry).max(ts.value(i));
            }
        }
        _ => {
            if let Some(max) = arrow::compute::max(&ts) {
                out.insert(None, max);
            }
        }
    }
    out
}

/// Joins decoded columns with the metadata columns of the kept records.
fn take_rows_with_metadata(
    decoded: &RecordBatch,
    kept: &[u32],
    metadata: &[(FieldRef, ArrayRef)],
) -> Result<RecordBatch> {
    let mut fields: Vec<FieldRef> = decoded.schema().fields().iter().cloned().collect();
    let mut columns: Vec<ArrayRef> = decoded.columns().to_vec();
    if !metadata.is_empty() {
        let meta_schema = Arc::new(Schema::new(
            metadata.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>(),
        ));
        let meta = RecordBatch::try_new(
            meta_schema,
            metadata.iter().map(|(_, a)| a.clone()).collect(),
        )?;
        let meta = take_rows(&meta, kept)?;
        fields.extend(meta.schema().fields().iter().cloned());
        columns.extend(meta.columns().iter().cloned());
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Adds `_source` and `_epoch`, and stamps the batch with the stream's registered schema.
fn append_common_metadata(
    batch: RecordBatch,
    source: &str,
    epoch: u64,
    schema: SchemaRef,
) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let mut columns = batch.columns().to_vec();
    columns.push(constant_string(source, n));
    columns.push(Arc::new(Int64Array::from_iter_values(std::iter::repeat_n(
        epoch as i64,
        n,
    ))));
    Ok(RecordBatch::try_new(schema, columns)?)
}
