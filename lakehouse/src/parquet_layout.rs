//! Chooses Parquet encodings for an epoch's files from the data itself.
//!
//! Parquet's default dictionary-encodes every column. For a column of nearly unique values
//! (event ids, timestamps, amounts) that is pure cost: every value is hashed and interned, the
//! dictionary outgrows its page limit and the writer falls back to plain encoding anyway. On the
//! medallion benchmark interning was a quarter of all CPU. So each epoch samples its rows and
//! turns the dictionary off for the columns whose sample is mostly distinct, keeping it for the
//! low-cardinality columns (country, currency, event type) where it shrinks files several times.

use std::collections::HashSet;

use arrow::array::RecordBatch;
use arrow::row::{RowConverter, SortField};
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::parquet::schema::types::ColumnPath;

/// Rows sampled per column to estimate its cardinality.
const SAMPLE_ROWS: usize = 4096;
/// A column whose sample is more than this share distinct is written without dictionary.
const DISTINCT_SHARE_FOR_PLAIN: f64 = 0.9;

/// Writer properties for files holding `batches`: snappy (as delta-rs's default) and dictionary
/// encoding only for the top-level columns that repeat values.
pub fn writer_properties(batches: &[RecordBatch]) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_created_by(format!("weir {}", env!("CARGO_PKG_VERSION")))
        .set_compression(Compression::SNAPPY);
    for column in mostly_distinct_columns(batches) {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    builder.build()
}

/// Names of the top-level columns whose sampled values are mostly distinct. Nested columns are
/// left alone (their Parquet leaf paths differ from the column name).
pub fn mostly_distinct_columns(batches: &[RecordBatch]) -> Vec<String> {
    let Some(first) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Vec::new();
    };
    let sample = first.slice(0, first.num_rows().min(SAMPLE_ROWS));
    let mut out = Vec::new();
    for (field, column) in sample.schema().fields().iter().zip(sample.columns()) {
        if field.data_type().is_nested() || sample.num_rows() < 16 {
            continue;
        }
        let Ok(converter) = RowConverter::new(vec![SortField::new(field.data_type().clone())])
        else {
            continue;
        };
        let Ok(rows) = converter.convert_columns(std::slice::from_ref(column)) else {
            continue;
        };
        let distinct: HashSet<&[u8]> = rows.iter().map(|r| r.data()).collect();
        if distinct.len() as f64 > sample.num_rows() as f64 * DISTINCT_SHARE_FOR_PLAIN {
            out.push(field.name().clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn unique_columns_go_plain_and_repeating_columns_keep_their_dictionary() {
        let n = 1000;
        let schema = Arc::new(Schema::new(vec![
            Field::new("event_id", DataType::Utf8, false),
            Field::new("country", DataType::Utf8, false),
            Field::new("offset", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("e{i}")),
                )),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| ["DE", "FR", "US"][i % 3]),
                )),
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
            ],
        )
        .unwrap();
        assert_eq!(
            mostly_distinct_columns(std::slice::from_ref(&batch)),
            vec!["event_id".to_string(), "offset".to_string()]
        );
        let props = writer_properties(&[batch]);
        assert!(!props.dictionary_enabled(&ColumnPath::from("event_id")));
        assert!(props.dictionary_enabled(&ColumnPath::from("country")));
        assert!(mostly_distinct_columns(&[]).is_empty());
    }
}
