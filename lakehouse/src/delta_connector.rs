//! The `delta` sink connector, the default of every table: `path` (inside the lake unless
//! `allow_outside_lake = true`), `partition_by`, `format = 'delta'`; update output mode MERGEs
//! on the window and group keys. `format = 'parquet'` makes the table a folder of plain
//! Parquet files instead (`compression`, `max_rows_per_file`, `target_file_size`; append only).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_engine::error::{BoxError, EngineError, Result};
use weir_engine::options::Options;
use weir_engine::sink::{column_named, PlannedSink, Sink, SinkConnector, SinkPlace, SinkTarget};

use crate::delta_sink::DeltaSink;
use crate::parquet_sink::{compression, ParquetSink, COMPRESSIONS};

/// The `delta` sink connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeltaConnector;

/// A table planned as a Delta table of the lake.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedDeltaTable {
    /// Path relative to the lake (or absolute, when allowed).
    pub path: String,
    /// Partition columns, as the table spells them.
    pub partition_by: Vec<String>,
    /// Update output mode: the columns rows are MERGEd on.
    pub merge_keys: Option<Vec<String>>,
}

/// A table planned as a folder of plain Parquet files in the lake.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedParquetTable {
    /// Path relative to the lake (or absolute, when allowed).
    pub path: String,
    /// Hive partition columns.
    pub partition_by: Vec<String>,
    /// `snappy` (default), `zstd`, `gzip`, `lz4` or `none`.
    pub compression: String,
    /// At most this many rows per file.
    pub max_rows_per_file: u64,
    /// A file is closed once it holds about this many bytes (`target_file_size`).
    pub target_file_size: Option<u64>,
}

/// `format = 'parquet'`: appends only (a folder of files cannot replace rows).
fn plan_parquet(
    target: SinkTarget<'_>,
    options: &mut Options,
    path: String,
    partition_by: Vec<String>,
) -> Result<Arc<dyn PlannedSink>> {
    if target.update_keys.is_some() {
        return Err(EngineError::option_hint(
            "output_mode",
            "a Parquet folder appends files and cannot replace rows",
            "'update' needs a table that MERGEs: leave out format = 'parquet' (a Delta table)",
        ));
    }
    let compression = options
        .take_choice("compression", &COMPRESSIONS)?
        .unwrap_or_else(|| "snappy".to_string());
    let max_rows_per_file = options.take_u64("max_rows_per_file")?.unwrap_or(1_000_000);
    if max_rows_per_file == 0 {
        return Err(EngineError::option(
            "max_rows_per_file",
            "must be at least 1",
        ));
    }
    let target_file_size = options.take_bytes("target_file_size")?;
    Ok(Arc::new(PlannedParquetTable {
        path,
        partition_by,
        compression,
        max_rows_per_file,
        target_file_size,
    }))
}

#[async_trait::async_trait]
impl PlannedSink for PlannedParquetTable {
    fn describe(&self) -> String {
        let mut text = format!("parquet folder '{}' ({})", self.path, self.compression);
        if !self.partition_by.is_empty() {
            text.push_str(&format!(" partitioned by {}", self.partition_by.join(", ")));
        }
        text
    }

    fn lake_path(&self) -> Option<&str> {
        Some(&self.path)
    }

    async fn open(&self, place: SinkPlace<'_>) -> Result<Box<dyn Sink>, BoxError> {
        Ok(Box::new(ParquetSink::new(
            table_location(place.lake, &self.path),
            self.partition_by.clone(),
            compression(&self.compression),
            self.max_rows_per_file as usize,
            self.target_file_size,
        )?))
    }
}

/// Resolves a table path (`bronze/events`, or absolute) against the lake folder.
pub fn table_location(lake: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        lake.join(p)
    }
}

