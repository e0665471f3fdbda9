//! Plans a parsed pipeline: builds each source's connector and schema, orders tables and views
//! by their dependencies (cycles are errors), and plans every query with DataFusion against the
//! pipeline's streams. The result is what `weir run`, `weir validate` and `weir explain` use.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::tokenizer::Span;
use weir_engine::connectors::Connectors;
use weir_engine::runtime::epoch_table::EpochTable;
use weir_engine::runtime::session_context;
use weir_engine::source::Source;

use crate::dead_letter_topic::dead_letter_topic_files;
use crate::error::{Location, SqlErrors};
use crate::graph::{after_dead_letter_writers, dependency_order, stream_reads};
pub use crate::parser::StreamKind;
use crate::parser::{parse_file, PipelineFile, Statement, StreamStatement};
use crate::reference_plan::plan_reference;
pub use crate::reference_plan::PlannedReference;
use crate::sinks::overlapping_table_paths;
pub use crate::sinks::TableSink;
use crate::source_plan::plan_source;
pub use crate::source_plan::DEFAULT_IDLE_TIMEOUT;
use crate::table_nodes::{plan_table, TablePlanning};
use crate::windows::WindowSpec;

/// A planned source.
pub struct PlannedSource {
    /// Name from `CREATE SOURCE`.
    pub name: String,
    /// Connector name.
    pub connector: String,
    /// The connector, ready to plan epochs.
    pub source: Box<dyn Source>,
    /// Declared columns: what records are decoded into.
    pub declared: SchemaRef,
    /// The stream SQL reads (declared + metadata columns).
    pub table: Arc<EpochTable>,
    /// The source's dead letters as a stream (`_dead_letter.<name>`).
    pub dead_letter_stream: Arc<EpochTable>,
    /// The event-time column and watermark delay, if declared.
    pub watermark: Option<(String, Duration)>,
    /// After this long without new data the source no longer holds the watermark back
    /// (`idle_timeout`, default 30 s).
    pub idle_timeout: Duration,
    /// `json.lenient = true`: keep arrow-json's coercions (`"12"` into an INT) instead of
    /// dead-lettering values that do not fit their column exactly.
    pub json_lenient: bool,
    /// Event times more than this after the wall clock are dead letters
    /// (`max_event_time_ahead`, default 1 day; `'none'` turns the guard off).
    pub max_event_time_ahead: Option<Duration>,
    /// `late_data = 'dead_letter'`: rows that windowed nodes find late go to this source's
    /// dead-letter table instead of being only counted.
    pub late_to_dead_letter: bool,
    /// Where it is declared.
    pub location: Location,
}

/// A planned table or view.
pub struct PlannedNode {
    /// Name from `CREATE TABLE` / `CREATE VIEW`.
    pub name: String,
    /// Table (stored) or view.
    pub kind: StreamKind,
    /// The DataFusion logical plan over the pipeline's streams.
    pub plan: LogicalPlan,
    /// The stream downstream nodes read.
    pub table: Arc<EpochTable>,
    /// Sources, tables and views this node reads.
    pub inputs: Vec<String>,
    /// Where a table writes, as its connector planned it.
    pub sink: Option<TableSink>,
    /// The TUMBLE / HOP / SESSION window this node aggregates over, if any.
    pub window: Option<WindowSpec>,
    /// For a hidden node running one stateful step of a table (a window below its window),
    /// that table.
    pub step_of: Option<String>,
    /// Where it is declared.
    pub location: Location,
}

/// A whole pipeline, planned and ready to run.
pub struct PlannedPipeline {
    /// Pipeline name (file stem or folder name).
    pub name: String,
    /// The session the plans were built in; plans must run in it.
    pub ctx: SessionContext,
    /// Sources in declaration order.
    pub sources: Vec<PlannedSource>,
    /// Tables and views in dependency order (inputs first).
    pub nodes: Vec<PlannedNode>,
    /// Reference tables in declaration order.
    pub references: Vec<PlannedReference>,
    /// What runs but may not do what its author expects (unbounded state, ...).
    pub warnings: Vec<crate::error::SqlError>,
}

