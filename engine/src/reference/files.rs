//! Reference tables in files: `connector = 'parquet' | 'csv' | 'json'` with `path` a file or
//! a folder of such files (newline-delimited JSON; CSV with a header row unless `header =
//! false`); a relative path is relative to the pipeline file that declares the table. The version is a fingerprint of every file's name, size and modification time, so
//! a changed, added or removed file is a new version.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::file_format::options::JsonReadOptions;
use datafusion::prelude::SessionContext;
use datafusion::prelude::{CsvReadOptions, DataFrame, ParquetReadOptions};

use super::{conform, reference_error, ReferenceArgs, ReferenceTable};
use crate::error::{EngineError, Result};
use crate::options::Options;

/// The file formats a files reference reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Parquet files (`.parquet`).
    Parquet,
    /// CSV files (`.csv`).
    Csv,
    /// Newline-delimited JSON (`.json`).
    Json,
}

impl FileFormat {
    /// The connector name, also the files' extension.
    pub fn name(self) -> &'static str {
        match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Csv => "csv",
            FileFormat::Json => "json",
        }
    }
}

/// A reference table read from files.
#[derive(Debug)]
pub struct FilesReference {
    table: String,
    format: FileFormat,
    path: PathBuf,
    csv_header: bool,
    csv_delimiter: u8,
    /// The declared columns, if any (then the files' columns are cast to them).
    declared: Option<SchemaRef>,
    schema: SchemaRef,
}

impl FilesReference {
    /// Opens the reference from its WITH options; without declared columns the files'
    /// own schema is used. A missing path is an error naming it.
    pub async fn open(
        args: &ReferenceArgs<'_>,
        format: FileFormat,
        options: &mut Options,
    ) -> Result<Self> {
        let (table, declared) = (args.table, args.declared.clone());
        let path = args.resolve(&options.require_str(
            "path",
            "write path = 'users.parquet' (a file or a folder of files; a relative path is \
             relative to the pipeline file)",
        )?);
        let csv_header = options
            .take_choice("header", &["true", "false"])?
            .is_none_or(|v| v == "true");
        let csv_delimiter = match options.take_str("delimiter") {
            None => b',',
            Some(d) if d.len() == 1 => d.as_bytes()[0],
            Some(d) => {
                return Err(EngineError::option_hint(
                    "delimiter",
                    format!("'{d}' is not one character"),
                    "write e.g. delimiter = ';'",
                ))
            }
        };
        let mut reference = FilesReference {
            table: table.to_string(),
            format,
            path,
            csv_header,
            csv_delimiter,
            schema: declared
                .clone()
                .unwrap_or_else(|| SchemaRef::new(Schema::empty())),
            declared,
        };
        if !reference.path.exists() {
            return Err(reference.error(
                "no such file or folder: write an existing path, or create the file first",
            ));
        }
        let found = reference.file_schema(&SessionContext::new()).await?;
        match &reference.declared {
            None => reference.schema = found,
            Some(declared) => {
                for field in declared.fields() {
                    if !found
                        .fields()
                        .iter()
                        .any(|f| f.name().eq_ignore_ascii_case(field.name()))
                    {
                        let names: Vec<&str> =
                            found.fields().iter().map(|f| f.name().as_str()).collect();
                        return Err(reference.error(format!(
                            "has no column `{}` (its columns: {})",
                            field.name(),
                            names.join(", ")
                        )));
                    }
                }
            }
        }
        Ok(reference)
    }

    fn location(&self) -> String {
        format!("{} files at {}", self.format.name(), self.path.display())
    }

    fn error(&self, message: impl Into<String>) -> EngineError {
        reference_error(&self.table, &self.location(), message)
    }

    /// The path as DataFusion lists it (a folder ends with `/`).
    fn listing_path(&self) -> String {
        let mut path = self.path.display().to_string();
        if self.path.is_dir() && !path.ends_with('/') {
            path.push('/');
        }
        path
    }

