//! A table as a folder of plain Parquet files (`format = 'parquet'`), optionally
//! Hive-partitioned (`partition_by`), that DuckDB, Polars and Spark read as a folder.
//!
//! Exactly once without a log: an epoch's files have names made of the epoch and a sequence
//! number (`part-00000042-0003.parquet`), each written under a hidden temporary name and
//! renamed into place, so a reader never sees a partial file. Before writing an epoch the sink
//! deletes that epoch's files left by an attempt that crashed, so a replayed epoch replaces its
//! files instead of adding a second copy. Between the first rename and the last, a reader may
//! see part of an epoch's files (a Parquet folder has no commit); a Delta table has no such
//! window.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::DataType;
use deltalake::parquet::arrow::ArrowWriter;
use deltalake::parquet::basic::{Compression, GzipLevel, ZstdLevel};
use weir_engine::error::BoxError;
use weir_engine::sink::{Sink, SinkReport};

use crate::normalize::to_delta_batch;
use crate::parquet_layout::writer_properties;

/// The compressions `compression` accepts.
pub const COMPRESSIONS: [&str; 5] = ["snappy", "zstd", "gzip", "lz4", "none"];

/// Writes a node's rows as Parquet files in `dir`.
#[derive(Debug)]
pub struct ParquetSink {
    dir: PathBuf,
    partition_by: Vec<String>,
    compression: Compression,
    /// At most this many rows per file.
    max_rows_per_file: usize,
    /// A file is closed once its encoded size reaches this many bytes.
    target_file_size: Option<u64>,
}

/// The compression named `name` (one of [`COMPRESSIONS`]).
pub fn compression(name: &str) -> Compression {
    match name {
        "zstd" => Compression::ZSTD(ZstdLevel::default()),
        "gzip" => Compression::GZIP(GzipLevel::default()),
        "lz4" => Compression::LZ4_RAW,
        "none" => Compression::UNCOMPRESSED,
        _ => Compression::SNAPPY,
    }
}

/// `part-<epoch>-<n>.parquet`: the epoch's files sort after the earlier epochs'.
fn file_name(epoch: u64, n: usize) -> String {
    format!("part-{epoch:08}-{n:04}.parquet")
}

/// The epoch a file name of [`file_name`] holds.
fn epoch_of(name: &str) -> Option<u64> {
    name.strip_prefix("part-")?.split('-').next()?.parse().ok()
}

/// Every file under `dir` (partition folders included).
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(all_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The epoch of a data file, or of a temporary file a crashed write left.
fn epoch_of_path(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    match name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) {
        Some(data_name) => epoch_of(data_name),
        None => epoch_of(name),
    }
}

impl ParquetSink {
    /// A sink writing into `dir` (created when missing).
    pub fn new(
        dir: PathBuf,
        partition_by: Vec<String>,
        compression: Compression,
        max_rows_per_file: usize,
        target_file_size: Option<u64>,
    ) -> Result<Self, BoxError> {
        std::fs::create_dir_all(&dir)?;
        Ok(ParquetSink {
            dir,
            partition_by,
            compression,
            max_rows_per_file: max_rows_per_file.max(1),
            target_file_size,
        })
    }

