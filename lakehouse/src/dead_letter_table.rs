//! A source's dead-letter table (`<lake>/_dead_letter/<source>`): a Delta table with the
//! dead-letter columns and the source's metadata columns. A table written by a Weir from before
//! the metadata columns keeps its columns: its rows are written without them (with a warning)
//! rather than the pipeline refusing to start over an old lake.

use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use weir_engine::dead_letter::base_dead_letter_schema;
use weir_engine::error::BoxError;
use weir_engine::sink::{Sink, SinkReport};

use crate::delta_sink::DeltaSink;
use crate::error::LakehouseError;

/// Opens the dead-letter table of source `source` of pipeline `pipeline` at `location`, for
/// dead letters of `schema` (see [`dead_letter_schema`]).
pub async fn open_dead_letter_table(
    location: &Path,
    pipeline: &str,
    source: &str,
    schema: &SchemaRef,
) -> Result<Box<dyn Sink>, LakehouseError> {
    let app_id = format!("weir:{pipeline}:_dead_letter.{source}");
    match DeltaSink::open(location, app_id.clone(), Vec::new(), schema).await {
        Ok(sink) => Ok(Box::new(sink)),
        Err(LakehouseError::SchemaMismatch { .. })
            if schema.fields().len() > base_dead_letter_schema().fields().len() =>
        {
            let base = base_dead_letter_schema();
            let sink = DeltaSink::open(location, app_id, Vec::new(), &base).await?;
            tracing::warn!(
                source,
                table = %location.display(),
                "this dead-letter table was created by an older Weir, without the source's \
                 metadata columns ({}): its new rows are written without them. Move the folder \
                 away to get a table with them",
                metadata_names(schema)
            );
            Ok(Box::new(WithoutMetadata { sink, schema: base }))
        }
        Err(e) => Err(e),
    }
}

/// The names of the metadata columns of a dead-letter `schema`, comma separated.
fn metadata_names(schema: &SchemaRef) -> String {
    let base = base_dead_letter_schema().fields().len();
    schema.fields()[base..]
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A dead-letter table of the base columns only: each batch loses its metadata columns.
struct WithoutMetadata {
    sink: DeltaSink,
    schema: SchemaRef,
}

#[async_trait::async_trait]
impl Sink for WithoutMetadata {
    fn describe(&self) -> String {
        self.sink.describe()
    }

    fn last_committed_epoch(&self) -> Option<u64> {
        self.sink.last_committed_epoch()
    }

    async fn write_epoch(
        &mut self,
        epoch: u64,
        batches: Vec<RecordBatch>,
    ) -> Result<SinkReport, BoxError> {
        let base = self.schema.fields().len();
        let batches = batches
            .into_iter()
            .map(|b| b.project(&(0..base).collect::<Vec<_>>()))
            .collect::<Result<Vec<_>, _>>()?;
        self.sink.write_epoch(epoch, batches).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field};

    use super::*;
    use weir_engine::dead_letter::dead_letter_schema;

    #[tokio::test]
    async fn a_table_from_before_the_metadata_columns_keeps_its_columns() {
        let dir = tempfile::tempdir().unwrap();
        let old = open_dead_letter_table(dir.path(), "p", "events", &base_dead_letter_schema())
            .await
            .unwrap();
        drop(old);
        let with_metadata =
            dead_letter_schema(&[Arc::new(Field::new("_file", DataType::Utf8, false))]);
        let mut sink = open_dead_letter_table(dir.path(), "p", "events", &with_metadata)
            .await
            .unwrap();
        let batch = weir_engine::dead_letter::conform_to(
            RecordBatch::new_empty(base_dead_letter_schema()),
            &with_metadata,
        )
        .unwrap();
        let report = sink.write_epoch(0, vec![batch]).await.unwrap();
        assert!(!report.already_committed);
        let table = deltalake::open_table(
            deltalake::ensure_table_uri(dir.path().to_string_lossy()).unwrap(),
        )
        .await
        .unwrap();
        let columns: Vec<String> = table
            .snapshot()
            .unwrap()
            .snapshot()
            .arrow_schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert!(!columns.contains(&"_file".to_string()), "{columns:?}");
    }
}
