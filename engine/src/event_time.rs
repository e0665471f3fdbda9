//! Which decoded rows may drive a watermark: a row's event time must exist, fit the range every
//! window computation can handle, and not lie too far in the future. Any other row is a dead
//! letter with the reason, so one bad record neither stops a pipeline for good (an event time
//! of year 0001 or 1e20 ms fails DataFusion's nanosecond casts on every replay) nor moves the
//! watermark past every later row (a single year-2200 record), nor vanishes (a NULL event time
//! belongs to no window).

use arrow::array::{Array, BooleanArray, TimestampMillisecondArray};
use arrow::compute::filter_record_batch;
use arrow::error::ArrowError;

use crate::format::json::decode::{Decoded, Rejected};

/// The earliest event time a window can hold: 1678-01-01T00:00:00Z. DataFusion computes window
/// bounds in nanoseconds, which reach back to 1677-09-21.
pub const MIN_EVENT_MS: i64 = -9_183_110_400_000;

/// The latest event time a window can hold: 2261-12-31T00:00:00Z (nanoseconds reach
/// 2262-04-11; the margin leaves room for window sizes and offsets).
pub const MAX_EVENT_MS: i64 = 9_240_451_200_000;

/// How far ahead of the wall clock an event time may be by default (`max_event_time_ahead`).
pub const DEFAULT_MAX_AHEAD_MS: i64 = 24 * 60 * 60 * 1000;

/// Moves the rows of `decoded` whose event time (column `column`) is NULL, outside the
/// windowable range, or later than `latest_ms` into its rejected records.
pub fn reject_bad_event_times(
    decoded: &mut Decoded,
    column: &str,
    latest_ms: Option<i64>,
) -> Result<(), ArrowError> {
    let Ok(index) = decoded.batch.schema().index_of(column) else {
        return Ok(());
    };
    let Some(times) = decoded
        .batch
        .column(index)
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .cloned()
    else {
        return Ok(());
    };
    let latest = latest_ms.unwrap_or(MAX_EVENT_MS).min(MAX_EVENT_MS);
    let mut keep = Vec::with_capacity(times.len());
    let mut rejected = Vec::new();
    for row in 0..times.len() {
        let problem = if times.is_null(row) {
            Some(format!(
                "event time `{column}` is null, so the row belongs to no window"
            ))
        } else {
            let ms = times.value(row);
            if !(MIN_EVENT_MS..=MAX_EVENT_MS).contains(&ms) {
                Some(format!(
                    "event time `{column}` = {} is outside the range windows can hold \
                     (1678-01-01 to 2261-12-31)",
                    describe_ms(ms)
                ))
            } else if ms > latest {
                Some(format!(
                    "event time `{column}` = {} is more than max_event_time_ahead after the \
                     wall clock; it would move the watermark past every later row",
                    describe_ms(ms)
                ))
            } else {
                None
            }
        };
        keep.push(problem.is_none());
        if let Some(error) = problem {
            rejected.push(Rejected {
                index: decoded.kept[row] as usize,
                error,
            });
        }
    }
    if rejected.is_empty() {
        return Ok(());
    }
    let mask = BooleanArray::from(keep.clone());
    decoded.batch = filter_record_batch(&decoded.batch, &mask)?;
    let mut kept = Vec::with_capacity(decoded.batch.num_rows());
    for (row, index) in decoded.kept.iter().enumerate() {
        if keep[row] {
            kept.push(*index);
        }
    }
    decoded.kept = kept;
    decoded.rejected.extend(rejected);
    decoded.rejected.sort_by_key(|r| r.index);
    Ok(())
}

/// An epoch-millisecond instant as RFC 3339 when chrono can show it, else the number.
fn describe_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| format!("{ms} ms"))
}
