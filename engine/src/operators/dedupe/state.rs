//! The keys a dedupe has seen, with each key's event time, and for keep-first the row that
//! will be emitted once the watermark makes it final.
//!
//! Rows are referenced, not copied, while an epoch runs: a candidate is (batch, row) in
//! `batches` (the last epoch's compacted candidates, then this epoch's input). After each
//! epoch the candidates still waiting are compacted into one batch, so old input batches are
//! released.

use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, BinaryArray, BinaryBuilder, BooleanArray, Int64Array,
    RecordBatch,
};
use arrow::compute::{concat_batches, filter_record_batch, interleave_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;

use super::keys::KeyTable;

/// Which row of a key a dedupe keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum Keep {
    /// The first row to arrive (no ORDER BY): emitted at once.
    FirstArrived,
    /// The row with the earliest event time (`ORDER BY time ASC`): emitted once the watermark
    /// passes it, so an earlier row arriving later still wins.
    Earliest,
    /// The row with the latest event time (`ORDER BY time DESC`): every newer row is emitted
    /// and replaces the key's earlier row (update output).
    Latest,
}

/// What the state knows of one key.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The event time (ms) of the key's kept row; `i64::MIN` when the row has none.
    time_ms: i64,
    /// The kept row while it waits to be emitted: (batch, row) in `batches`.
    candidate: Candidate,
}

/// A waiting row's place, (batch, row) in `batches`, or none: an `Option<(u32, u32)>` in 8
/// bytes rather than 12, so that a key's slot in the key table is 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    /// `u32::MAX`: no row waits.
    batch: u32,
    row: u32,
}

impl Candidate {
    const NONE: Candidate = Candidate {
        batch: u32::MAX,
        row: 0,
    };

    fn at(batch: usize, row: usize) -> Self {
        Candidate {
            batch: batch as u32,
            row: row as u32,
        }
    }

    fn get(self) -> Option<(usize, usize)> {
        (self.batch != u32::MAX).then_some((self.batch as usize, self.row as usize))
    }

    fn is_some(self) -> bool {
        self.batch != u32::MAX
    }

    fn is_none(self) -> bool {
        !self.is_some()
    }
}

/// What one row did to the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// The key's row now (a candidate or, for [`Keep::FirstArrived`], to be emitted at once
    /// by the caller).
    Kept,
    /// A duplicate of a kept row: dropped.
    Duplicate,
}

/// Seen keys and waiting candidates.
#[derive(Debug)]
pub struct DedupeState {
    keep: Keep,
    /// A key is forgotten once the watermark passes its time by this much (Spark keeps a key
    /// until the watermark passes its event time plus the watermark delay).
    horizon_ms: i64,
    keys: KeyTable<Seen>,
    batches: Vec<RecordBatch>,
    input_schema: SchemaRef,
    /// Keys whose row waits to be emitted (so an epoch without any skips the scan for them).
    waiting: usize,
    /// The watermark keys were last forgotten at (the scan is skipped until it moves).
    evicted_at: Option<i64>,
}

/// The state's columns before the input's: the key, its time, whether its row waits.
const KEY: &str = "__weir_key";
const TIME: &str = "__weir_time_ms";
const WAITING: &str = "__weir_waiting";

impl DedupeState {
    /// An empty state for rows of `input_schema`.
    pub fn new(keep: Keep, horizon_ms: i64, input_schema: SchemaRef) -> Self {
        DedupeState {
            keep,
            horizon_ms,
            keys: KeyTable::default(),
            batches: Vec::new(),
            input_schema,
            waiting: 0,
            evicted_at: None,
        }
    }

    /// Adds one epoch's input batch; returns its index for [`DedupeState::offer`].
    pub fn add_batch(&mut self, batch: RecordBatch) -> usize {
        self.batches.push(batch);
        self.batches.len() - 1
    }