    /// The files' own columns (CSV: named by the header, types inferred).
    async fn file_schema(&self, ctx: &SessionContext) -> Result<SchemaRef> {
        let frame = self.frame(ctx, None).await?;
        Ok(SchemaRef::new(frame.schema().as_arrow().clone()))
    }

    /// A DataFrame over every file of the reference: with `schema`, CSV columns are read
    /// under it (by position) and JSON fields by name; otherwise inferred.
    async fn frame(&self, ctx: &SessionContext, schema: Option<&Schema>) -> Result<DataFrame> {
        let path = self.listing_path();
        let extension = format!(".{}", self.format.name());
        let read = match self.format {
            FileFormat::Parquet => {
                ctx.read_parquet(
                    path,
                    ParquetReadOptions::default().file_extension(&extension),
                )
                .await
            }
            FileFormat::Csv => {
                let mut options = CsvReadOptions::new()
                    .has_header(self.csv_header)
                    .delimiter(self.csv_delimiter)
                    .file_extension(&extension);
                if let Some(schema) = schema {
                    options = options.schema(schema);
                }
                ctx.read_csv(path, options).await
            }
            FileFormat::Json => {
                let mut options = JsonReadOptions::default().file_extension(&extension);
                if let Some(schema) = schema {
                    options = options.schema(schema);
                }
                ctx.read_json(path, options).await
            }
        };
        read.map_err(|e| self.error(format!("cannot read: {}", e.strip_backtrace())))
    }

    /// Every row of the files, before they are cast to the declared columns. A CSV with
    /// declared columns is read as text under its header's names, so nothing is guessed (a
    /// zip code `01234` stays itself) before the declared types apply by name.
    async fn read_rows(&self) -> Result<Vec<RecordBatch>> {
        let ctx = SessionContext::new();
        let schema = match (&self.declared, self.format) {
            (Some(_), FileFormat::Csv) => {
                let found = self.file_schema(&ctx).await?;
                Some(Schema::new(
                    found
                        .fields()
                        .iter()
                        .map(|f| Field::new(f.name(), DataType::Utf8, true))
                        .collect::<Vec<_>>(),
                ))
            }
            (Some(declared), FileFormat::Json) => Some(declared.as_ref().clone()),
            _ => None,
        };
        self.frame(&ctx, schema.as_ref())
            .await?
            .collect()
            .await
            .map_err(|e| self.error(format!("cannot read: {}", e.strip_backtrace())))
    }

    /// The fingerprint of the files as they are now.
    fn fingerprint(path: &Path, extension: &str) -> std::io::Result<String> {
        let mut files = Vec::new();
        if path.is_dir() {
            let mut stack = vec![path.to_path_buf()];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir)? {
                    let p = entry?.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|e| e == extension) {
                        files.push(p);
                    }
                }
            }
        } else {
            files.push(path.to_path_buf());
        }
        files.sort();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for f in &files {
            let meta = std::fs::metadata(f)?;
            let modified = meta
                .modified()?
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            (f, meta.len(), modified).hash(&mut hasher);
        }
        Ok(format!("{}-files-{:016x}", files.len(), hasher.finish()))
    }

    async fn current(&self) -> Result<String> {
        let (path, extension) = (self.path.clone(), self.format.name());
        tokio::task::spawn_blocking(move || Self::fingerprint(&path, extension))
            .await
            .map_err(|e| self.error(format!("listing the files failed: {e}")))?
            .map_err(|e| self.error(format!("cannot list the files: {e}")))
    }
}

#[async_trait::async_trait]
impl ReferenceTable for FilesReference {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn current_version(&self) -> Result<String> {
        self.current().await
    }

    async fn load(&self, version: &str) -> Result<Option<Vec<RecordBatch>>> {
        if self.current().await? != version {
            return Ok(None);
        }
        let batches = self.read_rows().await?;
        // Changed while being read: the rows may mix two versions.
        if self.current().await? != version {
            return Ok(None);
        }
        let batches = conform(&self.table, &self.location(), &self.schema, batches)?;
        Ok(Some(batches))
    }

    fn describe(&self) -> String {
        self.location()
    }
}
