//! The keys a dedupe has seen, with each key's event time, and for keep-first the row that
//! will be emitted once the watermark makes it final.
//!
//! Rows are referenced, not copied, while an epoch runs: a candidate is (batch, row) in
//! `batches` (the last epoch's compacted candidates, then this epoch's input). After each
//! epoch the candidates still waiting are compacted into one batch, so old input batches are
//! released.
//!
//! The keys are split over shards by their hash (`shard`), one per thread of the pipeline:
//! an epoch's rows are routed to their keys' shards, then every shard takes its rows on its
//! own thread.

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, BinaryArray, BinaryBuilder, BooleanArray, Int64Array,
    RecordBatch,
};
use arrow::compute::{concat_batches, filter_record_batch, interleave_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use hashbrown::DefaultHashBuilder;

use super::key_bytes::EncodedKeys;
use super::shard::{each_shard, Candidate, Offered, Seen, Shard};

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

/// One input batch of an epoch as the state is offered it: its index from
/// [`DedupeState::add_batch`], its rows' keys and their event times (ms).
pub struct BatchKeys {
    /// The batch's index in the state.
    pub batch: usize,
    /// Each row's key bytes.
    pub keys: EncodedKeys,
    /// Each row's event time, when the dedupe has an event-time column.
    pub times: Option<Vec<i64>>,
}

impl BatchKeys {
    fn time(&self, row: usize) -> i64 {
        self.times.as_ref().map_or(i64::MIN, |t| t[row])
    }
}

/// What became of one offered row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Its key's row now: emitted at once (keep-first-to-arrive) or waiting as its key's
    /// candidate.
    Kept,
    /// A duplicate of a row already kept: dropped.
    Duplicate,
    /// Behind the late watermark: not offered.
    Late,
}

/// A row routed to its key's shard: which batch of the epoch's offer, which row, and 32 bits
/// of its key's hash (the shard's table uses them; the shard was chosen by the other 32).
#[derive(Debug, Clone, Copy)]
struct Routed {
    input: u32,
    row: u32,
    hash: u32,
}

/// Seen keys and waiting candidates.
#[derive(Debug)]
pub struct DedupeState {
    keep: Keep,
    /// A key is forgotten once the watermark passes its time by this much (Spark keeps a key
    /// until the watermark passes its event time plus the watermark delay).
    horizon_ms: i64,
    /// The keys, split by their hash.
    shards: Vec<Shard>,
    /// Hashes keys for [`DedupeState::route`].
    hasher: DefaultHashBuilder,
    /// Each shard's rows of the epoch being offered (kept between epochs to reuse their
    /// buffers).
    routed: Vec<Vec<Routed>>,
    batches: Vec<RecordBatch>,
    input_schema: SchemaRef,
    /// The watermark keys were last forgotten at (the scan is skipped until it moves).
    evicted_at: Option<i64>,
}

/// The state's columns before the input's: the key, its time, whether its row waits.
const KEY: &str = "__weir_key";
const TIME: &str = "__weir_time_ms";
const WAITING: &str = "__weir_waiting";

impl DedupeState {
    /// An empty state for rows of `input_schema`, its keys split over `shards` shards (at
    /// least one), which are offered rows on as many threads.
    pub fn new(keep: Keep, horizon_ms: i64, input_schema: SchemaRef, shards: usize) -> Self {
        let shards = shards.max(1);
        DedupeState {
            keep,
            horizon_ms,
            shards: (0..shards).map(|_| Shard::default()).collect(),
            hasher: DefaultHashBuilder::default(),
            routed: vec![Vec::new(); shards],
            batches: Vec::new(),
            input_schema,
            evicted_at: None,
        }
    }

    /// Adds one epoch's input batch; returns its index for [`BatchKeys::batch`].
    pub fn add_batch(&mut self, batch: RecordBatch) -> usize {
        self.batches.push(batch);
        self.batches.len() - 1
    }

    /// The shard of `key` (from the high 32 bits of its hash) and the 32 bits its shard's
    /// table keeps (the low ones).
    fn route(&self, key: &[u8]) -> (usize, u32) {
        let hash = self.hasher.hash_one(key);
        ((hash >> 32) as usize % self.shards.len(), hash as u32)
    }