    /// The epoch's rows by partition folder (`a=1/b=x`, or `` without partitions), with the
    /// partition columns removed from the files (Hive style).
    fn by_partition(
        &self,
        batches: &[RecordBatch],
    ) -> Result<BTreeMap<String, Vec<RecordBatch>>, BoxError> {
        let mut out: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            let batch = to_delta_batch(batch).map_err(|(column, e)| format!("{column}: {e}"))?;
            if self.partition_by.is_empty() {
                out.entry(String::new()).or_default().push(batch);
                continue;
            }
            let values: Vec<Arc<dyn Array>> = self
                .partition_by
                .iter()
                .map(|c| cast(batch.column(batch.schema().index_of(c)?), &DataType::Utf8))
                .collect::<Result<_, _>>()?;
            let mut rows: BTreeMap<String, Vec<u32>> = BTreeMap::new();
            for row in 0..batch.num_rows() {
                let folder: Vec<String> = self
                    .partition_by
                    .iter()
                    .zip(&values)
                    .map(|(c, v)| {
                        let text = v
                            .as_any()
                            .downcast_ref::<arrow::array::StringArray>()
                            .filter(|s| s.is_valid(row))
                            .map(|s| s.value(row).to_string())
                            .unwrap_or_else(|| "__HIVE_DEFAULT_PARTITION__".to_string());
                        format!("{c}={}", text.replace('/', "%2F"))
                    })
                    .collect();
                rows.entry(folder.join("/")).or_default().push(row as u32);
            }
            let keep: Vec<usize> = (0..batch.num_columns())
                .filter(|&i| !self.partition_by.contains(batch.schema().field(i).name()))
                .collect();
            for (folder, rows) in rows {
                let part = take_record_batch(&batch, &UInt32Array::from(rows))?.project(&keep)?;
                out.entry(folder).or_default().push(part);
            }
        }
        Ok(out)
    }

    /// Removes the files (and temporary files) an earlier attempt at `epoch` left.
    fn remove_epoch(&self, epoch: u64) -> Result<(), BoxError> {
        for file in all_files(&self.dir) {
            if epoch_of_path(&file) == Some(epoch) {
                std::fs::remove_file(&file)?;
            }
        }
        Ok(())
    }

    /// Writes one partition folder's rows of `epoch` as files `0, 1, ...`: a file is closed
    /// when it holds `max_rows_per_file` rows or reaches `target_file_size` bytes.
    fn write_folder(
        &self,
        folder: &Path,
        epoch: u64,
        batches: &[RecordBatch],
    ) -> Result<u64, BoxError> {
        std::fs::create_dir_all(folder)?;
        let properties = writer_properties(batches)
            .into_builder()
            .set_compression(self.compression)
            .build();
        // With a target size, slices small enough to check the size often.
        let slice = match self.target_file_size {
            Some(_) => SIZE_CHECK_ROWS,
            None => self.max_rows_per_file,
        };
        let mut written = 0;
        let mut open: Option<OpenFile> = None;
        let mut n = 0;
        for batch in batches {
            let mut offset = 0;
            while offset < batch.num_rows() {
                let file = match open.as_mut() {
                    Some(file) => file,
                    None => open.insert(OpenFile::create(folder, epoch, n, batch, &properties)?),
                };
                let take = (self.max_rows_per_file - file.rows)
                    .min(batch.num_rows() - offset)
                    .min(slice);
                file.write(&batch.slice(offset, take))?;
                offset += take;
                let full = file.rows == self.max_rows_per_file
                    || self
                        .target_file_size
                        .is_some_and(|target| file.size() >= target);
                if full {
                    if let Some(file) = open.take() {
                        written += file.finish()?;
                    }
                    n += 1;
                }
            }
        }
        if let Some(file) = open {
            written += file.finish()?;
        }
        Ok(written)
    }
}

/// Rows written between two checks of a file's size against `target_file_size`.
const SIZE_CHECK_ROWS: usize = 4096;

/// A file being written: under a hidden temporary name until [`OpenFile::finish`].
struct OpenFile {
    writer: ArrowWriter<std::fs::File>,
    tmp: PathBuf,
    target: PathBuf,
    rows: usize,
}

impl OpenFile {
    /// File `n` of `epoch` in `folder`, for rows like `like`.
    fn create(
        folder: &Path,
        epoch: u64,
        n: usize,
        like: &RecordBatch,
        properties: &deltalake::parquet::file::properties::WriterProperties,
    ) -> Result<Self, BoxError> {
        let target = folder.join(file_name(epoch, n));
        let tmp = folder.join(format!(".{}.tmp", file_name(epoch, n)));
        let file = std::fs::File::create(&tmp)?;
        let writer = ArrowWriter::try_new(file, like.schema(), Some(properties.clone()))?;
        Ok(OpenFile {
            writer,
            tmp,
            target,
            rows: 0,
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), BoxError> {
        self.writer.write(batch)?;
        self.rows += batch.num_rows();
        Ok(())
    }

    /// Bytes written so far plus the encoded size of the row group being built.
    fn size(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    /// Closes, syncs and renames the file into place; returns its rows.
    fn finish(self) -> Result<u64, BoxError> {
        self.writer.into_inner()?.sync_all()?;
        std::fs::rename(&self.tmp, &self.target)?;
        Ok(self.rows as u64)
    }
}

#[async_trait::async_trait]
impl Sink for ParquetSink {
    fn describe(&self) -> String {
        format!("parquet folder {}", self.dir.display())
    }

    fn last_committed_epoch(&self) -> Option<u64> {
        all_files(&self.dir)
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
            .filter_map(|f| f.file_name().and_then(|n| n.to_str()).and_then(epoch_of))
            .max()
    }

    async fn write_epoch(
        &mut self,
        epoch: u64,
        batches: Vec<RecordBatch>,
    ) -> Result<SinkReport, BoxError> {
        self.remove_epoch(epoch)?;
        let mut written = 0;
        for (folder, batches) in self.by_partition(&batches)? {
            written += self.write_folder(&self.dir.join(folder), epoch, &batches)?;
        }
        Ok(SinkReport {
            rows_written: written,
            ..SinkReport::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_carry_their_epoch_and_sort_by_it() {
        assert_eq!(file_name(42, 3), "part-00000042-0003.parquet");
        assert_eq!(epoch_of("part-00000042-0003.parquet"), Some(42));
        assert!(file_name(9, 0) < file_name(10, 0));
        assert_eq!(epoch_of(".part-00000042-0003.parquet.tmp"), None);
    }
}
