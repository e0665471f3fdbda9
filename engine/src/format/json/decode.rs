//! Decodes raw JSON records into Arrow with the source's declared schema, separating the records
//! that cannot be decoded (invalid JSON, a NOT NULL column missing, a value of the wrong type)
//! so they can be dead-lettered with their reason instead of failing the epoch.
//!
//! Flat records of scalars go through [`FlatJsonDecoder`], which reads each record once. The
//! records it declines (anything unusual, every broken record among them) go to `arrow-json`,
//! which decides: one decoder is fed record by record. A syntax error is detected at the record
//! that causes it; the decoder is then rebuilt and the good records since the last flush (at
//! most 128) are fed again. Type and nullability errors only surface when a batch is flushed,
//! without a row number; such a batch is bisected until each failing record is isolated. Chunks
//! are decoded on all cores.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, interleave_record_batch, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::json::reader::{Decoder, ReaderBuilder};

use crate::format::json::flat::FlatJsonDecoder;
use crate::format::json::strict::{strict_problem, StrictProblem};

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
    /// The records that were rejected, in input order.
    pub rejected: Vec<Rejected>,
}

/// Decodes newline-free JSON object records into batches of a fixed schema.
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    schema: SchemaRef,
    /// The fast path, when every column has a type it decodes.
    flat: Option<FlatJsonDecoder>,
    /// `json.lenient = true`: keep arrow-json's coercions instead of the strict rules.
    lenient: bool,
}

