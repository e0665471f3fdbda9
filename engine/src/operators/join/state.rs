//! One side of an interval join: the rows still able to find a partner, indexed by key.
//!
//! Rows are kept in the batches they arrived in and referenced by entry; an entry knows its
//! row's event time and whether the row has matched a row of the other side (an outer side
//! emits its unmatched rows with NULLs when they are evicted). Evicted entries are marked dead
//! and dropped from the index; when more than half the entries are dead, the live rows are
//! compacted into one batch so old input batches are released.

// DataFusion's hash map (hashbrown with foldhash): much faster than SipHash on short keys.
use datafusion::common::HashMap;

use arrow::array::RecordBatch;
use arrow::compute::interleave_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::row::{RowConverter, Rows};

/// One stored row.
#[derive(Debug, Clone, Copy)]
struct Entry {
    batch: u32,
    row: u32,
    time_ms: i64,
    matched: bool,
    alive: bool,
    /// The key has no NULL: the row can match (NULL keys equal nothing).
    keyed: bool,
}

/// A stored row found by a probe: its entry id.
pub type EntryId = u32;

/// The rows of one side of a join.
#[derive(Debug)]
pub struct JoinSide {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// The key of every row of `batches[i]`, encoded for comparison.
    keys: Vec<Rows>,
    entries: Vec<Entry>,
    index: HashMap<Box<[u8]>, Vec<EntryId>>,
    live: usize,
}