    /// Offers every row of `inputs` (one epoch's batches, in arrival order) whose event time
    /// is not behind `late_ms`; returns each row's fate, batch by batch. Every shard takes its
    /// rows in arrival order, on its own thread.
    pub fn offer(
        &mut self,
        inputs: &[BatchKeys],
        late_ms: Option<i64>,
    ) -> Result<Vec<Vec<Fate>>, ArrowError> {
        let mut fates: Vec<Vec<Fate>> = inputs
            .iter()
            .map(|input| vec![Fate::Duplicate; input.keys.len()])
            .collect();
        let mut routed = std::mem::take(&mut self.routed);
        routed.iter_mut().for_each(Vec::clear);
        for (i, input) in inputs.iter().enumerate() {
            for (row, fate) in fates[i].iter_mut().enumerate() {
                if input.times.is_some() && late_ms.is_some_and(|wm| input.time(row) < wm) {
                    *fate = Fate::Late;
                    continue;
                }
                let (shard, hash) = self.route(input.keys.get(row));
                routed[shard].push(Routed {
                    input: i as u32,
                    row: row as u32,
                    hash,
                });
            }
        }
        let keep = self.keep;
        let offered = routed.iter().map(Vec::len).sum();
        let kept = each_shard(&mut self.shards, offered, |s, shard| {
            routed[s]
                .iter()
                .map(|r| {
                    let (input, row) = (&inputs[r.input as usize], r.row as usize);
                    let at = Candidate::at(input.batch, row);
                    let offered =
                        shard.offer(keep, input.keys.get(row), r.hash, at, input.time(row))?;
                    Ok(offered == Offered::Kept)
                })
                .collect::<Result<Vec<bool>, ArrowError>>()
        });
        for (rows, kept) in routed.iter().zip(kept) {
            for (r, kept) in rows.iter().zip(kept?) {
                if kept {
                    fates[r.input as usize][r.row as usize] = Fate::Kept;
                }
            }
        }
        self.routed = routed;
        Ok(fates)
    }

    /// Puts back a key read from a snapshot.
    fn restore_key(
        &mut self,
        key: &[u8],
        time_ms: i64,
        candidate: Candidate,
    ) -> Result<(), ArrowError> {
        let (s, hash) = self.route(key);
        let shard = &mut self.shards[s];
        if candidate.is_some() {
            shard.waiting += 1;
        }
        shard
            .keys
            .get_or_insert_hashed(key, hash, || Seen { time_ms, candidate })?;
        Ok(())
    }

    /// Keys whose row waits to be emitted (so an epoch without any skips the scan for them).
    fn waiting(&self) -> usize {
        self.shards.iter().map(|s| s.waiting).sum()
    }