impl SinkConnector for DeltaConnector {
    fn plan(&self, target: SinkTarget<'_>, options: &mut Options) -> Result<Arc<dyn PlannedSink>> {
        let format = options.take_choice("format", &["delta", "parquet"])?;
        let path = options
            .take_str("path")
            .unwrap_or_else(|| target.table.replace('.', "/"));
        let outside_lake = options
            .take_choice("allow_outside_lake", &["true", "false"])?
            .is_some_and(|v| v == "true");
        check_table_path(&path, outside_lake)?;
        let partition_by = partition_columns(target, options.take_str("partition_by"))?;
        if format.as_deref() == Some("parquet") {
            return plan_parquet(target, options, path, partition_by);
        }
        Ok(Arc::new(PlannedDeltaTable {
            path,
            partition_by,
            merge_keys: target.update_keys.map(<[String]>::to_vec),
        }))
    }
}

/// The partition columns of `partition_by = 'a, b'`, spelled as the table spells them; each
/// must be a column, and one column at least must be left for the data files.
fn partition_columns(target: SinkTarget<'_>, option: Option<String>) -> Result<Vec<String>> {
    let Some(option) = option else {
        return Ok(Vec::new());
    };
    let mut columns = Vec::new();
    for name in option.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let Some(column) = column_named(target.schema, name) else {
            let names: Vec<&str> = target
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            return Err(EngineError::option_hint(
                "partition_by",
                format!(
                    "partition column `{name}` is not a column of `{}`",
                    target.table
                ),
                format!("columns: {}", names.join(", ")),
            ));
        };
        columns.push(column);
    }
    if columns.len() == target.schema.fields().len() {
        return Err(EngineError::option(
            "partition_by",
            "a Delta table needs at least one column that is not a partition column",
        ));
    }
    Ok(columns)
}

/// Refuses a table path that would write outside the lake (`..`, or an absolute path without
/// `allow_outside_lake = true`), make the lake itself a table (`''`, `.`), or write into
/// Weir's own folders (`_dead_letter`, `_checkpoints`).
fn check_table_path(path: &str, outside_lake: bool) -> Result<()> {
    let refuse = |message: String, hint: &str| Err(EngineError::option_hint("path", message, hint));
    let p = Path::new(path);
    if p.is_absolute() {
        return if outside_lake {
            Ok(())
        } else {
            refuse(
                format!("'{path}' is outside the lake"),
                "write a path relative to the lake, or add allow_outside_lake = true to write \
                 there on purpose",
            )
        };
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    if parts.is_empty() {
        return refuse(
            format!("'{path}' is the lake itself, which would hide every other table"),
            "name a folder such as 'gold/revenue'",
        );
    }
    if parts.contains(&"..") {
        return refuse(
            format!("'{path}' leaves the lake through `..`"),
            "write a path inside the lake",
        );
    }
    if matches!(parts[0], "_dead_letter" | "_checkpoints") {
        return refuse(
            format!("'{path}' is in `{}`, which Weir keeps for itself", parts[0]),
            "choose another folder",
        );
    }
    Ok(())
}

#[async_trait::async_trait]
impl PlannedSink for PlannedDeltaTable {
    fn describe(&self) -> String {
        let mut text = format!("delta table '{}'", self.path);
        if !self.partition_by.is_empty() {
            text.push_str(&format!(" partitioned by {}", self.partition_by.join(", ")));
        }
        if let Some(keys) = &self.merge_keys {
            text.push_str(&format!(", MERGE on {}", keys.join(", ")));
        }
        text
    }

    fn lake_path(&self) -> Option<&str> {
        Some(&self.path)
    }

    async fn open(&self, place: SinkPlace<'_>) -> Result<Box<dyn Sink>, BoxError> {
        let sink = DeltaSink::open(
            &table_location(place.lake, &self.path),
            format!("weir:{}:{}", place.pipeline, place.table),
            self.partition_by.clone(),
            place.schema,
        )
        .await?
        .with_merge_keys(self.merge_keys.clone().unwrap_or_default());
        Ok(Box::new(sink))
    }
}