impl JoinSide {
    /// An empty side holding rows of `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        JoinSide {
            schema,
            batches: Vec::new(),
            keys: Vec::new(),
            entries: Vec::new(),
            index: HashMap::default(),
            live: 0,
        }
    }

    /// The rows' schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Bytes held: the batches and keys, and the entries and index.
    pub fn memory_size(&self) -> usize {
        let batches: usize = self
            .batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum();
        let keys: usize = self.keys.iter().map(Rows::size).sum();
        batches
            + keys
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.index.len() * (std::mem::size_of::<Box<[u8]>>() + 3 * 4)
    }

    /// Adds `batch` (its keys encoded in `keys`, whose rows with a NULL key are `!keyed`);
    /// returns the new entries' ids, one per row.
    pub fn insert(
        &mut self,
        batch: RecordBatch,
        keys: Rows,
        keyed: &[bool],
        times_ms: &[i64],
        matched: &[bool],
    ) -> std::ops::Range<EntryId> {
        let first = self.entries.len() as EntryId;
        let batch_index = self.batches.len() as u32;
        for row in 0..batch.num_rows() {
            let id = self.entries.len() as EntryId;
            self.entries.push(Entry {
                batch: batch_index,
                row: row as u32,
                time_ms: times_ms[row],
                matched: matched[row],
                alive: true,
                keyed: keyed[row],
            });
            if keyed[row] {
                self.index
                    .entry(Box::from(keys.row(row).as_ref()))
                    .or_default()
                    .push(id);
            }
        }
        self.live += batch.num_rows();
        self.batches.push(batch);
        self.keys.push(keys);
        first..self.entries.len() as EntryId
    }

    /// The live entries whose key is `key` (encoded as this side's keys are).
    pub fn probe(&self, key: &[u8]) -> &[EntryId] {
        self.index.get(key).map_or(&[], Vec::as_slice)
    }

    /// Whether entry `id`'s row can match (its key has no NULL).
    pub fn is_keyed(&self, id: EntryId) -> bool {
        self.entries[id as usize].keyed
    }

    /// The encoded key of entry `id`.
    pub fn key(&self, id: EntryId) -> &[u8] {
        let e = &self.entries[id as usize];
        self.keys[e.batch as usize].row(e.row as usize).data()
    }

    /// Records that entry `id`'s row found a partner.
    pub fn set_matched(&mut self, id: EntryId) {
        self.entries[id as usize].matched = true;
    }

    /// The rows of entries `ids`, in that order.
    pub fn rows(&self, ids: &[EntryId]) -> Result<RecordBatch, ArrowError> {
        let batches: Vec<&RecordBatch> = self.batches.iter().collect();
        let at: Vec<(usize, usize)> = ids
            .iter()
            .map(|&id| {
                let e = &self.entries[id as usize];
                (e.batch as usize, e.row as usize)
            })
            .collect();
        if batches.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        interleave_record_batch(&batches, &at)
    }

    /// Evicts every live entry with `expired(time)`; returns the ids of those that never
    /// matched (still readable with [`JoinSide::rows`] until [`JoinSide::compact`]).
    pub fn evict(&mut self, expired: impl Fn(i64) -> bool) -> Vec<EntryId> {
        let mut unmatched = Vec::new();
        for id in 0..self.entries.len() {
            let e = self.entries[id];
            if !e.alive || !expired(e.time_ms) {
                continue;
            }
            self.entries[id].alive = false;
            self.live -= 1;
            if !e.matched {
                unmatched.push(id as EntryId);
            }
            if e.keyed {
                let key = self.keys[e.batch as usize].row(e.row as usize);
                if let Some(ids) = self.index.get_mut(key.as_ref()) {
                    ids.retain(|&other| other as usize != id);
                    if ids.is_empty() {
                        self.index.remove(key.as_ref());
                    }
                }
            }
        }
        unmatched
    }

    /// When dead entries outnumber live ones, copies the live rows into one batch and
    /// renumbers the entries (ids given out before are invalid after this).
    pub fn compact(&mut self, converter: &RowConverter) -> Result<(), ArrowError> {
        let dead = self.entries.len() - self.live;
        if dead == 0 || (dead < self.live && self.batches.len() < 64) {
            return Ok(());
        }
        let live: Vec<Entry> = self.entries.iter().filter(|e| e.alive).copied().collect();
        let ids: Vec<EntryId> = (0..self.entries.len() as EntryId)
            .filter(|&id| self.entries[id as usize].alive)
            .collect();
        let batch = self.rows(&ids)?;
        let mut keys = converter.empty_rows(live.len(), 0);
        for e in &live {
            keys.push(self.keys[e.batch as usize].row(e.row as usize));
        }
        let keyed: Vec<bool> = live.iter().map(|e| e.keyed).collect();
        let times: Vec<i64> = live.iter().map(|e| e.time_ms).collect();
        let matched: Vec<bool> = live.iter().map(|e| e.matched).collect();
        self.batches.clear();
        self.keys.clear();
        self.entries.clear();
        self.index.clear();
        self.live = 0;
        if !live.is_empty() {
            self.insert(batch, keys, &keyed, &times, &matched);
        }
        Ok(())
    }

    /// The live rows with their event times and matched flags, for a snapshot.
    pub fn live_rows(&self) -> Result<(RecordBatch, Vec<i64>, Vec<bool>), ArrowError> {
        let ids: Vec<EntryId> = (0..self.entries.len() as EntryId)
            .filter(|&id| self.entries[id as usize].alive)
            .collect();
        let rows = self.rows(&ids)?;
        let times = ids
            .iter()
            .map(|&id| self.entries[id as usize].time_ms)
            .collect();
        let matched = ids
            .iter()
            .map(|&id| self.entries[id as usize].matched)
            .collect();
        Ok((rows, times, matched))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::row::SortField;

    use super::*;

    fn side_with(keys: &[i64], times: &[i64]) -> (JoinSide, RowConverter) {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let column: ArrayRef = Arc::new(Int64Array::from(keys.to_vec()));
        let batch = RecordBatch::try_new(schema.clone(), vec![column.clone()]).unwrap();
        let converter = RowConverter::new(vec![SortField::new(DataType::Int64)]).unwrap();
        let rows = converter.convert_columns(&[column]).unwrap();
        let mut side = JoinSide::new(schema);
        let n = keys.len();
        side.insert(batch, rows, &vec![true; n], times, &vec![false; n]);
        (side, converter)
    }

    #[test]
    fn evicts_by_time_and_reports_rows_that_never_matched() {
        let (mut side, converter) = side_with(&[1, 2, 1], &[10, 20, 30]);
        let key = side.key(0).to_vec();
        assert_eq!(side.probe(&key), &[0, 2]);
        side.set_matched(0);
        let unmatched = side.evict(|t| t < 25);
        assert_eq!(unmatched, vec![1], "row 0 matched, row 2 is still in time");
        assert_eq!(side.probe(&key), &[2]);
        side.compact(&converter).unwrap();
        assert_eq!(side.len(), 1);
        let (rows, times, _) = side.live_rows().unwrap();
        assert_eq!(rows.num_rows(), 1);
        assert_eq!(times, vec![30]);
        assert_eq!(side.probe(&key), &[0], "renumbered after compaction");
    }
}
