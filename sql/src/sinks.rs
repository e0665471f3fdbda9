//! Where a table's rows go: the sink of each `CREATE TABLE`, planned by its connector from
//! its WITH options (see `weir_engine::sink::SinkRegistry`), plus what holds for every
//! connector: update mode has its merge keys, and two tables never share a lake folder.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::logical_expr::LogicalPlan;
use weir_engine::options::Options;
use weir_engine::sink::{PlannedSink, SinkRegistry, SinkTarget};
use weir_engine::EngineError;

use crate::error::SqlError;
use crate::parser::{PipelineFile, StreamStatement};
use crate::planner::PlannedNode;
use crate::source_plan::option_error;
use crate::windows::WindowSpec;

/// Where a table's rows go, as its connector planned them.
#[derive(Debug, Clone)]
pub struct TableSink {
    /// The connector's name (`delta`, `kafka`).
    pub connector: &'static str,
    /// The checked options, ready to open the sink.
    pub planned: Arc<dyn PlannedSink>,
    /// `output_mode = 'update'`: the columns the sink MERGEs on (the window and group keys,
    /// as the query names them). `None` for append mode.
    pub update_keys: Option<Vec<String>>,
}

/// The output columns an update-mode table MERGEs on: the window and every group key of its
/// aggregate, as the query's output names them. Explains what is missing otherwise.
fn update_merge_keys(
    plan: &LogicalPlan,
    window: Option<&WindowSpec>,
) -> Result<Vec<String>, EngineError> {
    if window.is_none() {
        return Err(EngineError::option_hint(
            "output_mode",
            "'update' needs a windowed aggregate (TUMBLE / HOP / window() / session_window())",
            "other tables are append-only",
        ));
    }
    let mut node = plan;
    let mut projection: Option<&datafusion::logical_expr::Projection> = None;
    let aggregate = loop {
        match node {
            LogicalPlan::Aggregate(a) => break a,
            LogicalPlan::Projection(p) => {
                projection.get_or_insert(p);
                node = p.input.as_ref();
            }
            other => match other.inputs().as_slice() {
                [single] => node = single,
                _ => {
                    return Err(EngineError::option(
                        "output_mode",
                        "'update' needs one aggregate at the top of the query",
                    ))
                }
            },
        }
    };
    let group_names: Vec<String> = aggregate.schema.fields()[..aggregate.group_expr.len()]
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let Some(projection) = projection else {
        return Ok(group_names);
    };
    let mut keys = Vec::new();
    let mut found = HashSet::new();
    for (expr, field) in projection.expr.iter().zip(projection.schema.fields()) {
        if let datafusion::logical_expr::Expr::Column(c) = expr.clone().unalias_nested().data {
            if group_names.contains(&c.name) {
                found.insert(c.name.clone());
                keys.push(field.name().clone());
            }
        }
    }
    let missing: Vec<&String> = group_names.iter().filter(|g| !found.contains(*g)).collect();
    if !missing.is_empty() {
        let missing: Vec<&str> = missing.iter().map(|m| m.as_str()).collect();
        return Err(EngineError::option_hint(
            "output_mode",
            "'update' MERGEs rows on the window and the group keys, so the query must select all \
             of them",
            format!("missing: {}", missing.join(", ")),
        ));
    }
    Ok(keys)
}

/// What a table's sink is planned from besides its options.
pub(crate) struct SinkOutput<'a> {
    /// The table's plan.
    pub plan: &'a LogicalPlan,
    /// Its window, if it aggregates one.
    pub window: Option<&'a WindowSpec>,
    /// The keys of a step that replaces rows (keep-last dedupe): update mode on them.
    pub step_update_keys: Option<Vec<String>>,
}

/// The keys a keep-last dedupe's table MERGEs on; each must be one of the output columns.
fn dedupe_merge_keys(schema: &Schema, keys: Vec<String>) -> Result<Vec<String>, EngineError> {
    let missing: Vec<&str> = keys
        .iter()
        .filter(|k| schema.index_of(k).is_err())
        .map(|k| k.as_str())
        .collect();
    if missing.is_empty() {
        return Ok(keys);
    }
    Err(EngineError::option_hint(
        "output_mode",
        "a dedupe that keeps the latest row MERGEs on its keys, so the query must select them \
         under their own names",
        format!("missing: {}", missing.join(", ")),
    ))
}

/// Where table `st` writes, from its WITH options: its connector (the registry's default
/// when none is named) checks its options; `output_mode = 'update'` needs the window and
/// group keys in the output. Mistakes are errors at the option.
pub(crate) fn plan_sink(
    file: &PipelineFile,
    st: &StreamStatement,
    schema: &Schema,
    output: SinkOutput<'_>,
    sinks: &SinkRegistry,
) -> Result<TableSink, SqlError> {
    let SinkOutput {
        plan,
        window,
        step_update_keys,
    } = output;
    let mut options = Options::new(st.options.iter().map(|o| (o.key.clone(), o.value.clone())));
    let result = (|| {
        let (connector_name, connector) =
            sinks.connector(options.take_str("connector").as_deref())?;
        let mode = options.take_choice("output_mode", &["append", "update"])?;
        let update_keys =
            match (mode.as_deref(), step_update_keys) {
                (Some("append"), Some(_)) => return Err(EngineError::option_hint(
                    "output_mode",
                    "a dedupe that keeps the latest row per key replaces rows: its table is in \
                     update mode",
                    "remove output_mode, or keep the first row (ORDER BY the time ASC)",
                )),
                (_, Some(keys)) => Some(dedupe_merge_keys(schema, keys)?),
                (Some("update"), None) => Some(update_merge_keys(plan, window)?),
                _ => None,
            };
        let target = SinkTarget {
            table: &st.name,
            schema,
            update_keys: update_keys.as_deref(),
        };
        let planned = connector.plan(target, &mut options)?;
        options
            .clone()
            .finish(&format!("a {connector_name} table"))?;
        Ok::<_, EngineError>(TableSink {
            connector: connector_name,
            planned,
            update_keys,
        })
    })();
    result.map_err(|e| option_error(file, &st.options, st.name_span, e))
}

/// Two Delta tables at the same path (or one inside the other) would overwrite each other's
/// schema and rows: one error per table that collides with an earlier one.
pub(crate) fn overlapping_table_paths(nodes: &[PlannedNode]) -> Vec<SqlError> {
    let mut seen: Vec<(Vec<&str>, &PlannedNode)> = Vec::new();
    let mut errors = Vec::new();
    for node in nodes {
        let Some(path) = node.sink.as_ref().and_then(|s| s.planned.lake_path()) else {
            continue;
        };
        let parts: Vec<&str> = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if let Some((_, other)) = seen.iter().find(|(o, _)| {
            let n = o.len().min(parts.len());
            o[..n] == parts[..n]
        }) {
            errors.push(
                SqlError::new(
                    node.location.clone(),
                    format!(
                        "`{}` writes to '{}', which overlaps `{}` (declared at {})",
                        node.name, path, other.name, other.location
                    ),
                )
                .with_hint("give each table a folder of its own (WITH (path = '...'))"),
            );
        }
        seen.push((parts, node));
    }
    errors
}
