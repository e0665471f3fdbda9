//! The DataFusion session of a pipeline and how streams are registered in it.

use std::sync::Arc;

use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::TableReference;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::epoch_table::EpochTable;
use crate::error::Result;
use crate::operators::registry::WeirQueryPlanner;
use crate::source::common_metadata_fields;

/// A DataFusion session configured for Weir: spans for error positions, plain UTF-8 strings
/// (Delta's `string`), and one partition per core.
pub fn session_context(threads: usize) -> SessionContext {
    let mut config = SessionConfig::new().with_target_partitions(threads.max(1));
    let options = config.options_mut();
    options.sql_parser.collect_spans = true;
    options.sql_parser.map_string_types_to_utf8view = false;
    options.execution.parquet.schema_force_view_types = false;
    // Stateful steps (`operators::registry`) plan as their input in a batch plan.
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_query_planner(Arc::new(WeirQueryPlanner))
        .build();
    let ctx = SessionContext::new_with_state(state);
    // This rule turns a lone `count(DISTINCT x)` into GROUP BY (keys, x) under an outer count.
    // The window operator keeps only the outer aggregate as state, so the inner one would run
    // per epoch and a value seen in two epochs would be counted twice. Without the rule the
    // aggregate keeps its distinct set as state and merges it across epochs.
    ctx.remove_optimizer_rule(SINGLE_DISTINCT_TO_GROUP_BY);
    // `count(DISTINCT)` over strings with one accumulator for all groups, not one per group.
    ctx.register_udaf(crate::count_distinct::compact_count());
    ctx
}

/// DataFusion's name for the optimizer rule that rewrites a single distinct aggregate.
const SINGLE_DISTINCT_TO_GROUP_BY: &str = "single_distinct_aggregation_to_group_by";

/// Registers a stream (source, view or table) under its possibly dotted name, creating the
/// schema for `bronze.events` on first use, and returns the table that holds its epoch rows.
pub fn register_stream(
    ctx: &SessionContext,
    name: &str,
    schema: SchemaRef,
) -> Result<Arc<EpochTable>> {
    let table = EpochTable::new(schema, ctx.copied_config().target_partitions());
    let reference = TableReference::from(name);
    if let Some(schema_name) = reference.schema() {
        let catalog_name = reference.catalog().unwrap_or("datafusion");
        if let Some(catalog) = ctx.catalog(catalog_name) {
            if catalog.schema(schema_name).is_none() {
                catalog.register_schema(schema_name, Arc::new(MemorySchemaProvider::new()))?;
            }
        }
    }
    ctx.register_table(reference, table.clone())?;
    Ok(table)
}

/// The schema a source exposes to SQL: declared columns, then the connector's metadata columns,
/// then `_source` and `_epoch`.
pub fn source_schema(declared: &Schema, connector_metadata: &[FieldRef]) -> SchemaRef {
    let mut fields: Vec<FieldRef> = declared.fields().iter().cloned().collect();
    fields.extend(connector_metadata.iter().cloned());
    fields.extend(common_metadata_fields());
    Arc::new(Schema::new(fields))
}
