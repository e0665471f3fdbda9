//! The `delta` reference connector: a Delta table read whole as a reference
//! (`CREATE REFERENCE TABLE users WITH (connector = 'delta', path = '/lake/dim/users')`), a
//! table of the same lake included. Its version is the table's Delta version; a replayed
//! epoch can read the version it joined again (Delta time travel), besides the copy the
//! checkpoint keeps.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::prelude::SessionContext;
use deltalake::{DeltaTable, DeltaTableBuilder};
use weir_engine::error::{EngineError, Result};
use weir_engine::options::Options;
use weir_engine::reference::{
    conform, reference_error, ReferenceArgs, ReferenceConnector, ReferenceTable,
};

/// The `delta` reference connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeltaReferenceConnector;

/// A Delta table as a reference.
#[derive(Debug)]
struct DeltaReference {
    table: String,
    location: PathBuf,
    url: url::Url,
    schema: SchemaRef,
}

#[async_trait::async_trait]
impl ReferenceConnector for DeltaReferenceConnector {
    async fn open(
        &self,
        args: ReferenceArgs<'_>,
        options: &mut Options,
    ) -> Result<Arc<dyn ReferenceTable>> {
        let location = args.resolve(&options.require_str(
            "path",
            "write path = '/lake/dim/users' (the folder holding _delta_log; a relative path is \
             relative to the pipeline file)",
        )?);
        let described = format!("Delta table at {}", location.display());
        if !location.join("_delta_log").is_dir() {
            return Err(reference_error(
                args.table,
                &described,
                "no Delta table here (no _delta_log folder): write the path of an existing \
                 Delta table",
            ));
        }
        let url = deltalake::ensure_table_uri(location.to_string_lossy())
            .map_err(|e| reference_error(args.table, &described, e.to_string()))?;
        let mut reference = DeltaReference {
            table: args.table.to_string(),
            location,
            url,
            schema: SchemaRef::new(arrow::datatypes::Schema::empty()),
        };
        reference.schema = match args.declared {
            Some(declared) => declared,
            None => {
                let table = reference.at(None).await?;
                let provider = table
                    .table_provider()
                    .await
                    .map_err(|e| reference.error(e.to_string()))?;
                provider.schema()
            }
        };
        Ok(Arc::new(reference))
    }
}

impl DeltaReference {
    fn error(&self, message: impl Into<String>) -> EngineError {
        reference_error(&self.table, &self.describe(), message)
    }

    /// The table at `version` (the latest when `None`).
    async fn at(&self, version: Option<u64>) -> Result<DeltaTable> {
        let mut builder =
            DeltaTableBuilder::from_url(self.url.clone()).map_err(|e| self.error(e.to_string()))?;
        if let Some(v) = version {
            builder = builder.with_version(v);
        }
        builder
            .load()
            .await
            .map_err(|e| self.error(format!("cannot read the table: {e}")))
    }
}

#[async_trait::async_trait]
impl ReferenceTable for DeltaReference {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn current_version(&self) -> Result<String> {
        let table = self.at(None).await?;
        let version = table
            .version()
            .ok_or_else(|| self.error("the table has no version yet"))?;
        Ok(format!("v{version}"))
    }

    async fn load(&self, version: &str) -> Result<Option<Vec<RecordBatch>>> {
        let number = version
            .strip_prefix('v')
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| self.error(format!("'{version}' is not a Delta version")))?;
        let table = self.at(Some(number)).await?;
        let provider = table
            .table_provider()
            .await
            .map_err(|e| self.error(e.to_string()))?;
        let ctx = SessionContext::new();
        let rows = ctx
            .read_table(provider)
            .map_err(|e| self.error(e.to_string()))?
            .collect()
            .await
            .map_err(|e| self.error(format!("cannot read the table: {e}")))?;
        Ok(Some(conform(
            &self.table,
            &self.describe(),
            &self.schema,
            rows,
        )?))
    }

    fn describe(&self) -> String {
        format!("Delta table at {}", self.location.display())
    }
}
