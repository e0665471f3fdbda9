//! Pipeline files: one `.sql` file or a folder of them (in name order), read and with
//! `${VAR}` references substituted, ready to parse; positions in errors point into them.

use std::path::{Path, PathBuf};

use datafusion::sql::sqlparser::tokenizer::Span;

use crate::env::substitute;
use crate::error::{Location, SqlError, SqlErrors};

/// One pipeline file after environment substitution.
#[derive(Debug, Clone)]
pub struct PipelineFile {
    /// Path as given (for messages).
    pub path: PathBuf,
    /// Text after `${VAR}` substitution.
    pub text: String,
}

impl PipelineFile {
    /// A location in this file from a sqlparser span.
    pub fn location(&self, span: Span) -> Location {
        Location {
            file: self.path.clone(),
            line: span.start.line.max(1),
            column: span.start.column.max(1),
        }
    }

    /// An error at `span` with the offending line attached.
    pub fn error(&self, span: Span, message: impl Into<String>) -> SqlError {
        self.error_at(self.location(span), message)
    }

    /// An error at a location of this file with the offending line attached.
    pub fn error_at(&self, location: Location, message: impl Into<String>) -> SqlError {
        let mut e = SqlError::new(location.clone(), message);
        e.source_line = self
            .text
            .lines()
            .nth(location.line.saturating_sub(1) as usize)
            .map(|l| l.to_string());
        e
    }
}

/// Reads a `.sql` file, or every `.sql` file of a folder in name order, and substitutes
/// environment variables.
pub fn load_pipeline_files(path: &Path) -> Result<Vec<PipelineFile>, SqlErrors> {
    load_pipeline_files_with_env(path, &|name| std::env::var(name).ok())
}

/// Like [`load_pipeline_files`], with variables looked up by `env` (tests, embedding).
pub fn load_pipeline_files_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<PipelineFile>, SqlErrors> {
    let io_err = |p: &Path, e: std::io::Error| {
        SqlError::new(
            Location {
                file: p.to_path_buf(),
                line: 1,
                column: 1,
            },
            format!("cannot read pipeline: {e}"),
        )
        .with_hint("pass a .sql file or a folder containing .sql files")
    };
    let mut paths = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| io_err(path, e))? {
            let p = entry.map_err(|e| io_err(path, e))?.path();
            if p.extension().is_some_and(|e| e == "sql") {
                paths.push(p);
            }
        }
        paths.sort();
        if paths.is_empty() {
            return Err(SqlError::new(
                Location {
                    file: path.to_path_buf(),
                    line: 1,
                    column: 1,
                },
                "folder has no .sql files",
            )
            .with_hint("put the pipeline's CREATE SOURCE / CREATE TABLE statements in .sql files")
            .into());
        }
    } else {
        paths.push(path.to_path_buf());
    }
    let mut files = Vec::new();
    for p in paths {
        let raw = std::fs::read_to_string(&p).map_err(|e| io_err(&p, e))?;
        let text = substitute(&p, &raw, env)?;
        files.push(PipelineFile { path: p, text });
    }
    Ok(files)
}
