//! Errors of the lakehouse crate; each names the table and, where known, the epoch.

/// Something went wrong reading or writing a Delta table.
#[derive(Debug, thiserror::Error)]
pub enum LakehouseError {
    /// delta-rs failed on this table.
    #[error("Delta table {table}{}: {source}", epoch.map(|e| format!(" (epoch {e})")).unwrap_or_default())]
    Delta {
        /// Table URL or path.
        table: String,
        /// The epoch being written, if any.
        epoch: Option<u64>,
        /// delta-rs's error.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },

    /// A batch could not be converted to a type Delta stores.
    #[error("table {table}: cannot convert column `{column}` for Delta: {source}")]
    Convert {
        /// Table URL or path.
        table: String,
        /// The column.
        column: String,
        /// Arrow's error.
        #[source]
        source: arrow::error::ArrowError,
    },

    /// The query's columns no longer match the existing table (the pipeline was changed).
    #[error(
        "table {table} exists with {found}, but the query now produces {expected}; \
         write to a new table (another name or `path`), or move the old table away to rebuild it"
    )]
    SchemaMismatch {
        /// Table URL or path.
        table: String,
        /// What the query produces.
        expected: String,
        /// What the table holds.
        found: String,
    },

    /// The lake folder could not be read.
    /// A sink that is not Delta (a Kafka topic) could not be set up.
    #[error("table {table}: {message}")]
    SinkSetup {
        /// The table name.
        table: String,
        /// What went wrong.
        message: String,
    },

    #[error("lake {path}: {source}")]
    Io {
        /// The folder.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Registering a table with DataFusion failed.
    #[error("table {table}: {source}")]
    DataFusion {
        /// The table name.
        table: String,
        /// DataFusion's error.
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
}