    /// Offers row `row` of batch `batch` (its key's bytes, its event time) to the state.
    pub fn offer(
        &mut self,
        key: &[u8],
        row: usize,
        batch: usize,
        time_ms: i64,
    ) -> Result<Offered, ArrowError> {
        let at = Candidate::at(batch, row);
        let keep = self.keep;
        let new = Seen {
            time_ms,
            // A first-arrived row is emitted by the caller at once (see `Offers::numbered`):
            // nothing waits.
            candidate: if keep == Keep::FirstArrived {
                Candidate::NONE
            } else {
                at
            },
        };
        let Some(seen) = self.keys.get_or_insert(key, new)? else {
            if new.candidate.is_some() {
                self.waiting += 1;
            }
            return Ok(Offered::Kept);
        };
        Ok(match keep {
            Keep::FirstArrived => Offered::Duplicate,
            Keep::Earliest => match seen.candidate.get() {
                Some(_) if time_ms < seen.time_ms => {
                    *seen = Seen {
                        time_ms,
                        candidate: at,
                    };
                    Offered::Kept
                }
                _ => Offered::Duplicate,
            },
            Keep::Latest if time_ms > seen.time_ms => {
                if seen.candidate.is_none() {
                    self.waiting += 1;
                }
                *seen = Seen {
                    time_ms,
                    candidate: at,
                };
                Offered::Kept
            }
            Keep::Latest => Offered::Duplicate,
        })
    }

    /// Puts back a key read from a snapshot.
    fn restore_key(
        &mut self,
        key: &[u8],
        time_ms: i64,
        candidate: Candidate,
    ) -> Result<(), ArrowError> {
        if candidate.is_some() {
            self.waiting += 1;
        }
        self.keys.get_or_insert(key, Seen { time_ms, candidate })?;
        Ok(())
    }

    /// Ends the epoch at `watermark_ms`: returns the rows to emit (earliest: candidates the
    /// watermark made final; latest: every key that changed), forgets keys the watermark
    /// passed by the horizon, and compacts the rest.
    pub fn finish_epoch(&mut self, watermark_ms: Option<i64>) -> Result<RecordBatch, ArrowError> {
        let mut emit: Vec<(usize, usize)> = Vec::new();
        if self.waiting > 0 {
            for seen in self.keys.values_mut() {
                let Some((b, r)) = seen.candidate.get() else {
                    continue;
                };
                // The earliest row is final once the watermark passes it; before any
                // watermark (the first epoch) nothing is.
                let ready = match self.keep {
                    Keep::Earliest => watermark_ms.is_some_and(|wm| seen.time_ms < wm),
                    _ => true,
                };
                if ready {
                    emit.push((b, r));
                    seen.candidate = Candidate::NONE;
                    self.waiting -= 1;
                }
            }
        }
        let rows = self.take_rows(&emit)?;
        if let Some(wm) = watermark_ms.filter(|wm| self.evicted_at != Some(*wm)) {
            let horizon = self.horizon_ms;
            self.keys.retain(|seen| {
                seen.candidate.is_some() || seen.time_ms.saturating_add(horizon) >= wm
            });
            self.evicted_at = Some(wm);
        }
        self.compact()?;
        Ok(rows)
    }

    fn take_rows(&self, at: &[(usize, usize)]) -> Result<RecordBatch, ArrowError> {
        if at.is_empty() || self.batches.is_empty() {
            return Ok(RecordBatch::new_empty(self.input_schema.clone()));
        }
        if at.is_sorted() {
            return self.filter_rows(at);
        }
        let batches: Vec<&RecordBatch> = self.batches.iter().collect();
        interleave_record_batch(&batches, at)
    }

    /// [`DedupeState::take_rows`] for rows in batch and row order (what keep-first emits at
    /// once): each batch filtered by a mask, which copies runs of rows rather than one row at
    /// a time.
    fn filter_rows(&self, at: &[(usize, usize)]) -> Result<RecordBatch, ArrowError> {
        let mut parts = Vec::new();
        let mut rest = at;
        while let Some(&(batch, _)) = rest.first() {
            let n = rest.iter().take_while(|(b, _)| *b == batch).count();
            let source = &self.batches[batch];
            let mut mask = vec![false; source.num_rows()];
            for &(_, row) in &rest[..n] {
                mask[row] = true;
            }
            parts.push(filter_record_batch(source, &BooleanArray::from(mask))?);
            rest = &rest[n..];
        }
        concat_batches(&self.input_schema, &parts)
    }

