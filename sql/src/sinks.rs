//! Where a table's rows go: the sink of each `CREATE TABLE`, read from its WITH options and
//! checked at plan time (paths stay inside the lake and do not overlap, update mode has its
//! merge keys, a Kafka table's key is one of its columns).

use std::collections::HashSet;

use arrow::datatypes::Schema;
use datafusion::logical_expr::LogicalPlan;
use weir_engine::options::Options;
use weir_engine::EngineError;

use crate::error::SqlError;
use crate::parser::{PipelineFile, StreamStatement};
use crate::planner::{option_error, PlannedNode};
use crate::windows::WindowSpec;

/// Where a table's rows go.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSpec {
    /// Table format; `delta` is the only one so far.
    pub format: String,
    /// Path relative to the lake (or absolute).
    pub path: String,
    /// Delta partition columns.
    pub partition_by: Vec<String>,
    /// `output_mode = 'update'`: the columns the sink MERGEs on (the window and group keys, as
    /// the query names them). `None` for append mode.
    pub merge_keys: Option<Vec<String>>,
    /// `connector = 'kafka'`: the table is a Kafka topic instead of a Delta table.
    pub kafka: Option<KafkaSinkSpec>,
}

/// Where a `connector = 'kafka'` table writes.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSinkSpec {
    /// The topic.
    pub topic: String,
    /// The brokers (`bootstrap.servers`).
    pub servers: String,
    /// The column whose value is each message's key.
    pub key: Option<String>,
    /// `kafka.*` producer properties, without the prefix.
    pub properties: Vec<(String, String)>,
}

