//! The engine's error type: every variant names what failed (source, sink, epoch, file) so a
//! user can act on it without reading a backtrace.

use std::path::PathBuf;

/// Result alias used across the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Boxed error from a sink implementation (the engine does not know the sink's error type).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can stop the engine. Bad *records* are never errors: they are dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A WITH option of a source or table is missing, unknown or has a bad value.
    #[error("option `{key}`: {message}{}", hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default())]
    Option {
        /// The option key as written by the user.
        key: String,
        /// What is wrong.
        message: String,
        /// What to write instead, if there is a suggestion.
        hint: Option<String>,
        /// The key itself is not an option (rather than its value being wrong), so the error
        /// points at the key.
        unknown_key: bool,
    },

    /// A source could not be read (files missing, unreadable).
    #[error("source `{source_name}`: {message}")]
    Source {
        /// The source as named in `CREATE SOURCE`.
        source_name: String,
        /// What went wrong.
        message: String,
        /// The underlying I/O error, if any.
        #[source]
        cause: Option<std::io::Error>,
    },

    /// A reference table could not be read, or its data does not fit its declaration.
    #[error("reference table `{table}` ({location}): {message}")]
    Reference {
        /// The table as named in `CREATE REFERENCE TABLE`.
        table: String,
        /// Where it was read (`parquet files at /data/users`).
        location: String,
        /// What went wrong.
        message: String,
    },

    /// A sink failed to commit an epoch.
    #[error("sink `{sink}` failed to commit epoch {epoch}: {cause}")]
    Sink {
        /// The sink's description (table URL).
        sink: String,
        /// The epoch being committed.
        epoch: u64,
        /// The sink's own error.
        #[source]
        cause: BoxError,
    },

    /// Reading or writing the checkpoint folder failed.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The file or folder involved.
        path: PathBuf,
        /// What went wrong and how to recover.
        message: String,
        /// The underlying I/O or JSON error, if any.
        #[source]
        cause: Option<BoxError>,
    },

    /// DataFusion failed while running a node's plan.
    #[error("node `{node}` in epoch {epoch}: {cause}")]
    Plan {
        /// The table or view whose plan failed.
        node: String,
        /// The epoch being processed.
        epoch: u64,
        /// DataFusion's error.
        #[source]
        cause: datafusion::error::DataFusionError,
    },

    /// DataFusion failed outside a node (session setup, registration).
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),

    /// Arrow failed while assembling batches.
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}

impl EngineError {
    /// An option error (a missing option or a bad value), for use by option parsers.
    pub fn option(key: impl Into<String>, message: impl Into<String>) -> Self {
        EngineError::Option {
            key: key.into(),
            message: message.into(),
            hint: None,
            unknown_key: false,
        }
    }

    /// An option error with what to write instead.
    pub fn option_hint(
        key: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        EngineError::Option {
            key: key.into(),
            message: message.into(),
            hint: Some(hint.into()),
            unknown_key: false,
        }
    }

    /// An option nobody knows (`message` says of what), with the suggestion in `hint`.
    pub fn unknown_option(
        key: impl Into<String>,
        message: impl Into<String>,
        hint: String,
    ) -> Self {
        EngineError::Option {
            key: key.into(),
            message: message.into(),
            hint: Some(hint),
            unknown_key: true,
        }
    }

    /// A bug in Weir: an operator found a plan shape its planner never builds.
    pub fn internal(message: impl Into<String>) -> Self {
        EngineError::DataFusion(datafusion::error::DataFusionError::Internal(message.into()))
    }

    /// A plan an operator cannot run, with why (`weir validate` shows `message`).
    pub fn plan_refused(message: impl Into<String>) -> Self {
        EngineError::DataFusion(datafusion::error::DataFusionError::Plan(message.into()))
    }

    /// A function wrapping DataFusion errors of `node`'s plan in `epoch`, for `map_err`.
    pub fn plan(
        node: &str,
        epoch: u64,
    ) -> impl Fn(datafusion::error::DataFusionError) -> Self + Copy + '_ {
        move |cause| EngineError::Plan {
            node: node.to_string(),
            epoch,
            cause,
        }
    }

    /// What a user can do after a run stopped with this error in an epoch (for `weir status`).
    pub fn what_to_do(&self) -> &'static str {
        match self {
            EngineError::Plan { .. } => {
                "a row the table's SQL cannot compute stops a windowed query or a join \
                 (elsewhere it is a dead letter): guard the expression (TRY_CAST, NULLIF, CASE) \
                 and run again; the epoch is replayed over the same input"
            }
            EngineError::Sink { .. } => {
                "the table could not be written (disk space, permissions, a table changed by \
                 hand): fix the cause and run again; the epoch is replayed and no table takes \
                 it twice"
            }
            EngineError::Reference { .. } => {
                "fix the reference table's files (or its declared columns) and run again; a \
                 replayed epoch uses the version saved in the checkpoint"
            }
            EngineError::Source { .. } | EngineError::Option { .. } => {
                "fix what the error names (the input, or the source's options) and run again"
            }
            EngineError::Checkpoint { .. } => {
                "the error says how to restore or replace the checkpoint; then run again"
            }
            EngineError::DataFusion(_) | EngineError::Arrow(_) => {
                "run again (the epoch is replayed over the same input); if it fails the same \
                 way, report the error with this output"
            }
        }
    }

    /// A checkpoint error with its cause.
    pub fn checkpoint(
        path: impl Into<PathBuf>,
        message: impl Into<String>,
        cause: impl Into<BoxError>,
    ) -> Self {
        EngineError::Checkpoint {
            path: path.into(),
            message: message.into(),
            cause: Some(cause.into()),
        }
    }
}
