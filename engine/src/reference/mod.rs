//! Reference tables: static or slowly changing tables a pipeline reads but does not produce
//! (`CREATE REFERENCE TABLE users WITH (connector = 'parquet', path = '...')`), joined with
//! streams by ordinary SQL (a lookup join).
//!
//! A reference is loaded whole and kept in memory. Before each epoch is logged the runtime
//! asks it for its current version (a Delta version, a fingerprint of the files); a new version
//! is loaded, saved in the checkpoint, and the version is written to the epoch's offset log, so
//! a replayed epoch joins exactly the rows the first attempt joined (`runtime/references.rs`).
//!
//! - `files`: Parquet, CSV and JSON files (a file or a folder).
//! - `registry`: the connectors by name; Delta comes from `weir-lakehouse`.

pub mod files;
pub mod registry;

use std::fmt::Debug;

use arrow::array::RecordBatch;
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{Schema, SchemaRef};

use crate::error::{EngineError, Result};

pub use registry::{ReferenceArgs, ReferenceConnector, ReferenceRegistry};

/// A table of reference rows, at versions.
#[async_trait::async_trait]
pub trait ReferenceTable: Send + Sync + Debug {
    /// The columns the pipeline sees (the declared ones, or the data's own).
    fn schema(&self) -> SchemaRef;

    /// The version the data is at now; cheap enough to ask before every epoch.
    async fn current_version(&self) -> Result<String>;

    /// The rows at `version`, in [`ReferenceTable::schema`]; `None` when that version can no
    /// longer be read (files changed since, or while being read): ask for the current one.
    async fn load(&self, version: &str) -> Result<Option<Vec<RecordBatch>>>;

    /// What and where the table is (`parquet files at /data/users`), for messages.
    fn describe(&self) -> String;
}

/// The error of a reference table `table` at `location`.
pub fn reference_error(table: &str, location: &str, message: impl Into<String>) -> EngineError {
    EngineError::Reference {
        table: table.to_string(),
        location: location.to_string(),
        message: message.into(),
    }
}

/// `batches` in the declared `schema`: each declared column taken by name (ignoring case) and
/// cast to its declared type. A missing column or a value that does not cast is an error that
/// names the table, where it was read, the column and both types.
pub fn conform(
    table: &str,
    location: &str,
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let found: &Schema = &batch.schema();
        let mut columns = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let Some((i, have)) = found
                .fields()
                .iter()
                .enumerate()
                .find(|(_, f)| f.name().eq_ignore_ascii_case(field.name()))
            else {
                let names: Vec<&str> = found.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(reference_error(
                    table,
                    location,
                    format!(
                        "has no column `{}` (its columns: {})",
                        field.name(),
                        names.join(", ")
                    ),
                ));
            };
            let column =
                cast_with_options(batch.column(i), field.data_type(), &strict).map_err(|e| {
                    reference_error(
                        table,
                        location,
                        format!(
                            "column `{}` is {} there and cannot be read as the declared {}: {e}",
                            field.name(),
                            have.data_type(),
                            field.data_type()
                        ),
                    )
                })?;
            if !field.is_nullable() && column.null_count() > 0 {
                return Err(reference_error(
                    table,
                    location,
                    format!(
                        "column `{}` is declared NOT NULL but has NULLs",
                        field.name()
                    ),
                ));
            }
            columns.push(column);
        }
        out.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(out)
}