impl JsonDecoder {
    /// A decoder producing batches of `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        let flat = FlatJsonDecoder::try_new(&schema);
        JsonDecoder {
            schema,
            flat,
            lenient: false,
        }
    }

    /// Keeps arrow-json's coercions (`"12"` into an INT is 12, `1.5` is 1, ...) for records
    /// the fast path leaves to it, instead of dead-lettering them (see `strict`).
    pub fn lenient(mut self, lenient: bool) -> Self {
        self.lenient = lenient;
        self
    }

    /// The same decoder with every record going through `arrow-json`: the reference the fast
    /// path is tested against, and a baseline for benchmarks.
    pub fn without_fast_path(mut self) -> Self {
        self.flat = None;
        self
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
            // Threads take the next chunk as they finish one, so a thread slowed down by other
            // work of the epoch (computing, committing) does not hold up the others.
            let next = AtomicUsize::new(0);
            let mut results: Vec<(usize, Result<ChunkResult, ArrowError>)> =
                std::thread::scope(|scope| {
                    let handles: Vec<_> = (0..threads)
                        .map(|_| {
                            scope.spawn(|| {
                                let mut done = Vec::new();
                                loop {
                                    let i = next.fetch_add(1, AtomicOrdering::Relaxed);
                                    let Some((base, c)) = chunks.get(i) else {
                                        return done;
                                    };
                                    done.push((i, self.decode_chunk(data, *base, c)));
                                }
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .flat_map(|h| match h.join() {
                            Ok(v) => v,
                            Err(_) => vec![(
                                0,
                                Err(ArrowError::ComputeError(
                                    "a JSON decoding thread panicked".into(),
                                )),
                            )],
                        })
                        .collect()
                });
            results.sort_by_key(|(i, _)| *i);
            results.into_iter().map(|(_, r)| r).collect()
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
        // In input order, however the chunks found them (dead letters keep the source's order).
        rejected.sort_unstable_by_key(|r| r.index);
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
        let Some(flat) = &self.flat else {
            return self.decode_with_arrow_json(data, base, records, 0..records.len());
        };
        let fast = flat.decode(data, records, 0..records.len())?;
        let fast_kept: Vec<u32> = fast.kept.iter().map(|&i| (base + i) as u32).collect();
        let slow = if fast.declined.is_empty() {
            ChunkResult::default()
        } else {
            self.decode_with_arrow_json(data, base, records, fast.declined.iter().copied())?
        };
        if slow.kept.is_empty() {
            return Ok(ChunkResult {
                batches: vec![fast.batch],
                kept: fast_kept,
                rejected: slow.rejected,
            });
        }
        // Some declined records were good after all: put their rows back in input order.
        let batches = [fast.batch, concat_batches(&self.schema, &slow.batches)?];
        let mut origin: Vec<(u32, usize, usize)> = fast_kept
            .iter()
            .enumerate()
            .map(|(row, &index)| (index, 0, row))
            .chain(
                slow.kept
                    .iter()
                    .enumerate()
                    .map(|(row, &index)| (index, 1, row)),
            )
            .collect();
        origin.sort_unstable_by_key(|(index, _, _)| *index);
        let pick: Vec<(usize, usize)> = origin.iter().map(|&(_, b, r)| (b, r)).collect();
        Ok(ChunkResult {
            batches: vec![interleave_record_batch(&[&batches[0], &batches[1]], &pick)?],
            kept: origin.into_iter().map(|(index, _, _)| index).collect(),
            rejected: slow.rejected,
        })
    }

    /// Decodes the records at `subset` (indices into `records`) with `arrow-json`.
    fn decode_with_arrow_json(
        &self,
        data: &[u8],
        base: usize,
        records: &[Range<usize>],
        subset: impl Iterator<Item = usize>,
    ) -> Result<ChunkResult, ArrowError> {
        let mut out = ChunkResult::default();
        let mut decoder = self.new_decoder(FLUSH_RECORDS)?;
        // Records fed since the last flush; all passed the syntax check.
        let mut pending: Vec<usize> = Vec::with_capacity(FLUSH_RECORDS);
        for i in subset {
            let record = &data[records[i].clone()];
            // A value that does not fit is refused before arrow-json sees the record; broken
            // or non-strict syntax goes to arrow-json first, so a broken record keeps
            // arrow-json's message, and one it accepts (a trailing comma, `01`) is refused.
            let strict = match self.lenient {
                true => None,
                false => strict_problem(record, &self.schema),
            };
            if let Some(problem @ StrictProblem::Value(_)) = &strict {
                out.rejected.push(Rejected {
                    index: base + i,
                    error: problem.to_string(),
                });
                continue;
            }
            let problem = match feed(&mut decoder, record) {
                Ok(()) => match strict {
                    Some(problem) => Err(problem.to_string()),
                    None => Ok(()),
                },
                Err(e) => Err(e.to_string()),
            };
            match problem {
                Ok(()) => {
                    pending.push(i);
                    if pending.len() == FLUSH_RECORDS {
                        decoder =
                            self.flush(decoder, data, base, records, &mut pending, &mut out)?;
                    }
                }
                Err(error) => {
                    out.rejected.push(Rejected {
                        index: base + i,
                        error,
                    });
                    // The decoder is unusable after an error (or holds the record the strict
                    // rules refused): rebuild it with the good records since the last flush
                    // (at most FLUSH_RECORDS of them).
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
                error: self.explain(&data[records[subset[0]].clone()], &e),
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

impl JsonDecoder {
    /// Why a record failed to convert: a JSON array or object in a column declared as a
    /// scalar (or the other way round) is named with what to declare instead; otherwise
    /// arrow-json's own message (which prints nested values without their commas).
    fn explain(&self, record: &[u8], error: &ArrowError) -> String {
        let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(record) else {
            return error.to_string();
        };
        self.schema
            .fields()
            .iter()
            .find_map(|field| {
                let value = object.get(field.name())?;
                crate::format::json::strict::nested_in_scalar(
                    field.name(),
                    value,
                    field.data_type(),
                )
            })
            .unwrap_or_else(|| error.to_string())
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

    fn raw(lines: &[&str]) -> crate::source::raw::RawBatch {
        let mut r = crate::source::raw::RawBatch::default();
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

    /// Random values for one field: mostly well-formed, often in forms only arrow-json
    /// decides about, sometimes broken.
    fn random_value(rng: &mut rand_chacha::ChaCha8Rng, field: &str) -> String {
        use rand::Rng;
        const ODD: &[&str] = &[
            "null",
            "true",
            "false",
            "tru",
            "nul",
            "0",
            "-0",
            "01",
            "1.",
            ".5",
            "1e3",
            "1E-2",
            "-1.5e+2",
            "12abc",
            "1.5",
            "32768",
            "2147483648",
            "9223372036854775808",
            "1e400",
            "\"\"",
            "\"12\"",
            "\"1.5\"",
            "\"true\"",
            "\"a\\nb\"",
            "\"caf\\u00e9\"",
            "\"\\ud83d\\ude00\"",
            "\"\\ud83d\"",
            "\"\\x\"",
            "\"tab\there\"",
            "\"é ü 😀\"",
            "[]",
            "[1,2]",
            "{}",
            "{\"a\":1}",
            "\"2024-03-01T00:00:02.455Z\"",
            "\"2024-03-01T02:00:02+02:00\"",
            "\"2024-03-01 00:00:02\"",
            "\"2024-03-01\"",
            "\"2024-13-01T00:00:00Z\"",
            "1709251202455",
            "1709251202455.5",
            "\"\\/\\\\\\\"\"",
            // Values arrow-json alone would coerce (see `strict`).
            "\"NaN\"",
            "\"Infinity\"",
            "1e20",
            "-1e20",
            "7.0",
            "1.7e12",
        ];
        if rng.random_bool(0.04) {
            return ODD[rng.random_range(0..ODD.len())].to_string();
        }
        match field {
            "s" | "n" => format!("\"v{}\"", rng.random_range(0..50)),
            "b" => ["true", "false"][rng.random_range(0..2)].to_string(),
            "i16" | "i32" | "i64" => rng.random_range(-40000i64..40000).to_string(),
            "f32" | "f64" => format!("{:.3}", rng.random_range(-1e6..1e6)),
            "d" => format!(
                "\"2024-0{}-1{}\"",
                rng.random_range(1..10),
                rng.random_range(0..10)
            ),
            _ => format!(
                "\"2024-03-0{}T{:02}:00:00.{:03}Z\"",
                rng.random_range(1..10),
                rng.random_range(0..24),
                rng.random_range(0..1000)
            ),
        }
    }

    /// A random record over `fields`, with shuffled, missing, unknown and duplicate keys,
    /// odd spacing, and some structural damage.
    fn random_record(rng: &mut rand_chacha::ChaCha8Rng, fields: &[&str]) -> Vec<u8> {
        use rand::seq::SliceRandom;
        use rand::Rng;
        let mut keys: Vec<&str> = fields.to_vec();
        if rng.random_bool(0.1) {
            keys.shuffle(rng);
        }
        let mut parts = Vec::new();
        for key in keys {
            if rng.random_bool(0.05) {
                continue;
            }
            parts.push(format!("\"{key}\":{}", random_value(rng, key)));
            if rng.random_bool(0.02) {
                parts.push(format!("\"{key}\":{}", random_value(rng, key)));
            }
        }
        if rng.random_bool(0.1) {
            let extra = [
                "1",
                "\"x\"",
                "{\"deep\":[1,{\"x\":null}]}",
                "[true,\"\\u0041\"]",
                "{}",
            ];
            // Undeclared keys, some of them a declared name plus more (or that name escaped).
            let names = ["extra", "s2", "i32x", "f", "i\\u00332"];
            let at = rng.random_range(0..=parts.len());
            parts.insert(
                at,
                format!(
                    "\"{}\":{}",
                    names[rng.random_range(0..names.len())],
                    extra[rng.random_range(0..extra.len())]
                ),
            );
        }
        let sep = [",", ", ", " ,\t", ",,", " "][rng.random_range(0..5)];
        let sep = if rng.random_bool(0.9) { "," } else { sep };
        let mut text = format!("{{{}}}", parts.join(sep)).into_bytes();
        match rng.random_range(0..40) {
            0 => text.truncate(rng.random_range(0..text.len())),
            1 => text.extend_from_slice(b" x"),
            2 => text.extend_from_slice(b" {}"),
            3 => text = b"[1]".to_vec(),
            4 => text.insert(rng.random_range(0..text.len()), 0xff),
            // A trailing comma, which arrow-json alone accepts.
            5 if text.len() > 2 => text.insert(text.len() - 1, b','),
            5 => text.insert(rng.random_range(0..text.len()), b'\n'),
            6 => text = b"  ".to_vec(),
            _ => {}
        }
        text
    }

    #[test]
    fn the_fast_path_gives_exactly_what_arrow_json_gives() {
        use rand::SeedableRng;
        let fields = [
            "s", "n", "b", "i16", "i32", "i64", "f32", "f64", "d", "ts", "tz",
        ];
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("n", DataType::Utf8, false),
            Field::new("b", DataType::Boolean, true),
            Field::new("i16", DataType::Int16, true),
            Field::new("i32", DataType::Int32, true),
            Field::new("i64", DataType::Int64, true),
            Field::new("f32", DataType::Float32, true),
            Field::new("f64", DataType::Float64, true),
            Field::new("d", DataType::Date32, true),
            Field::new("ts", crate::types::timestamp_type(), false),
            Field::new(
                "tz",
                DataType::Timestamp(
                    arrow::datatypes::TimeUnit::Millisecond,
                    Some("+02:00".into()),
                ),
                true,
            ),
        ]));
        let fast = JsonDecoder::new(schema.clone());
        let reference = JsonDecoder::new(schema.clone()).without_fast_path();
        let flat = FlatJsonDecoder::try_new(&schema).unwrap();
        for seed in 0..4 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut input = crate::source::raw::RawBatch::default();
            for _ in 0..3000 {
                input.push(&random_record(&mut rng, &fields));
            }
            for threads in [1, 2] {
                let got = fast.decode(&input.data, &input.records, threads).unwrap();
                let want = reference
                    .decode(&input.data, &input.records, threads)
                    .unwrap();
                let differ: Vec<String> = got
                    .kept
                    .iter()
                    .filter(|k| !want.kept.contains(k))
                    .map(|&k| {
                        let r = want.rejected.iter().find(|r| r.index == k as usize);
                        format!(
                            "{} -> {:?}",
                            String::from_utf8_lossy(input.record(k as usize)),
                            r.map(|r| &r.error)
                        )
                    })
                    .take(5)
                    .collect();
                assert_eq!(got.kept, want.kept, "seed {seed}: {differ:#?}");
                for (g, w) in got.rejected.iter().zip(&want.rejected) {
                    assert_eq!(g, w, "seed {seed}: {:?}", input.record(g.index));
                }
                assert_eq!(got.rejected.len(), want.rejected.len(), "seed {seed}");
                assert_eq!(got.batch, want.batch, "seed {seed}");
            }
            // The comparison means something only if both paths did real work.
            let only_fast = flat
                .decode(&input.data, &input.records, 0..input.len())
                .unwrap();
            let reference_rows = reference.decode(&input.data, &input.records, 1).unwrap();
            assert!(
                only_fast.kept.len() > 600,
                "seed {seed}: fast path kept {}",
                only_fast.kept.len()
            );
            assert!(
                reference_rows.batch.num_rows() > only_fast.kept.len(),
                "seed {seed}"
            );
            assert!(!reference_rows.rejected.is_empty(), "seed {seed}");
        }
    }

    #[test]
    fn the_fast_path_decodes_typical_events_itself() {
        let input = raw(&[
            r#"{"id":"a","amount":1.5,"ts":"2024-03-01T00:00:02.455Z"}"#,
            r#" { "ts" : 1709251202455 , "id" : "b\"q\u00e9", "other": {"x": [1, null]} } "#,
            r#"{"id":"c","amount":null}"#,
        ]);
        let flat = FlatJsonDecoder::try_new(decoder().schema()).unwrap();
        let d = flat.decode(&input.data, &input.records, 0..3).unwrap();
        assert_eq!(d.kept, vec![0, 1, 2]);
        assert!(d.declined.is_empty());
        let ids = d.batch.column(0).as_string::<i32>();
        assert_eq!(ids.value(1), "b\"qé");
    }
}
