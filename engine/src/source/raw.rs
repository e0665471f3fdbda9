//! Raw records as a source delivers them, before decoding: one byte buffer with the record
//! boundaries, plus the metadata columns (`_file`, `_line`, ...) the source knows per record.

use std::ops::Range;

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::datatypes::FieldRef;

/// One epoch's records from one source, undecoded.
#[derive(Debug, Default)]
pub struct RawBatch {
    /// All records' bytes, back to back.
    pub data: Vec<u8>,
    /// Where each record lies in `data`.
    pub records: Vec<Range<usize>>,
    /// Metadata columns that the source adds, one value per record (same order as `records`).
    pub metadata: Vec<(FieldRef, ArrayRef)>,
}

impl RawBatch {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when the source had nothing new.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The bytes of record `i`.
    pub fn record(&self, i: usize) -> &[u8] {
        &self.data[self.records[i].clone()]
    }

    /// Appends one record's bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.records.push(start..self.data.len());
    }

    /// Where record `i` came from, from its metadata columns (`_file=a.json _line=7`), for
    /// dead-letter rows and error messages.
    pub fn position(&self, i: usize) -> String {
        let mut parts = Vec::new();
        for (field, array) in &self.metadata {
            if array.is_null(i) {
                continue;
            }
            let value = arrow::util::display::array_value_to_string(array, i)
                .unwrap_or_else(|_| "?".to_string());
            parts.push(format!("{}={}", field.name(), value));
        }
        parts.join(" ")
    }
}

/// Builds a string metadata column holding the same value for `len` records.
pub fn constant_string(value: &str, len: usize) -> ArrayRef {
    std::sync::Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
        value, len,
    )))
}
