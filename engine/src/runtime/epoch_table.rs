//! A table whose contents are one epoch's rows: a source's decoded records or an upstream
//! node's output. Plans are built once against it; each epoch swaps the rows and re-executes.

use std::sync::{Arc, RwLock};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

/// Rows per slice handed to one partition.
const SLICE_ROWS: usize = 8192;

/// The current epoch's rows of one stream, split across partitions for parallel execution.
#[derive(Debug)]
pub struct EpochTable {
    schema: SchemaRef,
    partitions: usize,
    rows: RwLock<Vec<RecordBatch>>,
}

impl EpochTable {
    /// An empty stream with this schema, scanned with `partitions` partitions.
    pub fn new(schema: SchemaRef, partitions: usize) -> Arc<Self> {
        Arc::new(EpochTable {
            schema,
            partitions: partitions.max(1),
            rows: RwLock::new(Vec::new()),
        })
    }

    /// Replaces the rows with this epoch's.
    pub fn set(&self, batches: Vec<RecordBatch>) {
        if let Ok(mut rows) = self.rows.write() {
            *rows = batches;
        }
    }

    /// The stream's schema.
    pub fn schema_ref(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// This epoch's rows.
    pub fn rows(&self) -> Vec<RecordBatch> {
        self.rows.read().map(|r| r.clone()).unwrap_or_default()
    }

    fn partitioned(&self) -> Vec<Vec<RecordBatch>> {
        let mut parts = vec![Vec::new(); self.partitions];
        let mut next = 0;
        for batch in self.rows() {
            let mut offset = 0;
            while offset < batch.num_rows() {
                let len = SLICE_ROWS.min(batch.num_rows() - offset);
                parts[next % self.partitions].push(batch.slice(offset, len));
                next += 1;
                offset += len;
            }
        }
        parts
    }
}

#[async_trait::async_trait]
impl TableProvider for EpochTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let exec = MemorySourceConfig::try_new_exec(
            &self.partitioned(),
            self.schema.clone(),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}