    /// Moves the waiting candidates into one batch and drops every other batch.
    fn compact(&mut self) -> Result<(), ArrowError> {
        if self.waiting == 0 {
            self.batches.clear();
            return Ok(());
        }
        let mut at = Vec::new();
        for seen in self.keys.values_mut() {
            if let Some((b, r)) = seen.candidate.get() {
                seen.candidate = Candidate::at(0, at.len());
                at.push((b, r));
            }
        }
        let waiting = self.take_rows(&at)?;
        self.batches = vec![waiting];
        Ok(())
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Approximate bytes held: keys, the map's slots and the waiting rows.
    pub fn memory_size(&self) -> usize {
        let rows: usize = self.batches.iter().map(|b| b.get_array_memory_size()).sum();
        self.keys.memory_size() + rows
    }

    /// Whether rows wait in the state (keep-earliest): only then does a snapshot hold them.
    fn holds_rows(&self) -> bool {
        self.keep == Keep::Earliest
    }

    /// The state's schema in checkpoints: key, time, waiting flag, then for keep-earliest the
    /// input's columns (null for keys whose row was already emitted).
    pub fn snapshot_schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new(KEY, DataType::Binary, false),
            Field::new(TIME, DataType::Int64, false),
            Field::new(WAITING, DataType::Boolean, false),
        ];
        if !self.holds_rows() {
            return Arc::new(Schema::new(fields));
        }
        fields.extend(
            self.input_schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true)),
        );
        Arc::new(Schema::new(fields))
    }

    /// The state as one batch of [`DedupeState::snapshot_schema`] (after `finish_epoch`).
    pub fn snapshot(&self) -> Result<RecordBatch, ArrowError> {
        let schema = self.snapshot_schema();
        let mut keys = BinaryBuilder::with_capacity(self.keys.len(), self.keys.key_bytes());
        let mut times = Vec::with_capacity(self.keys.len());
        let mut waiting = Vec::with_capacity(self.keys.len());
        let mut at = Vec::with_capacity(self.keys.len());
        // Row 0 of the extra batch is all nulls, for keys without a waiting row.
        let null_batch = self.batches.len();
        for (key, seen) in self.keys.iter() {
            keys.append_value(key);
            times.push(seen.time_ms);
            waiting.push(seen.candidate.is_some());
            at.push(seen.candidate.get().unwrap_or((null_batch, 0)));
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(keys.finish()),
            Arc::new(Int64Array::from(times)),
            Arc::new(BooleanArray::from(waiting)),
        ];
        if !self.holds_rows() {
            return RecordBatch::try_new(schema, columns);
        }
        let nulls = self.null_row()?;
        let mut batches: Vec<RecordBatch> = self.batches.clone();
        batches.push(nulls);
        let nullable = Arc::new(Schema::new(schema.fields()[3..].to_vec()));
        let batches: Vec<RecordBatch> = batches
            .into_iter()
            .map(|b| RecordBatch::try_new(nullable.clone(), b.columns().to_vec()))
            .collect::<Result<_, _>>()?;
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        let rows = interleave_record_batch(&refs, &at)?;
        columns.extend(rows.columns().iter().cloned());
        RecordBatch::try_new(schema, columns)
    }

    fn null_row(&self) -> Result<RecordBatch, ArrowError> {
        let columns = self
            .input_schema
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), 1))
            .collect();
        let nullable = Arc::new(Schema::new(
            self.input_schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        RecordBatch::try_new(nullable, columns)
    }

    /// Puts back a snapshot's batches (of [`DedupeState::snapshot_schema`]).
    pub fn restore(&mut self, batches: Vec<RecordBatch>) -> Result<(), ArrowError> {
        self.keys.clear();
        self.waiting = 0;
        let mut waiting_rows = Vec::new();
        for batch in &batches {
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .ok_or_else(|| ArrowError::SchemaError(format!("state has no `{name}`")))
            };
            let keys = column(KEY)?.as_any().downcast_ref::<BinaryArray>().cloned();
            let times = column(TIME)?.as_any().downcast_ref::<Int64Array>().cloned();
            let waiting = column(WAITING)?
                .as_any()
                .downcast_ref::<BooleanArray>()
                .cloned();
            let (Some(keys), Some(times), Some(waiting)) = (keys, times, waiting) else {
                return Err(ArrowError::SchemaError(
                    "state columns of the wrong type".into(),
                ));
            };
            if !self.holds_rows() {
                for i in 0..keys.len() {
                    self.restore_key(keys.value(i), times.value(i), Candidate::NONE)?;
                }
                continue;
            }
            let rows =
                RecordBatch::try_new(self.input_schema.clone(), batch.columns()[3..].to_vec())
                    .or_else(|_| {
                        // Waiting rows are stored nullable; the input may declare NOT NULL.
                        let nullable = Arc::new(Schema::new(batch.schema().fields()[3..].to_vec()));
                        RecordBatch::try_new(nullable, batch.columns()[3..].to_vec())
                    })?;
            let index = waiting_rows.len();
            waiting_rows.push(rows);
            for i in 0..keys.len() {
                let candidate = if waiting.value(i) {
                    Candidate::at(index, i)
                } else {
                    Candidate::NONE
                };
                self.restore_key(keys.value(i), times.value(i), candidate)?;
            }
        }
        if self.holds_rows() {
            self.batches = waiting_rows;
        }
        self.compact()
    }
}

