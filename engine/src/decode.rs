//! Decodes raw JSON records into Arrow with the source's declared schema, separating the records
//! that cannot be decoded (invalid JSON, a NOT NULL column missing, a value of the wrong type)
//! so they can be dead-lettered with their reason instead of failing the epoch.
//!
//! The fast path feeds every record to one `arrow-json` decoder. A syntax error is detected at
//! the record that causes it; the decoder is then rebuilt and the good records since the last
//! flush (at most 128) are fed again. Type and nullability errors only surface when a batch is flushed, without
//! a row number; such a chunk is bisected until each failing record is isolated. Chunks are
//! decoded on all cores.

use std::ops::Range;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::json::reader::{Decoder, ReaderBuilder};

/// Records per chunk (the unit of work of one thread).
const CHUNK_RECORDS: usize = 8192;
/// Records per flushed batch; also the most records re-fed after a syntax error.
const FLUSH_RECORDS: usize = 128;

/// A record that could not be decoded, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Index of the record in the raw batch.
    pub index: usize,
    /// The decoder's explanation.
    pub error: String,
}

/// The result of decoding one raw batch.
#[derive(Debug)]
pub struct Decoded {
    /// The good records, in input order, with the declared columns only.
    pub batch: RecordBatch,
    /// Indices (into the raw batch) of the rows of `batch`, for attaching metadata columns.
    pub kept: Vec<u32>,
    /// The records that were rejected.
    pub rejected: Vec<Rejected>,
}

/// Decodes newline-free JSON object records into batches of a fixed schema.
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    schema: SchemaRef,
}