/// The output columns an update-mode table MERGEs on: the window and every group key of its
/// aggregate, as the query's output names them. Explains what is missing otherwise.
fn update_merge_keys(
    plan: &LogicalPlan,
    window: Option<&WindowSpec>,
) -> Result<Vec<String>, String> {
    if window.is_none() {
        return Err(
            "'update' needs a windowed aggregate (TUMBLE / HOP / window() / session_window()); \
             other tables are append-only"
                .to_string(),
        );
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
                _ => return Err("'update' needs one aggregate at the top of the query".to_string()),
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
        return Err(format!(
            "'update' MERGEs rows on the window and the group keys, so the query must select all \
             of them; missing: {}",
            missing
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(keys)
}

/// Where table `st` writes, from its WITH options: a Delta table (path, partitions, output
/// mode) or a Kafka topic. Mistakes are errors at the option.
pub(crate) fn sink_spec(
    file: &PipelineFile,
    st: &StreamStatement,
    schema: &Schema,
    plan: &LogicalPlan,
    window: Option<&WindowSpec>,
) -> Result<SinkSpec, SqlError> {
    let mut options = Options::new(st.options.iter().map(|o| (o.key.clone(), o.value.clone())));
    let result = (|| {
        if options
            .take_choice("connector", &["delta", "kafka"])?
            .as_deref()
            == Some("kafka")
        {
            let topic =
                options.require_str("topic", "the topic to write, e.g. topic = 'alerts'")?;
            let servers = options.require_str(
                "bootstrap.servers",
                "the brokers, e.g. bootstrap.servers = '127.0.0.1:9092'",
            )?;
            options.take_choice("format", &["json"])?;
            let key = match options.take_str("key") {
                None => None,
                Some(k) => Some(column_named(schema, &k).ok_or_else(|| {
                    EngineError::option("key", format!("`{k}` is not a column of `{}`", st.name))
                })?),
            };
            let properties = options.take_prefixed("kafka.");
            options.clone().finish("a kafka table")?;
            return Ok(SinkSpec {
                format: "kafka".into(),
                path: topic.clone(),
                partition_by: Vec::new(),
                merge_keys: None,
                kafka: Some(KafkaSinkSpec {
                    topic,
                    servers,
                    key,
                    properties,
                }),
            });
        }
        let format = options
            .take_choice("format", &["delta"])?
            .unwrap_or_else(|| "delta".into());
        let path = options
            .take_str("path")
            .unwrap_or_else(|| st.name.replace('.', "/"));
        let outside_lake = options
            .take_choice("allow_outside_lake", &["true", "false"])?
            .is_some_and(|v| v == "true");
        check_table_path(&path, outside_lake)
            .map_err(|reason| EngineError::option("path", reason))?;
        let merge_keys = match options.take_choice("output_mode", &["append", "update"])? {
            Some(mode) if mode == "update" => Some(
                update_merge_keys(plan, window)
                    .map_err(|reason| EngineError::option("output_mode", reason))?,
            ),
            _ => None,
        };
        let partition_by: Vec<String> = options
            .take_str("partition_by")
            .map(|v| {
                v.split(',')
                    .map(|c| c.trim())
                    .filter(|c| !c.is_empty())
                    .map(|c| column_named(schema, c).unwrap_or_else(|| c.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        options.clone().finish("a table")?;
        Ok::<_, EngineError>(SinkSpec {
            format,
            path,
            partition_by,
            merge_keys,
            kafka: None,
        })
    })();
    let spec = result.map_err(|e| option_error(file, &st.options, st.name_span, e))?;
    for col in &spec.partition_by {
        if schema.field_with_name(col).is_err() {
            let span = st
                .options
                .iter()
                .find(|o| o.key == "partition_by")
                .map(|o| o.value_span)
                .unwrap_or(st.name_span);
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(file
                .error(
                    span,
                    format!("partition column `{col}` is not a column of `{}`", st.name),
                )
                .with_hint(format!("columns: {}", names.join(", "))));
        }
    }
    if spec.partition_by.len() == schema.fields().len() {
        return Err(file.error(
            st.name_span,
            "a Delta table needs at least one column that is not a partition column",
        ));
    }
    Ok(spec)
}

/// Refuses a table path that would write outside the lake (`..`, or an absolute path without
/// `allow_outside_lake = true`), make the lake itself a table (`''`, `.`), or write into
/// Weir's own folders (`_dead_letter`, `_checkpoints`).
fn check_table_path(path: &str, outside_lake: bool) -> Result<(), String> {
    let p = std::path::Path::new(path);
    if p.is_absolute() {
        return if outside_lake {
            Ok(())
        } else {
            Err(format!(
                "'{path}' is outside the lake; write a path relative to the lake, or add \
                 allow_outside_lake = true to write there on purpose"
            ))
        };
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    if parts.is_empty() {
        return Err(format!(
            "'{path}' is the lake itself, which would hide every other table; name a folder \
             such as 'gold/revenue'"
        ));
    }
    if parts.contains(&"..") {
        return Err(format!(
            "'{path}' leaves the lake through `..`; write a path inside the lake"
        ));
    }
    if matches!(parts[0], "_dead_letter" | "_checkpoints") {
        return Err(format!(
            "'{path}' is in `{}`, which Weir keeps for itself; choose another folder",
            parts[0]
        ));
    }
    Ok(())
}

/// Two Delta tables at the same path (or one inside the other) would overwrite each other's
/// schema and rows: one error per table that collides with an earlier one.
pub(crate) fn overlapping_table_paths(nodes: &[PlannedNode]) -> Vec<SqlError> {
    let mut seen: Vec<(Vec<&str>, &PlannedNode)> = Vec::new();
    let mut errors = Vec::new();
    for node in nodes {
        let Some(sink) = node.sink.as_ref().filter(|s| s.kafka.is_none()) else {
            continue;
        };
        let parts: Vec<&str> = sink
            .path
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
                        node.name, sink.path, other.name, other.location
                    ),
                )
                .with_hint("give each table a folder of its own (WITH (path = '...'))"),
            );
        }
        seen.push((parts, node));
    }
    errors
}

/// The spelling of `schema`'s column named `name`: exact, else the one column that matches
/// case-insensitively (as Spark resolves names).
fn column_named(schema: &Schema, name: &str) -> Option<String> {
    if schema.field_with_name(name).is_ok() {
        return Some(name.to_string());
    }
    let mut matches = schema
        .fields()
        .iter()
        .filter(|f| f.name().eq_ignore_ascii_case(name));
    match (matches.next(), matches.next()) {
        (Some(f), None) => Some(f.name().clone()),
        _ => None,
    }
}