/// A snapshot batch with its key column rewritten by `convert` (when the key encoding changed
/// between state formats).
pub fn with_keys_converted(
    batch: &RecordBatch,
    convert: impl FnOnce(&BinaryArray) -> Result<BinaryArray, ArrowError>,
) -> Result<RecordBatch, ArrowError> {
    let index = batch.schema().index_of(KEY)?;
    let keys = batch
        .column(index)
        .as_any()
        .downcast_ref::<BinaryArray>()
        .ok_or_else(|| ArrowError::SchemaError(format!("state column `{KEY}` is not binary")))?;
    let mut columns = batch.columns().to_vec();
    columns[index] = Arc::new(convert(keys)?);
    RecordBatch::try_new(batch.schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::dedupe::key_bytes::KeyEncoder;
    use arrow::array::StringArray;
    use arrow::row::{RowConverter, SortField};

    #[test]
    fn what_a_key_knows_fits_in_16_bytes() {
        // With the key table's 16 bytes of place, a key's slot is 32 bytes.
        assert_eq!(std::mem::size_of::<Seen>(), 16);
    }

    #[test]
    fn a_format_1_state_with_row_format_keys_restores_as_plain_keys() {
        let input = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
        let ids: ArrayRef = Arc::new(StringArray::from(vec!["e-1", "e-2"]));
        let row_format = RowConverter::new(vec![SortField::new(DataType::Utf8)])
            .unwrap()
            .convert_columns(std::slice::from_ref(&ids))
            .unwrap();
        let old = DedupeState::new(Keep::FirstArrived, 60_000, input.clone());
        let stored = RecordBatch::try_new(
            old.snapshot_schema(),
            vec![
                Arc::new(BinaryArray::from_iter_values(
                    row_format.iter().map(|r| r.as_ref().to_vec()),
                )),
                Arc::new(Int64Array::from(vec![1_000, 2_000])),
                Arc::new(BooleanArray::from(vec![false, false])),
            ],
        )
        .unwrap();
        let encoder = KeyEncoder::new(&[DataType::Utf8]).unwrap();
        let converted = with_keys_converted(&stored, |keys| encoder.from_row_format(keys)).unwrap();
        let mut state = DedupeState::new(Keep::FirstArrived, 60_000, input);
        state.restore(vec![converted]).unwrap();
        let fresh = encoder
            .encode(&[Arc::new(StringArray::from(vec!["e-2", "e-3"])) as ArrayRef])
            .unwrap();
        assert_eq!(
            state.offer(fresh.get(0), 0, 0, 3_000).unwrap(),
            Offered::Duplicate
        );
        assert_eq!(
            state.offer(fresh.get(1), 1, 0, 3_000).unwrap(),
            Offered::Kept
        );
        assert_eq!(state.len(), 3);
    }
}
