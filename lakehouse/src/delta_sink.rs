//! A Delta Lake table written once per epoch, exactly once.
//!
//! Each append carries a Delta `txn` action (app id = pipeline + table, version = epoch). Before
//! writing, the sink compares the epoch with the table's last committed txn version for its app
//! id and skips the write when the epoch is already in the table, so a replayed epoch (crash
//! after the Delta commit, before Weir's commit log) adds nothing. The table is created empty when
//! the sink opens, with its columns, partition columns and a log checkpoint every 10 commits, so
//! every table of a pipeline can be read (0 rows) before it receives its first rows.

use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use tracing::{debug, instrument};
use url::Url;
use weir_engine::error::BoxError;
use weir_engine::sink::{Sink, SinkReport};

use crate::error::LakehouseError;
use crate::normalize::{delta_schema, to_delta_batch};
use crate::parquet_layout::writer_properties;

/// Commits between Delta log checkpoints.
pub const CHECKPOINT_INTERVAL: &str = "10";

/// A Delta table that receives one pipeline node's rows.
#[derive(Debug)]
pub struct DeltaSink {
    url: Url,
    app_id: String,
    partition_by: Vec<String>,
    table: DeltaTable,
    /// The last epoch this app id committed to the table.
    last_epoch: Option<i64>,
    /// Update output mode: rows are MERGEd on these columns (replacing the row with the same
    /// values there) instead of appended.
    merge_keys: Vec<String>,
}

impl DeltaSink {
    /// Opens the table at `location` (a local path; created on first write), reading the last
    /// epoch committed by `app_id`. An existing table must have the columns of `schema` (the
    /// query's output) and the same partition columns, so a changed pipeline fails before it
    /// reads anything rather than at its first commit.
    pub async fn open(
        location: &Path,
        app_id: impl Into<String>,
        partition_by: Vec<String>,
        schema: &Schema,
    ) -> Result<Self, LakehouseError> {
        let app_id = app_id.into();
        let display = location.display().to_string();
        let delta_err = |source| LakehouseError::Delta {
            table: display.clone(),
            epoch: None,
            source: Box::new(source),
        };
        let url = deltalake::ensure_table_uri(location.to_string_lossy()).map_err(delta_err)?;
        // Only load a table that exists: loading an empty folder makes the kernel log errors.
        // A new table is created at once, empty, so readers find it (with its columns) before
        // the first epoch that has rows for it.
        let table = if has_commits(&location.join("_delta_log")) {
            DeltaTable::try_from_url(url.clone())
                .await
                .map_err(delta_err)?
        } else {
            let table = deltalake::DeltaTableBuilder::from_url(url.clone())
                .map_err(delta_err)?
                .build()
                .map_err(delta_err)?;
            create_empty(table, schema, &partition_by)
                .await
                .map_err(delta_err)?
        };
        if let Ok(state) = table.snapshot() {
            check_compatible(
                &url,
                schema,
                &partition_by,
                &state.snapshot().arrow_schema(),
                state.metadata().partition_columns(),
            )?;
        }
        let last_epoch = match table.snapshot() {
            Ok(state) => state
                .transaction_version(table.log_store().as_ref(), &app_id)
                .await
                .map_err(delta_err)?,
            Err(_) => None,
        };
        Ok(DeltaSink {
            url,
            app_id,
            partition_by,
            table,
            last_epoch,
            merge_keys: Vec::new(),
        })
    }

    /// Makes every epoch a MERGE on `keys` (update output mode): a row replaces the table's row
    /// with the same key values, or is inserted.
    pub fn with_merge_keys(mut self, keys: Vec<String>) -> Self {
        self.merge_keys = keys;
        self
    }

    /// The table's URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The last epoch committed to this table by this pipeline, if any.
    pub fn last_epoch(&self) -> Option<i64> {
        self.last_epoch
    }

