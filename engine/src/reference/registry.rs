//! The reference-table connectors, by name: `CREATE REFERENCE TABLE ... WITH (connector =
//! 'parquet', ...)` is opened here and nowhere else. Adding a connector is a type implementing
//! [`ReferenceConnector`] and one line in [`ReferenceRegistry::builtin`] (or, for one outside
//! the engine such as Delta, one `register` call where the CLI assembles the connectors).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;

use super::files::{FileFormat, FilesReference};
use super::ReferenceTable;
use crate::error::{EngineError, Result};
use crate::options::Options;

/// What a reference table is opened with besides its options.
#[derive(Debug, Clone)]
pub struct ReferenceArgs<'a> {
    /// The table as named in `CREATE REFERENCE TABLE`.
    pub table: &'a str,
    /// Its declared columns, if the statement lists them.
    pub declared: Option<SchemaRef>,
    /// The folder of the pipeline file that declares it: a relative `path` is relative to it.
    pub base_dir: Option<&'a Path>,
}

impl ReferenceArgs<'_> {
    /// `path` as written, resolved against the declaring file's folder when relative.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        match self.base_dir {
            Some(base) if p.is_relative() => base.join(p),
            _ => p.to_path_buf(),
        }
    }
}

/// Opens reference tables of one connector.
#[async_trait::async_trait]
pub trait ReferenceConnector: Send + Sync + Debug {
    /// Opens the table from its WITH options (taking the ones it knows); a missing file or
    /// table is an error naming it.
    async fn open(
        &self,
        args: ReferenceArgs<'_>,
        options: &mut Options,
    ) -> Result<Arc<dyn ReferenceTable>>;
}

/// The files connectors: one per format.
#[derive(Debug, Clone, Copy)]
struct FilesConnector(FileFormat);

#[async_trait::async_trait]
impl ReferenceConnector for FilesConnector {
    async fn open(
        &self,
        args: ReferenceArgs<'_>,
        options: &mut Options,
    ) -> Result<Arc<dyn ReferenceTable>> {
        let table = FilesReference::open(&args, self.0, options).await?;
        Ok(Arc::new(table))
    }
}

/// Reference-table connectors by name.
#[derive(Debug, Clone)]
pub struct ReferenceRegistry {
    connectors: BTreeMap<&'static str, Arc<dyn ReferenceConnector>>,
}

impl ReferenceRegistry {
    /// The connectors of the engine: `parquet`, `csv`, `json`.
    pub fn builtin() -> Self {
        let mut registry = ReferenceRegistry {
            connectors: BTreeMap::new(),
        };
        for format in [FileFormat::Parquet, FileFormat::Csv, FileFormat::Json] {
            registry.register(format.name(), Arc::new(FilesConnector(format)));
        }
        registry
    }

    /// Adds (or replaces) connector `name`.
    pub fn register(&mut self, name: &'static str, connector: Arc<dyn ReferenceConnector>) {
        self.connectors.insert(name, connector);
    }

    /// The connectors' names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.connectors.keys().copied().collect()
    }

    /// Opens a reference table of `connector` from its WITH options (after `connector` itself
    /// was taken). Unknown connectors and options are errors naming the accepted values.
    pub async fn open(
        &self,
        connector: &str,
        args: ReferenceArgs<'_>,
        mut options: Options,
    ) -> Result<Arc<dyn ReferenceTable>> {
        let Some(found) = self.connectors.get(connector) else {
            return Err(EngineError::option_hint(
                "connector",
                format!("unknown reference connector '{connector}'"),
                format!("use one of: {}", self.names().join(", ")),
            ));
        };
        let table = found.open(args, &mut options).await?;
        options.finish(&format!("reference connector '{connector}'"))?;
        Ok(table)
    }
}
