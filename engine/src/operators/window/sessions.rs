//! Session windows: merging overlapping sessions of the same group keys (Spark's rule: a row
//! joins a session when it is less than `gap` after the session's last event, and may bridge
//! two sessions into one).

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch};
use arrow::compute::{cast, concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::error::Result;

/// Where a session's start and its group keys are in the state schema.
#[derive(Debug, Clone)]
pub(super) struct SessionColumns {
    pub(super) window_start: usize,
    pub(super) keys: Vec<usize>,
}

/// Widens every row's window to the union of the overlapping windows of its group keys.
pub(super) fn merge_sessions(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    columns: &SessionColumns,
    window_end: usize,
) -> Result<RecordBatch> {
    let all = concat_batches(schema, batches)?;
    if all.num_rows() == 0 {
        return Ok(all);
    }
    let mut sort_columns: Vec<SortColumn> = columns
        .keys
        .iter()
        .map(|&i| SortColumn {
            values: all.column(i).clone(),
            options: None,
        })
        .collect();
    sort_columns.push(SortColumn {
        values: all.column(columns.window_start).clone(),
        options: None,
    });
    let order = lexsort_to_indices(&sort_columns, None)?;
    let sorted = take_record_batch(&all, &order)?;
    let start_type = sorted.column(columns.window_start).data_type().clone();
    let end_type = sorted.column(window_end).data_type().clone();
    let starts = cast(sorted.column(columns.window_start), &DataType::Int64)?;
    let ends = cast(sorted.column(window_end), &DataType::Int64)?;
    let starts = starts.as_primitive::<Int64Type>();
    let ends = ends.as_primitive::<Int64Type>();
    let keys = session_key_rows(schema, &sorted, columns)?;
    let n = sorted.num_rows();
    let mut merged_start = vec![0i64; n];
    let mut merged_end = vec![0i64; n];
    let mut run_begin = 0;
    let (mut run_start, mut run_end) = (starts.value(0), ends.value(0));
    for i in 1..=n {
        let joins = i < n
            && keys.as_ref().is_none_or(|k| k.row(i) == k.row(i - 1))
            && starts.value(i) < run_end;
        if joins {
            run_end = run_end.max(ends.value(i));
            continue;
        }
        merged_start[run_begin..i].fill(run_start);
        merged_end[run_begin..i].fill(run_end);
        if i < n {
            run_begin = i;
            run_start = starts.value(i);
            run_end = ends.value(i);
        }
    }
    let mut out: Vec<ArrayRef> = sorted.columns().to_vec();
    out[columns.window_start] = cast(&Int64Array::from(merged_start), &start_type)?;
    out[window_end] = cast(&Int64Array::from(merged_end), &end_type)?;
    Ok(RecordBatch::try_new(sorted.schema(), out)?)
}

/// A timestamp column as integers in its own unit (comparable within one column type).
pub(super) fn as_int64(column: &ArrayRef) -> Result<Int64Array> {
    Ok(cast(column, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

/// Each row's session keys (the group keys but the window) of a state batch as comparable
/// rows; `None` when sessions have no other key.
pub(super) fn session_key_rows(
    schema: &SchemaRef,
    batch: &RecordBatch,
    columns: &SessionColumns,
) -> Result<Option<Rows>> {
    if columns.keys.is_empty() {
        return Ok(None);
    }
    let fields = columns
        .keys
        .iter()
        .map(|&i| SortField::new(schema.field(i).data_type().clone()))
        .collect();
    let key_columns: Vec<ArrayRef> = columns
        .keys
        .iter()
        .map(|&i| batch.column(i).clone())
        .collect();
    Ok(Some(
        RowConverter::new(fields)?.convert_columns(&key_columns)?,
    ))
}