    #[instrument(skip(self, batches, replaced), fields(table = %self.url, epoch))]
    async fn append(
        &mut self,
        epoch: u64,
        batches: Vec<RecordBatch>,
        replaced: Vec<RecordBatch>,
    ) -> Result<SinkReport, LakehouseError> {
        let table_name = self.url.to_string();
        // Whoever else wrote to the table since it was opened (another process on the same
        // lake): an epoch the table already holds is never added twice.
        if self.last_epoch.is_none_or(|e| e < epoch as i64) {
            self.refresh_last_epoch(epoch).await?;
        }
        if self.last_epoch.is_some_and(|e| e >= epoch as i64) {
            debug!("epoch already committed; skipping");
            return Ok(SinkReport {
                rows_written: 0,
                already_committed: true,
                version: self.table.version(),
                rows_inserted: None,
            });
        }
        let convert = |batches: &[RecordBatch]| {
            batches
                .iter()
                .filter(|b| b.num_rows() > 0)
                .map(|b| {
                    to_delta_batch(b).map_err(|(column, source)| LakehouseError::Convert {
                        table: table_name.clone(),
                        column,
                        source,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let converted = convert(&batches)?;
        // Rows to delete only exist in a table that was written before.
        let replaced = if self.table.version().is_some() {
            convert(&replaced)?
        } else {
            Vec::new()
        };
        let rows: u64 = converted.iter().map(|b| b.num_rows() as u64).sum();
        if rows == 0 && replaced.is_empty() {
            return Ok(SinkReport {
                rows_written: 0,
                already_committed: false,
                version: self.table.version(),
                rows_inserted: (!self.merge_keys.is_empty()).then_some(0),
            });
        }
        let commit = CommitProperties::default()
            .with_application_transaction(Transaction::new(&self.app_id, epoch as i64));
        if !self.merge_keys.is_empty() {
            return self.merge(epoch, converted, replaced, rows, commit).await;
        }
        if !replaced.is_empty() {
            return Err(LakehouseError::Delta {
                table: table_name,
                epoch: Some(epoch),
                source: Box::new(deltalake::DeltaTableError::Generic(
                    "rows to delete, but the table has no merge keys (not update mode)".into(),
                )),
            });
        }
        let properties = writer_properties(&converted);
        let mut write = self
            .table
            .clone()
            .write(converted)
            .with_writer_properties(properties)
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(commit);
        if !self.partition_by.is_empty() {
            write = write.with_partition_columns(self.partition_by.clone());
        }
        if self.table.version().is_none() {
            write =
                write.with_configuration([("delta.checkpointInterval", Some(CHECKPOINT_INTERVAL))]);
        }
        let table = write.await.map_err(|source| LakehouseError::Delta {
            table: table_name,
            epoch: Some(epoch),
            source: Box::new(source),
        })?;
        Ok(self.committed(table, epoch, rows))
    }
}

impl DeltaSink {
    /// Reloads the table's log and the last epoch this app id committed to it.
    async fn refresh_last_epoch(&mut self, epoch: u64) -> Result<(), LakehouseError> {
        let delta_err = |source| LakehouseError::Delta {
            table: self.url.to_string(),
            epoch: Some(epoch),
            source: Box::new(source),
        };
        self.table.update_state().await.map_err(delta_err)?;
        if let Ok(state) = self.table.snapshot() {
            self.last_epoch = state
                .transaction_version(self.table.log_store().as_ref(), &self.app_id)
                .await
                .map_err(delta_err)?;
        }
        Ok(())
    }

    /// Records a successful commit of `epoch` (the table as it now is) and reports it.
    fn committed(&mut self, table: DeltaTable, epoch: u64, rows: u64) -> SinkReport {
        self.table = table;
        self.last_epoch = Some(epoch as i64);
        SinkReport {
            rows_written: rows,
            already_committed: false,
            version: self.table.version(),
            rows_inserted: None,
        }
    }

    /// MERGEs `batches` on the merge keys, and deletes the rows with the keys of `replaced`,
    /// in one commit carrying the epoch's txn.
    async fn merge(
        &mut self,
        epoch: u64,
        batches: Vec<RecordBatch>,
        replaced: Vec<RecordBatch>,
        rows: u64,
        commit: CommitProperties,
    ) -> Result<SinkReport, LakehouseError> {
        let table_name = self.url.to_string();
        let delta_err = |source| LakehouseError::Delta {
            table: table_name.clone(),
            epoch: Some(epoch),
            source: Box::new(source),
        };
        let arrow_err =
            |e: arrow::error::ArrowError| delta_err(deltalake::DeltaTableError::from(e));
        let schema = batches.first().or(replaced.first()).map(|b| b.schema());
        let Some(schema) = schema else {
            let mut report = self.committed(self.table.clone(), epoch, 0);
            report.rows_inserted = Some(0);
            return Ok(report);
        };
        // One source: the rows to upsert and the rows to delete, told apart by an op column.
        let mut source_batches = Vec::with_capacity(batches.len() + replaced.len());
        for (op, list) in [(OP_UPSERT, batches), (OP_DELETE, replaced)] {
            for b in list {
                source_batches.push(with_op(&b, op).map_err(arrow_err)?);
            }
        }
        let ctx = datafusion::prelude::SessionContext::new();
        let source = ctx
            .read_batches(source_batches)
            .map_err(|e| delta_err(deltalake::DeltaTableError::from(e)))?;
        let quote = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
        let predicate = self
            .merge_keys
            .iter()
            .map(|k| format!("(t.{0} IS NOT DISTINCT FROM s.{0})", quote(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let is = |op: &str| format!("s.{} = '{op}'", quote(OP_COLUMN));
        let (table, metrics) = self
            .table
            .clone()
            .merge(source, predicate)
            .with_source_alias("s")
            .with_target_alias("t")
            .with_commit_properties(commit)
            .when_matched_delete(|delete| delete.predicate(is(OP_DELETE)))
            .map_err(delta_err)?
            .when_matched_update(|update| {
                columns
                    .iter()
                    .fold(update.predicate(is(OP_UPSERT)), |u, c| {
                        u.update(c.as_str(), format!("s.{}", quote(c)))
                    })
            })
            .map_err(delta_err)?
            .when_not_matched_insert(|insert| {
                columns
                    .iter()
                    .fold(insert.predicate(is(OP_UPSERT)), |i, c| {
                        i.set(c.as_str(), format!("s.{}", quote(c)))
                    })
            })
            .map_err(delta_err)?
            .await
            .map_err(delta_err)?;
        let mut report = self.committed(table, epoch, rows);
        report.rows_inserted = Some(metrics.num_target_rows_inserted as u64);
        Ok(report)
    }
}

/// Whether a `_delta_log` folder holds a commit or a checkpoint. A process killed while
/// creating a table can leave the folder without its first commit: that is no table yet, and
/// the next start creates it.
fn has_commits(log: &Path) -> bool {
    std::fs::read_dir(log).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".json") || name.ends_with(".checkpoint.parquet")
        })
    })
}

/// Creates `table` with the Delta columns for `schema`, its partition columns and Weir's log
/// checkpoint interval, holding no rows yet.
async fn create_empty(
    table: DeltaTable,
    schema: &Schema,
    partition_by: &[String],
) -> Result<DeltaTable, deltalake::DeltaTableError> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
    use deltalake::kernel::StructType;
    let columns: StructType = delta_schema(schema).as_ref().try_into_kernel()?;
    table
        .create()
        .with_columns(columns.fields().cloned())
        .with_partition_columns(partition_by.to_vec())
        .with_configuration([("delta.checkpointInterval", Some(CHECKPOINT_INTERVAL))])
        .await
}

#[async_trait::async_trait]
impl Sink for DeltaSink {
    fn last_committed_epoch(&self) -> Option<u64> {
        self.last_epoch.and_then(|e| u64::try_from(e).ok())
    }

    fn describe(&self) -> String {
        self.url.to_string()
    }

    async fn write_epoch(
        &mut self,
        epoch: u64,
        batches: Vec<RecordBatch>,
    ) -> Result<SinkReport, BoxError> {
        Ok(self.append(epoch, batches, Vec::new()).await?)
    }

    async fn write_epoch_replacing(
        &mut self,
        epoch: u64,
        batches: Vec<RecordBatch>,
        replaced: Vec<RecordBatch>,
    ) -> Result<SinkReport, BoxError> {
        Ok(self.append(epoch, batches, replaced).await?)
    }
}

/// The MERGE source column that tells rows to upsert from rows to delete.
const OP_COLUMN: &str = "__weir_op";
const OP_UPSERT: &str = "upsert";
const OP_DELETE: &str = "delete";

/// `batch` with the op column appended.
fn with_op(batch: &RecordBatch, op: &str) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut fields: Vec<arrow::datatypes::FieldRef> = batch.schema().fields().to_vec();
    fields.push(std::sync::Arc::new(arrow::datatypes::Field::new(
        OP_COLUMN,
        DataType::Utf8,
        false,
    )));
    let mut columns = batch.columns().to_vec();
    columns.push(std::sync::Arc::new(arrow::array::StringArray::from(vec![
        op;
        batch.num_rows()
    ])));
    RecordBatch::try_new(
        std::sync::Arc::new(Schema::new_with_metadata(
            fields,
            batch.schema().metadata().clone(),
        )),
        columns,
    )
}

/// Fails when an existing table cannot take the query's rows: other columns, other types, or
/// other partition columns.
fn check_compatible(
    url: &Url,
    query: &Schema,
    partition_by: &[String],
    table: &Schema,
    table_partitions: &[String],
) -> Result<(), LakehouseError> {
    let expected = delta_schema(query);
    let describe = |s: &Schema, parts: &[String]| {
        let cols: Vec<String> = s
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect();
        let parts = if parts.is_empty() {
            String::new()
        } else {
            format!(" partitioned by ({})", parts.join(", "))
        };
        format!("columns ({}){parts}", cols.join(", "))
    };
    let same_columns = expected.fields().len() == table.fields().len()
        && expected.fields().iter().all(|f| {
            table
                .field_with_name(f.name())
                .is_ok_and(|t| same_type(f.data_type(), t.data_type()))
        });
    if same_columns && partition_by == table_partitions {
        return Ok(());
    }
    Err(LakehouseError::SchemaMismatch {
        table: url.to_string(),
        expected: describe(&expected, partition_by),
        found: describe(table, table_partitions),
    })
}

/// Type equality as Delta sees it: string and binary encodings are the same Delta type.
fn same_type(a: &DataType, b: &DataType) -> bool {
    let canonical = |t: &DataType| match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Dictionary(_, v) => v.as_ref().clone(),
        other => other.clone(),
    };
    match (canonical(a), canonical(b)) {
        // Parquet names a list's element `element` and a map's entries `key_value`; Arrow
        // writers say `item` and `entries`. The names are not part of the type.
        (DataType::List(x), DataType::List(y)) | (DataType::LargeList(x), DataType::List(y)) => {
            same_type(x.data_type(), y.data_type())
        }
        // A map's (key, value) entries: compared by position, their names vary by writer.
        (DataType::Map(x, _), DataType::Map(y, _)) => match (x.data_type(), y.data_type()) {
            (DataType::Struct(x), DataType::Struct(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y.iter())
                        .all(|(f, g)| same_type(f.data_type(), g.data_type()))
            }
            (x, y) => same_type(x, y),
        },
        (DataType::Struct(x), DataType::Struct(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|(f, g)| f.name() == g.name() && same_type(f.data_type(), g.data_type()))
        }
        (x, y) => x == y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::Field;
    use std::sync::Arc;

    fn rows(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    /// A `_delta_log` folder without its first commit (a process killed while creating the
    /// table) is no table yet: the next start creates it instead of failing.
    #[tokio::test]
    async fn a_log_folder_without_commits_is_created_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("_delta_log")).unwrap();
        let schema = rows(&[]).schema();
        let mut sink = DeltaSink::open(dir.path(), "weir:p:t", Vec::new(), &schema)
            .await
            .unwrap();
        let written = sink.write_epoch(1, vec![rows(&[1])]).await.unwrap();
        assert_eq!(written.rows_written, 1);
    }

    /// Two writers with the same app id (two processes on one lake): the second commit of an
    /// epoch is skipped as already committed, even though its sink was opened before the
    /// first commit, so no epoch is ever in the table twice.
    #[tokio::test]
    async fn an_epoch_another_writer_committed_is_not_added_again() {
        let dir = tempfile::tempdir().unwrap();
        let schema = rows(&[]).schema();
        let open = || DeltaSink::open(dir.path(), "weir:p:t", Vec::new(), &schema);
        let mut first = open().await.unwrap();
        let mut second = open().await.unwrap();
        let written = first.write_epoch(1, vec![rows(&[1, 2])]).await.unwrap();
        assert_eq!(written.rows_written, 2);
        let again = second.write_epoch(1, vec![rows(&[1, 2])]).await.unwrap();
        assert!(again.already_committed, "{again:?}");
        let next = second.write_epoch(2, vec![rows(&[3])]).await.unwrap();
        assert_eq!(next.rows_written, 1);
        let table = deltalake::open_table(first.url().clone()).await.unwrap();
        let files = table.snapshot().unwrap().log_data().num_files();
        assert_eq!(files, 2, "one file per epoch, none twice");
    }
}