/// Parses and plans all `files` as one pipeline named `name`, with `threads` partitions.
/// Collects as many errors as it can before giving up.
pub async fn plan_pipeline(
    name: &str,
    files: &[PipelineFile],
    threads: usize,
    connectors: &Connectors,
) -> Result<PlannedPipeline, SqlErrors> {
    let mut errors = Vec::new();
    let mut statements: Vec<(&PipelineFile, Statement)> = Vec::new();
    for file in files {
        match parse_file(file) {
            Ok(stmts) => statements.extend(stmts.into_iter().map(|s| (file, s))),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(SqlErrors(errors));
    }
    let added_files = dead_letter_topic_files(&statements).map_err(SqlErrors)?;
    for file in &added_files {
        let stmts = parse_file(file).map_err(|e| SqlErrors(vec![e]))?;
        statements.extend(stmts.into_iter().map(|s| (file, s)));
    }

    let declared_at = declared_names(&statements, &mut errors);

    let ctx = session_context(threads);
    let mut sources = Vec::new();
    let mut hidden: HashMap<String, Vec<String>> = HashMap::new();
    for (file, stmt) in &statements {
        if let Statement::Source(s) = stmt {
            match plan_source(&ctx, name, file, s, &connectors.sources) {
                Ok(planned) => {
                    hidden.insert(planned.name.clone(), metadata_columns(&planned));
                    sources.push(planned);
                }
                Err(e) => errors.push(e),
            }
        }
    }

    let references = plan_references(&ctx, &statements, connectors, &mut errors).await;

    let streams: Vec<(&PipelineFile, &StreamStatement)> = statements
        .iter()
        .filter_map(|(f, s)| match s {
            Statement::Stream(st) => Some((*f, st)),
            _ => None,
        })
        .collect();
    let mut known: HashSet<String> = declared_at.keys().cloned().collect();
    // Each source's dead letters are a stream too.
    known.extend(sources.iter().map(|s| dead_letter_stream_name(&s.name)));
    let mut inputs: HashMap<String, Vec<(String, Span)>> = HashMap::new();
    for (file, st) in &streams {
        match stream_reads(file, st, &known) {
            Ok(refs) => {
                inputs.insert(st.name.clone(), refs);
            }
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(SqlErrors(errors));
    }

    let order = match dependency_order(&streams, &inputs) {
        Ok(order) => after_dead_letter_writers(order, &streams, &inputs),
        Err(e) => return Err(e.into()),
    };

    let mut planning = TablePlanning::new(&ctx, &sources, &references, &hidden, &connectors.sinks);
    let mut nodes = Vec::new();
    for idx in order {
        let (file, st) = streams[idx];
        match plan_table(&mut planning, file, st, &inputs[&st.name], &mut errors).await {
            Ok(planned) => nodes.extend(planned),
            Err(e) => {
                errors.push(e);
                // Later nodes may read this one; stop rather than report knock-on errors.
                break;
            }
        }
    }
    let planning_warnings = std::mem::take(&mut planning.warnings);
    drop(planning);
    errors.extend(overlapping_table_paths(&nodes));
    if !errors.is_empty() {
        return Err(SqlErrors(errors));
    }
    Ok(PlannedPipeline {
        name: name.to_string(),
        ctx,
        sources,
        nodes,
        references,
        warnings: planning_warnings,
    })
}

/// Opens every reference table (errors go to `errors`).
async fn plan_references(
    ctx: &SessionContext,
    statements: &[(&PipelineFile, Statement)],
    connectors: &Connectors,
    errors: &mut Vec<crate::error::SqlError>,
) -> Vec<PlannedReference> {
    let mut references = Vec::new();
    for (file, stmt) in statements {
        if let Statement::Reference(r) = stmt {
            match plan_reference(ctx, file, r, &connectors.references).await {
                Ok(planned) => references.push(planned),
                Err(e) => errors.push(e),
            }
        }
    }
    references
}

/// The stream a pipeline's queries read a source's dead letters from (`_dead_letter.events`,
/// the same name `weir query` gives the dead-letter table).
pub fn dead_letter_stream_name(source: &str) -> String {
    format!("_dead_letter.{source}")
}

/// Where each source, table and view is declared; a name declared twice is an error.
fn declared_names(
    statements: &[(&PipelineFile, Statement)],
    errors: &mut Vec<crate::error::SqlError>,
) -> HashMap<String, Location> {
    let mut declared_at: HashMap<String, Location> = HashMap::new();
    for (file, stmt) in statements {
        let (name, span) = match stmt {
            Statement::Source(s) => (&s.name, s.name_span),
            Statement::Stream(s) => (&s.name, s.name_span),
            Statement::Reference(r) => (&r.name, r.name_span),
        };
        let here = file.location(span);
        if let Some(first) = declared_at.get(name) {
            errors.push(
                file.error(span, format!("`{name}` is declared twice"))
                    .with_hint(format!(
                        "the first declaration is at {first}; rename one of them"
                    )),
            );
        } else {
            declared_at.insert(name.clone(), here);
        }
    }
    declared_at
}

/// The columns a source's stream has beyond those it declares (its connector's metadata,
/// `_source`, `_epoch`), which `SELECT *` leaves out.
fn metadata_columns(source: &PlannedSource) -> Vec<String> {
    let declared: HashSet<&str> = source
        .declared
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    source
        .table
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| !declared.contains(n.as_str()))
        .collect()
}
