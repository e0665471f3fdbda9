//! The dedupe's state split by key hash into one [`DedupeState`] per core, each offered its
//! keys' rows on a thread of its own.
//!
//! Every row of a key goes to the same shard, in arrival order, so each shard decides exactly
//! as one state would; the shards only split the work. Without this the dedupe was one thread
//! on the epoch's critical path: the rest of the table waits for its output, so on two cores its
//! share of the wall clock was twice its share of the CPU. The checkpoint holds the shards'
//! rows in one file of the single-state layout; a restore routes each key to its shard again,
//! so a run with another number of threads restores the same keys.

use std::hash::BuildHasher;

use arrow::array::{Array, BinaryArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::row::Rows;
use datafusion::common::hash_utils::RandomState;

use super::state::{DedupeState, Keep, KEY};

/// The hash that picks a key's shard (fixed, so a key's shard never changes within a run).
const SHARD_HASH: RandomState = RandomState::with_seed(0x5eed_d1ed);

/// One input batch with its row-encoded keys and the rows that are on time (row, event time).
pub struct OnTimeRows {
    /// The batch.
    pub batch: RecordBatch,
    /// Its key columns, row-encoded.
    pub keys: Rows,
    /// The rows to offer, with their event times (`i64::MIN` without a time column).
    pub rows: Vec<(usize, i64)>,
}

/// The shards.
#[derive(Debug)]
pub struct ShardedState {
    shards: Vec<DedupeState>,
}

fn shard_of(key: &[u8], count: usize) -> usize {
    (SHARD_HASH.hash_one(key) % count as u64) as usize
}

impl ShardedState {
    /// `count` empty shards (at least one) for rows of `input_schema`.
    pub fn new(count: usize, keep: Keep, horizon_ms: i64, input_schema: SchemaRef) -> Self {
        let shards = (0..count.max(1))
            .map(|_| DedupeState::new(keep, horizon_ms, input_schema.clone()))
            .collect();
        ShardedState { shards }
    }

    /// Offers every on-time row of `input`, each shard its own keys' rows on its own thread.
    pub fn offer(&mut self, input: &[OnTimeRows]) {
        let count = self.shards.len();
        // routed[batch][shard]: the rows of that batch whose key belongs to that shard.
        let routed: Vec<Vec<Vec<(usize, i64)>>> = input
            .iter()
            .map(|part| {
                let mut per_shard = vec![Vec::new(); count];
                for &(row, time) in &part.rows {
                    per_shard[shard_of(part.keys.row(row).as_ref(), count)].push((row, time));
                }
                per_shard
            })
            .collect();
        let offer_to = |shard: usize, state: &mut DedupeState| {
            for (part, per_shard) in input.iter().zip(&routed) {
                let index = state.add_batch(part.batch.clone());
                for &(row, time) in &per_shard[shard] {
                    state.offer(&part.keys, row, index, time);
                }
            }
        };
        if count == 1 {
            offer_to(0, &mut self.shards[0]);
            return;
        }
        std::thread::scope(|scope| {
            for (shard, state) in self.shards.iter_mut().enumerate() {
                let offer_to = &offer_to;
                scope.spawn(move || offer_to(shard, state));
            }
        });
    }

    /// Ends the epoch in every shard (in parallel): the rows they release.
    pub fn finish_epoch(
        &mut self,
        watermark_ms: Option<i64>,
    ) -> Result<Vec<RecordBatch>, ArrowError> {
        if self.shards.len() == 1 {
            return Ok(vec![self.shards[0].finish_epoch(watermark_ms)?]);
        }
        std::thread::scope(|scope| {
            let running: Vec<_> = self
                .shards
                .iter_mut()
                .map(|state| scope.spawn(move || state.finish_epoch(watermark_ms)))
                .collect();
            running
                .into_iter()
                .map(|r| {
                    r.join().unwrap_or_else(|_| {
                        Err(ArrowError::ComputeError("a dedupe shard panicked".into()))
                    })
                })
                .collect()
        })
    }

    /// Keys held in all shards.
    pub fn len(&self) -> usize {
        self.shards.iter().map(DedupeState::len).sum()
    }

    /// Whether no shard holds a key.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(DedupeState::is_empty)
    }

    /// Approximate bytes held by all shards.
    pub fn memory_size(&self) -> usize {
        self.shards.iter().map(DedupeState::memory_size).sum()
    }

    /// The checkpoint schema (the same as one state's).
    pub fn snapshot_schema(&self) -> SchemaRef {
        self.shards[0].snapshot_schema()
    }

    /// Every shard's snapshot (one batch each).
    pub fn snapshot(&self) -> Result<Vec<RecordBatch>, ArrowError> {
        self.shards.iter().map(DedupeState::snapshot).collect()
    }

    /// Puts back snapshot batches, each key into its shard.
    pub fn restore(&mut self, batches: Vec<RecordBatch>) -> Result<(), ArrowError> {
        let count = self.shards.len();
        let mut per_shard: Vec<Vec<RecordBatch>> = vec![Vec::new(); count];
        for batch in batches {
            let keys = batch
                .column_by_name(KEY)
                .ok_or_else(|| ArrowError::SchemaError(format!("state has no `{KEY}`")))?
                .as_any()
                .downcast_ref::<BinaryArray>()
                .ok_or_else(|| ArrowError::SchemaError("state keys are not binary".into()))?;
            let mut rows: Vec<Vec<u32>> = vec![Vec::new(); count];
            for i in 0..keys.len() {
                rows[shard_of(keys.value(i), count)].push(i as u32);
            }
            for (shard, rows) in rows.into_iter().enumerate() {
                per_shard[shard].push(take_record_batch(&batch, &UInt32Array::from(rows))?);
            }
        }
        for (state, batches) in self.shards.iter_mut().zip(per_shard) {
            state.restore(batches)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::row::{RowConverter, SortField};

    use super::*;

    fn input(ids: &[&str]) -> OnTimeRows {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
        let column: ArrayRef = Arc::new(StringArray::from(ids.to_vec()));
        let batch = RecordBatch::try_new(schema, vec![column.clone()]).unwrap();
        let converter = RowConverter::new(vec![SortField::new(DataType::Utf8)]).unwrap();
        let keys = converter.convert_columns(&[column]).unwrap();
        OnTimeRows {
            batch,
            keys,
            rows: (0..ids.len()).map(|r| (r, 0)).collect(),
        }
    }

    fn emitted(state: &mut ShardedState) -> Vec<String> {
        let mut ids: Vec<String> = state
            .finish_epoch(None)
            .unwrap()
            .iter()
            .flat_map(|b| {
                let ids = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
                ids.iter()
                    .map(|v| v.unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn keys_restored_into_another_number_of_shards_are_still_seen() {
        let schema = input(&[]).batch.schema();
        let mut two = ShardedState::new(2, Keep::FirstArrived, 60_000, schema.clone());
        two.offer(&[input(&["a", "b", "c", "a", "d"])]);
        assert_eq!(emitted(&mut two), ["a", "b", "c", "d"]);
        let snapshot = two.snapshot().unwrap();

        let mut three = ShardedState::new(3, Keep::FirstArrived, 60_000, schema);
        three.restore(snapshot).unwrap();
        assert_eq!(three.len(), 4);
        three.offer(&[input(&["d", "e", "a", "e"])]);
        assert_eq!(emitted(&mut three), ["e"]);
    }
}