impl JsonDecoder {
    /// A decoder producing batches of `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        JsonDecoder { schema }
    }

    /// The declared schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes `records` (ranges into `data`) using up to `threads` threads.
    pub fn decode(
        &self,
        data: &[u8],
        records: &[Range<usize>],
        threads: usize,
    ) -> Result<Decoded, ArrowError> {
        let chunks: Vec<(usize, &[Range<usize>])> = records
            .chunks(CHUNK_RECORDS)
            .enumerate()
            .map(|(i, c)| (i * CHUNK_RECORDS, c))
            .collect();
        let threads = threads.max(1).min(chunks.len().max(1));
        let results: Vec<Result<ChunkResult, ArrowError>> = if threads <= 1 {
            chunks
                .iter()
                .map(|(base, c)| self.decode_chunk(data, *base, c))
                .collect()
        } else {
            let per_thread = chunks.len().div_ceil(threads);
            std::thread::scope(|scope| {
                let handles: Vec<_> = chunks
                    .chunks(per_thread)
                    .map(|group| {
                        scope.spawn(move || {
                            group
                                .iter()
                                .map(|(base, c)| self.decode_chunk(data, *base, c))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| match h.join() {
                        Ok(v) => v,
                        Err(_) => vec![Err(ArrowError::ComputeError(
                            "a JSON decoding thread panicked".into(),
                        ))],
                    })
                    .collect()
            })
        };
        let mut batches = Vec::new();
        let mut kept = Vec::with_capacity(records.len());
        let mut rejected = Vec::new();
        for r in results {
            let r = r?;
            batches.extend(r.batches);
            kept.extend(r.kept);
            rejected.extend(r.rejected);
        }
        let batch = concat_batches(&self.schema, &batches)?;
        Ok(Decoded {
            batch,
            kept,
            rejected,
        })
    }

    fn new_decoder(&self, rows: usize) -> Result<Decoder, ArrowError> {
        ReaderBuilder::new(self.schema.clone())
            .with_batch_size(rows.max(1) + 1)
            .build_decoder()
    }

    /// Decodes one chunk; `base` is the index of its first record in the raw batch.
    fn decode_chunk(
        &self,
        data: &[u8],
        base: usize,
        records: &[Range<usize>],
    ) -> Result<ChunkResult, ArrowError> {
        let mut out = ChunkResult::default();
        let mut decoder = self.new_decoder(FLUSH_RECORDS)?;
        // Records fed since the last flush; all passed the syntax check.
        let mut pending: Vec<usize> = Vec::with_capacity(FLUSH_RECORDS);
        for (i, range) in records.iter().enumerate() {
            match feed(&mut decoder, &data[range.clone()]) {
                Ok(()) => {
                    pending.push(i);
                    if pending.len() == FLUSH_RECORDS {
                        decoder =
                            self.flush(decoder, data, base, records, &mut pending, &mut out)?;
                    }
                }
                Err(e) => {
                    out.rejected.push(Rejected {
                        index: base + i,
                        error: e.to_string(),
                    });
                    // The decoder is unusable after an error: rebuild it with the good records
                    // since the last flush (at most FLUSH_RECORDS of them).
                    decoder = self.new_decoder(FLUSH_RECORDS)?;
                    for &j in &pending {
                        feed(&mut decoder, &data[records[j].clone()])?;
                    }
                }
            }
        }
        self.flush(decoder, data, base, records, &mut pending, &mut out)?;
        Ok(out)
    }

    /// Flushes `pending` into `out` (bisecting if some record fails to convert) and returns a
    /// decoder ready for the next records.
    fn flush(
        &self,
        mut decoder: Decoder,
        data: &[u8],
        base: usize,
        records: &[Range<usize>],
        pending: &mut Vec<usize>,
        out: &mut ChunkResult,
    ) -> Result<Decoder, ArrowError> {
        match decoder.flush() {
            Ok(batch) => {
                out.batches.extend(batch);
                out.kept.extend(pending.iter().map(|&i| (base + i) as u32));
            }
            Err(_) => {
                self.bisect(data, base, records, pending, out)?;
                decoder = self.new_decoder(FLUSH_RECORDS)?;
            }
        }
        pending.clear();
        Ok(decoder)
    }

    /// Finds the records of `subset` (indices into `records`) that fail to flush, by halving.
    fn bisect(
        &self,
        data: &[u8],
        base: usize,
        records: &[Range<usize>],
        subset: &[usize],
        out: &mut ChunkResult,
    ) -> Result<(), ArrowError> {
        let mut decoder = self.new_decoder(subset.len())?;
        for &i in subset {
            feed(&mut decoder, &data[records[i].clone()])?;
        }
        match decoder.flush() {
            Ok(batch) => {
                out.batches.extend(batch);
                out.kept.extend(subset.iter().map(|&i| (base + i) as u32));
            }
            Err(e) if subset.len() == 1 => out.rejected.push(Rejected {
                index: base + subset[0],
                error: e.to_string(),
            }),
            Err(_) => {
                let (left, right) = subset.split_at(subset.len() / 2);
                self.bisect(data, base, records, left, out)?;
                self.bisect(data, base, records, right, out)?;
            }
        }
        Ok(())
    }
}

/// What one chunk produced.
#[derive(Default)]
struct ChunkResult {
    batches: Vec<RecordBatch>,
    kept: Vec<u32>,
    rejected: Vec<Rejected>,
}

/// Feeds one whole record; a record must be exactly one JSON value.
fn feed(decoder: &mut Decoder, record: &[u8]) -> Result<(), ArrowError> {
    let before = decoder.len();
    let mut rest = record;
    while !rest.is_empty() {
        let n = decoder.decode(rest)?;
        if n == 0 {
            return Err(ArrowError::JsonError("decoder made no progress".into()));
        }
        rest = &rest[n..];
    }
    // Terminate the value so a truncated record cannot join with the next one.
    decoder.decode(b"\n")?;
    if decoder.has_partial_record() {
        return Err(ArrowError::JsonError(
            "record is not a complete JSON value (truncated?)".into(),
        ));
    }
    if decoder.len() != before + 1 {
        return Err(ArrowError::JsonError(format!(
            "expected one JSON object per record, found {}",
            decoder.len() - before
        )));
    }
    Ok(())
}

/// Keeps the rows of `batch` at `indices` (used to align metadata columns with decoded rows).
pub fn take_rows(batch: &RecordBatch, indices: &[u32]) -> Result<RecordBatch, ArrowError> {
    take_record_batch(batch, &UInt32Array::from(indices.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Field, Float64Type, Schema};
    use std::sync::Arc;

    fn decoder() -> JsonDecoder {
        JsonDecoder::new(Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("amount", DataType::Float64, true),
            Field::new("ts", crate::types::timestamp_type(), true),
        ])))
    }

    fn raw(lines: &[&str]) -> crate::raw::RawBatch {
        let mut r = crate::raw::RawBatch::default();
        for l in lines {
            r.push(l.as_bytes());
        }
        r
    }

    #[test]
    fn good_bad_and_wrong_typed_records_are_separated() {
        let input = raw(&[
            r#"{"id":"a","amount":1.5,"ts":"2024-03-01T00:00:02.455Z"}"#,
            r#"{"id":"b","amount":"#,
            r#"{"amount":3.0}"#,
            r#"{"id":"d","amount":"lots"}"#,
            r#"{"id":"e","amount":2,"ts":1709251202455}"#,
            r#"{"id":"f","ts":"2024-03-01T02:00:02.455+02:00"}"#,
        ]);
        for threads in [1, 2] {
            let d = decoder()
                .decode(&input.data, &input.records, threads)
                .unwrap();
            assert_eq!(d.kept, vec![0, 4, 5]);
            let ids: Vec<usize> = d.rejected.iter().map(|r| r.index).collect();
            assert_eq!(ids, vec![1, 2, 3]);
            let amounts = d.batch.column(1).as_primitive::<Float64Type>();
            assert_eq!(&amounts.values()[..2], &[1.5, 2.0]);
            assert!(amounts.is_null(2));
            let ts = d.batch.column(2);
            assert_eq!(ts.len(), 3);
            // RFC 3339 with Z, epoch milliseconds and RFC 3339 with an offset: the same instant.
            let ts = ts.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
            assert_eq!(ts.values(), &[1_709_251_202_455; 3]);
        }
    }

    #[test]
    fn many_chunks_keep_input_order() {
        let lines: Vec<String> = (0..20_000)
            .map(|i| {
                if i % 997 == 0 {
                    "{broken".to_string()
                } else {
                    format!(r#"{{"id":"{i}","amount":{i}}}"#)
                }
            })
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let input = raw(&refs);
        let d = decoder().decode(&input.data, &input.records, 2).unwrap();
        assert_eq!(d.rejected.len(), 21);
        assert_eq!(d.batch.num_rows() + d.rejected.len(), 20_000);
        assert!(d.kept.windows(2).all(|w| w[0] < w[1]));
    }
}