    /// Ends the epoch at `watermark_ms`: returns the rows to emit (earliest: candidates the
    /// watermark made final; latest: every key that changed), forgets keys the watermark
    /// passed by the horizon, and compacts the rest.
    pub fn finish_epoch(&mut self, watermark_ms: Option<i64>) -> Result<RecordBatch, ArrowError> {
        let mut emit: Vec<(usize, usize)> = Vec::new();
        let keep = self.keep;
        for shard in self.shards.iter_mut().filter(|s| s.waiting > 0) {
            for seen in shard.keys.values_mut() {
                let Some((b, r)) = seen.candidate.get() else {
                    continue;
                };
                // The earliest row is final once the watermark passes it; before any
                // watermark (the first epoch) nothing is.
                let ready = match keep {
                    Keep::Earliest => watermark_ms.is_some_and(|wm| seen.time_ms < wm),
                    _ => true,
                };
                if ready {
                    emit.push((b, r));
                    seen.candidate = Candidate::NONE;
                    shard.waiting -= 1;
                }
            }
        }
        let rows = self.take_rows(&emit)?;
        if let Some(wm) = watermark_ms.filter(|wm| self.evicted_at != Some(*wm)) {
            let horizon = self.horizon_ms;
            let held = self.len();
            each_shard(&mut self.shards, held, |_, shard| {
                shard.keys.retain(|seen| {
                    seen.candidate.is_some() || seen.time_ms.saturating_add(horizon) >= wm
                })
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
        if self.waiting() == 0 {
            self.batches.clear();
            return Ok(());
        }
        let mut at = Vec::new();
        for seen in self.shards.iter_mut().flat_map(|s| s.keys.values_mut()) {
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
        self.shards.iter().map(|s| s.keys.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.keys.is_empty())
    }

    /// Approximate bytes held: keys, the map's slots and the waiting rows.
    pub fn memory_size(&self) -> usize {
        let rows: usize = self.batches.iter().map(|b| b.get_array_memory_size()).sum();
        let keys: usize = self.shards.iter().map(|s| s.keys.memory_size()).sum();
        keys + rows
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
        let (held, key_bytes) = (self.len(), self.shards.iter().map(|s| s.keys.key_bytes()));
        let mut keys = BinaryBuilder::with_capacity(held, key_bytes.sum());
        let mut times = Vec::with_capacity(held);
        let mut waiting = Vec::with_capacity(held);
        let mut at = Vec::with_capacity(held);
        // Row 0 of the extra batch is all nulls, for keys without a waiting row.
        let null_batch = self.batches.len();
        for (key, seen) in self.shards.iter().flat_map(|s| s.keys.iter()) {
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
        for shard in &mut self.shards {
            shard.keys.clear();
            shard.waiting = 0;
        }
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
    use arrow::array::{AsArray, StringArray};
    use arrow::datatypes::Int64Type;
    use arrow::row::{RowConverter, SortField};

    #[test]
    fn a_format_1_state_with_row_format_keys_restores_as_plain_keys() {
        let input = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
        let ids: ArrayRef = Arc::new(StringArray::from(vec!["e-1", "e-2"]));
        let row_format = RowConverter::new(vec![SortField::new(DataType::Utf8)])
            .unwrap()
            .convert_columns(std::slice::from_ref(&ids))
            .unwrap();
        let old = DedupeState::new(Keep::FirstArrived, 60_000, input.clone(), 1);
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
        let mut state = DedupeState::new(Keep::FirstArrived, 60_000, input, 2);
        state.restore(vec![converted]).unwrap();
        let fresh = BatchKeys {
            batch: 0,
            keys: encoder
                .encode(&[Arc::new(StringArray::from(vec!["e-2", "e-3"])) as ArrayRef])
                .unwrap(),
            times: Some(vec![3_000, 3_000]),
        };
        let fates = state.offer(&[fresh], None).unwrap();
        assert_eq!(fates, [[Fate::Duplicate, Fate::Kept]]);
        assert_eq!(state.len(), 3);
    }

    /// One epoch of `rows` rows in batches of 5,000: ids drawn from `distinct` values, event
    /// times from 0 to 99,999 ms, in a fixed pseudo-random order.
    fn epoch(rows: usize, distinct: u64) -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
        ]));
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            x >> 11
        };
        (0..rows.div_ceil(5_000))
            .map(|_| {
                let (ids, times): (Vec<String>, Vec<i64>) = (0..5_000)
                    .map(|_| {
                        (
                            format!("event-{}", next() % distinct),
                            (next() % 100_000) as i64,
                        )
                    })
                    .unzip();
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(StringArray::from(ids)),
                    Arc::new(Int64Array::from(times)),
                ];
                RecordBatch::try_new(schema.clone(), columns).unwrap()
            })
            .collect()
    }

    /// The fates of one epoch's rows and the (id, time) rows the state emits at watermark
    /// 50,000, sorted, for a state of `shards` shards.
    fn run(
        keep: Keep,
        shards: usize,
        batches: &[RecordBatch],
    ) -> (Vec<Vec<Fate>>, Vec<(String, i64)>) {
        let encoder = KeyEncoder::new(&[DataType::Utf8]).unwrap();
        let mut state = DedupeState::new(keep, 1_000_000, batches[0].schema(), shards);
        let inputs: Vec<BatchKeys> = batches
            .iter()
            .map(|b| BatchKeys {
                batch: state.add_batch(b.clone()),
                keys: encoder.encode(&[b.column(0).clone()]).unwrap(),
                times: Some(b.column(1).as_primitive::<Int64Type>().values().to_vec()),
            })
            .collect();
        let fates = state.offer(&inputs, Some(2_000)).unwrap();
        let released = state.finish_epoch(Some(50_000)).unwrap();
        let ids = released.column(0).as_string::<i32>();
        let times = released.column(1).as_primitive::<Int64Type>();
        let mut rows: Vec<(String, i64)> = (0..released.num_rows())
            .map(|i| (ids.value(i).to_string(), times.value(i)))
            .collect();
        rows.sort();
        (fates, rows)
    }

    #[test]
    fn any_number_of_shards_keeps_the_same_rows_as_one() {
        // 40,000 rows: enough for the shards to run on threads.
        let batches = epoch(40_000, 15_000);
        for keep in [Keep::FirstArrived, Keep::Earliest, Keep::Latest] {
            let (fates, rows) = run(keep, 1, &batches);
            let count = |f: Fate| fates.iter().flatten().filter(|x| **x == f).count();
            assert!(
                count(Fate::Late) > 0 && count(Fate::Duplicate) > 0,
                "{keep:?}"
            );
            if keep != Keep::FirstArrived {
                assert!(!rows.is_empty(), "{keep:?} releases rows");
            }
            for shards in [2, 3, 8] {
                assert_eq!(
                    run(keep, shards, &batches),
                    (fates.clone(), rows.clone()),
                    "{keep:?}, {shards} shards"
                );
            }
        }
    }
}
