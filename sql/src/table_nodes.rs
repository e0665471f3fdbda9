//! One `CREATE TABLE` / `CREATE VIEW` into the nodes that run it: the statement's own node,
//! preceded by a hidden node for each stateful step below its own (see `steps`).
//!
//! Each node's plan is checked here, so `weir validate` reports what a run would stop on:
//! joins of two streams, a stateful step its operator cannot keep (the operator is opened
//! over the plan, as a run opens it), a window without a watermark, a table that reads an
//! update-mode table, and the sink's options.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::provider_as_source;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::tokenizer::Span;
use weir_engine::operators::dedupe::node::DedupeNode;
use weir_engine::operators::dedupe::state::Keep;
use weir_engine::operators::window::node::WindowNode;
use weir_engine::operators::{stateful_steps, TableContext};
use weir_engine::runtime::epoch_table::EpochTable;
use weir_engine::runtime::register_stream;
use weir_engine::sink::SinkRegistry;

use crate::error::SqlError;
use crate::identifiers::KnownNames;
use crate::interval_joins::{event_time_columns, mark_join_steps, EventColumns, JoinError};
use crate::parser::{PipelineFile, StreamStatement};
use crate::planner::{
    dead_letter_stream_name, PlannedNode, PlannedReference, PlannedSource, StreamKind,
};
use crate::sinks::TableSink;
use crate::sinks::{plan_sink, SinkOutput};
use crate::steps::{definition, split_steps, Step};
use crate::stream_joins::{find_stream_join, join_span, plan_origins, Origins};
use crate::stream_plan::{datafusion_error, plan_stream, EventTimes, QuerySpan};
use crate::windows::WindowSpec;

/// What planning one statement needs from the statements planned before it.
pub(crate) struct TablePlanning<'a> {
    pub ctx: &'a SessionContext,
    /// Each source's metadata columns, which `SELECT *` leaves out.
    pub hidden: &'a HashMap<String, Vec<String>>,
    pub sinks: &'a SinkRegistry,
    /// Whether any source declares a watermark (windows need one).
    pub has_watermark: bool,
    /// The streams each planned stream's rows come from (for refusing stream joins).
    pub origins: Origins,
    /// The output schema of each planned stream.
    pub schemas: HashMap<String, SchemaRef>,
    /// Tables in update output mode: their rows are revised, so no node may read them.
    pub update_tables: HashSet<String>,
    /// The sources' event-time columns and watermark delays.
    pub event_time: EventTimes,
    /// What may not do what its author expects (printed, not refused).
    pub warnings: Vec<SqlError>,
    /// Nodes that run a window: each epoch they emit whole windows, so per-epoch SQL over
    /// their rows (a rank within a window) sees every row it needs.
    pub window_nodes: HashSet<String>,
    /// The event-time columns of each planned stream (a stream join is bounded on them).
    pub event_columns: EventColumns,
    /// The reference tables (`CREATE REFERENCE TABLE`).
    pub references: HashSet<String>,
}

impl<'a> TablePlanning<'a> {
    /// Planning state before the first statement: the sources' streams and dead letters.
    pub fn new(
        ctx: &'a SessionContext,
        sources: &[PlannedSource],
        references: &[PlannedReference],
        hidden: &'a HashMap<String, Vec<String>>,
        sinks: &'a SinkRegistry,
    ) -> Self {
        let mut origins = Origins::new();
        let mut schemas = HashMap::new();
        // A reference table is no stream: joining it combines nothing across epochs.
        for r in references {
            origins.insert(r.name.clone(), BTreeSet::new());
            schemas.insert(r.name.clone(), r.rows.schema_ref());
        }
        for s in sources {
            let dead_letters = dead_letter_stream_name(&s.name);
            origins.insert(s.name.clone(), BTreeSet::from([s.name.clone()]));
            origins.insert(dead_letters.clone(), BTreeSet::from([dead_letters.clone()]));
            schemas.insert(s.name.clone(), s.table.schema_ref());
            schemas.insert(dead_letters, s.dead_letter_stream.schema_ref());
        }
        TablePlanning {
            ctx,
            hidden,
            sinks,
            has_watermark: sources.iter().any(|s| s.watermark.is_some()),
            origins,
            schemas,
            update_tables: HashSet::new(),
            event_time: EventTimes {
                columns: sources
                    .iter()
                    .filter_map(|s| s.watermark.as_ref().map(|(c, _)| c.clone()))
                    .collect(),
                horizon_ms: sources
                    .iter()
                    .filter_map(|s| s.watermark.as_ref().map(|(_, d)| d.as_millis() as i64))
                    .max()
                    .unwrap_or(0),
            },
            warnings: Vec::new(),
            window_nodes: HashSet::new(),
            references: references.iter().map(|r| r.name.clone()).collect(),
            event_columns: sources
                .iter()
                .filter_map(|s| {
                    let (column, _) = s.watermark.as_ref()?;
                    Some((s.name.clone(), BTreeSet::from([column.clone()])))
                })
                .collect(),
        }
    }
}

/// The statement `st` as nodes: hidden step nodes first, then its own. `reads` are the
/// streams its SQL names, with positions. Errors that leave the nodes usable (a sink
/// option) go to `errors`; an error returned stops planning.
pub(crate) async fn plan_table(
    planning: &mut TablePlanning<'_>,
    file: &PipelineFile,
    st: &StreamStatement,
    reads: &[(String, Span)],
    errors: &mut Vec<SqlError>,
) -> Result<Vec<PlannedNode>, SqlError> {
    refuse_update_mode_inputs(planning, file, st, reads)?;
    let mut known = KnownNames::default();
    for (input, _) in reads {
        known.add_table(input);
        if let Some(schema) = planning.schemas.get(input) {
            known.add_schema(schema);
        }
    }
    let (plan, schema, windows) = plan_stream(
        planning.ctx,
        file,
        st,
        planning.hidden,
        &known,
        &planning.event_time,
    )
    .await?;
    let plan = mark_joins(planning, file, st, plan)?;
    let mut tables: HashMap<String, Arc<EpochTable>> = HashMap::new();
    let ctx = planning.ctx;
    let (plan, steps) = split_steps(&st.name, plan, &mut |name, schema| {
        let table = register_stream(ctx, name, schema)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        tables.insert(name.to_string(), table.clone());
        Ok(provider_as_source(table))
    })
    .map_err(|e| datafusion_error(file, st, e))?;

    let mut candidates: Vec<String> = reads.iter().map(|(n, _)| n.clone()).collect();
    let context = StepContext {
        file,
        st,
        windows: &windows,
    };
    let mut nodes = plan_steps(planning, &context, steps, &mut tables, &mut candidates).await?;
    let window = window_of(&plan, &windows);
    check_node(planning, file, st, &st.name, &plan).await?;
    warn_unbounded_state(planning, file, st, &plan);
    warn_per_epoch_combining(planning, file, st, &plan);
    if window.is_some() {
        planning.window_nodes.insert(st.name.clone());
    }
    let step_update_keys = step_update_keys(&plan);
    if step_update_keys.is_some() {
        planning.update_tables.insert(st.name.clone());
    }
    let output = SinkOutput {
        plan: &plan,
        window: window.as_ref(),
        step_update_keys,
    };
    let sink = table_sink(planning, file, st, &schema, output, errors);
    if sink.as_ref().is_some_and(|s| s.update_keys.is_some()) {
        planning.update_tables.insert(st.name.clone());
    }
    planning.schemas.insert(st.name.clone(), schema.clone());
    let events = event_time_columns(&plan, &planning.event_columns);
    planning.event_columns.insert(st.name.clone(), events);
    let table = register_stream(planning.ctx, &st.name, schema)
        .map_err(|e| file.error(st.name_span, format!("cannot register `{}`: {e}", st.name)))?;
    let inputs = inputs_of(&plan, &candidates);
    nodes.push(PlannedNode {
        name: st.name.clone(),
        kind: st.kind,
        plan,
        table,
        inputs,
        sink,
        window,
        step_of: None,
        location: file.location(st.name_span),
    });
    Ok(nodes)
}

/// The statement being planned, for its hidden step nodes.
struct StepContext<'a> {
    file: &'a PipelineFile,
    st: &'a StreamStatement,
    windows: &'a [WindowSpec],
}

/// The hidden nodes of a statement's inner steps, each checked and registered; `candidates`
/// (the streams the statement may read) gains each step.
async fn plan_steps(
    planning: &mut TablePlanning<'_>,
    context: &StepContext<'_>,
    steps: Vec<Step>,
    tables: &mut HashMap<String, Arc<EpochTable>>,
    candidates: &mut Vec<String>,
) -> Result<Vec<PlannedNode>, SqlError> {
    let (file, st, windows) = (context.file, context.st, context.windows);
    let mut nodes = Vec::new();
    for Step { name, plan } in steps {
        refuse_update_step(file, st, &plan)?;
        warn_unbounded_state(planning, file, st, &plan);
        let window = window_of(&plan, windows);
        check_node(planning, file, st, &name, &plan).await?;
        let inputs = inputs_of(&plan, candidates);
        candidates.push(name.clone());
        if window.is_some() {
            planning.window_nodes.insert(name.clone());
        }
        let table = tables
            .remove(&name)
            .ok_or_else(|| file.error(st.name_span, format!("step `{name}` was not registered")))?;
        planning.schemas.insert(name.clone(), table.schema_ref());
        let events = event_time_columns(&plan, &planning.event_columns);
        planning.event_columns.insert(name.clone(), events);
        nodes.push(PlannedNode {
            name,
            kind: StreamKind::View,
            plan,
            table,
            inputs,
            sink: None,
            window,
            step_of: Some(st.name.clone()),
            location: file.location(st.name_span),
        });
    }
    Ok(nodes)
}

/// Marks the query's joins of two streams as interval joins (`interval_joins`); a join of two
/// streams that cannot be one is an error at the join, and a join of a stream with itself that
/// stays per epoch is a warning.
fn mark_joins(
    planning: &mut TablePlanning<'_>,
    file: &PipelineFile,
    st: &StreamStatement,
    plan: LogicalPlan,
) -> Result<LogicalPlan, SqlError> {
    let join_at = join_span(&st.query, false).unwrap_or_else(|| st.query.body_span());
    let marked =
        mark_join_steps(plan, &planning.origins, &planning.event_columns).map_err(|e| match e {
            JoinError::DataFusion(e) => datafusion_error(file, st, e),
            other => file
                .error(join_at, format!("`{}` {other}", st.name))
                .with_hint(other.hint()),
        })?;
    for streams in &marked.per_epoch_self_joins {
        planning.warnings.push(
            file.error(
                join_at,
                format!(
                    "`{}` joins rows of {streams} with rows of {streams} within each epoch: a \
                     row meets only rows of its own epoch, so pairs that arrive in different \
                     epochs are missed",
                    st.name
                ),
            )
            .with_hint(
                "bound the join by event time to keep rows across epochs (AND b.ts BETWEEN \
                 a.ts AND a.ts + INTERVAL '30 minutes'); a join of each row with itself (on a \
                 unique id) is complete as it is",
            ),
        );
    }
    Ok(marked.plan)
}

/// A table's sink, planned from its WITH options (errors go to `errors`, and the table is
/// planned without one so later statements still are); a view with options is an error.
fn table_sink(
    planning: &TablePlanning<'_>,
    file: &PipelineFile,
    st: &StreamStatement,
    schema: &SchemaRef,
    output: SinkOutput<'_>,
    errors: &mut Vec<SqlError>,
) -> Option<TableSink> {
    match st.kind {
        StreamKind::Table => match plan_sink(file, st, schema, output, planning.sinks) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        StreamKind::View => {
            if let Some(o) = st.options.first() {
                errors.push(
                    file.error(o.key_span, "a view has no storage options")
                        .with_hint("use CREATE TABLE ... WITH (...) AS SELECT to store a stream"),
                );
            }
            None
        }
    }
}

/// The keys a step that revises its rows (a keep-last dedupe) MERGEs on, when `plan` runs one.
fn step_update_keys(plan: &LogicalPlan) -> Option<Vec<String>> {
    let step = stateful_steps(plan).into_iter().next()?;
    let node = step.as_extension().as_any().downcast_ref::<DedupeNode>()?;
    (node.keep == Keep::Latest).then(|| node.keys.clone())
}

/// Refuses a step that revises its rows below another step of the same query.
fn refuse_update_step(
    file: &PipelineFile,
    st: &StreamStatement,
    plan: &LogicalPlan,
) -> Result<(), SqlError> {
    match step_update_keys(plan) {
        None => Ok(()),
        Some(_) => Err(file
            .error(
                st.query.body_span(),
                format!(
                    "`{}` keeps the latest row per key and then aggregates it again: each \
                     newer row replaces the earlier one, so the step above would count both",
                    st.name
                ),
            )
            .with_hint(
                "keep the first row (ORDER BY the event time ASC) before another step, or store \
                 the latest rows in their own table",
            )),
    }
}

/// Warns when a dedupe step has no event time: its keys can never be forgotten.
fn warn_unbounded_state(
    planning: &mut TablePlanning<'_>,
    file: &PipelineFile,
    st: &StreamStatement,
    plan: &LogicalPlan,
) {
    for step in stateful_steps(plan) {
        let Some(node) = step.as_extension().as_any().downcast_ref::<DedupeNode>() else {
            continue;
        };
        if node.time_column.is_none() || planning.event_time.columns.is_empty() {
            planning.warnings.push(
                file.error(
                    st.query.body_span(),
                    format!(
                        "`{}` deduplicates on ({}) without an event time and a watermark: \
                         every key is kept forever, so its state only grows",
                        st.name,
                        node.keys.join(", ")
                    ),
                )
                .with_hint(
                    "declare WATERMARK FOR <time> AS <time> - INTERVAL '...' on the source and \
                     keep its time column in the rows, or ORDER BY it in the ROW_NUMBER() window",
                ),
            );
        }
    }
}

/// Warns when a node without a stateful step groups, ranks or deduplicates rows that come
/// from sources (not from a window's whole groups): it does so within each epoch alone, so its
/// numbers are per epoch, not over the stream.
fn warn_per_epoch_combining(
    planning: &mut TablePlanning<'_>,
    file: &PipelineFile,
    st: &StreamStatement,
    plan: &LogicalPlan,
) {
    if !stateful_steps(plan).is_empty() {
        return;
    }
    let combines = plan.exists(|node| {
        Ok(matches!(
            node,
            LogicalPlan::Aggregate(_) | LogicalPlan::Window(_) | LogicalPlan::Distinct(_)
        ))
    });
    if !combines.unwrap_or(false) {
        return;
    }
    let from_windows = planning.origins.get(&st.name).is_some_and(|o| {
        o.iter()
            .all(|origin| planning.window_nodes.contains(origin))
    });
    if from_windows {
        return;
    }
    planning.warnings.push(
        file.error(
            st.query.body_span(),
            format!(
                "`{}` groups, ranks or deduplicates rows within each epoch alone (GROUP BY, \
                 OVER or DISTINCT without a window): its results are per epoch, not over the \
                 whole stream",
                st.name
            ),
        )
        .with_hint(
            "aggregate per window (TUMBLE / HOP / SESSION), deduplicate with ROW_NUMBER() OVER \
             (PARTITION BY key) ... WHERE rn = 1, or keep it if per-epoch results are meant",
        ),
    );
}

/// The window of the stateful step `plan` runs, if it runs one.
fn window_of(plan: &LogicalPlan, windows: &[WindowSpec]) -> Option<WindowSpec> {
    let step = stateful_steps(plan).into_iter().next()?;
    let node = step.as_extension().as_any().downcast_ref::<WindowNode>()?;
    windows
        .iter()
        .find(|w| definition(w) == node.window)
        .cloned()
}

/// Refuses `st` when it reads an update-mode table: those rows are revised in later epochs,
/// so anything computed from them would count each revision.
fn refuse_update_mode_inputs(
    planning: &TablePlanning<'_>,
    file: &PipelineFile,
    st: &StreamStatement,
    reads: &[(String, Span)],
) -> Result<(), SqlError> {
    match reads
        .iter()
        .find(|(n, _)| planning.update_tables.contains(n))
    {
        None => Ok(()),
        Some((name, span)) => Err(file
            .error(
                *span,
                format!(
                    "`{}` reads `{name}`, a table in update output mode: its rows are revised \
                     in later epochs, so `{}` would count every revision",
                    st.name, st.name
                ),
            )
            .with_hint(format!(
                "read what `{name}` reads instead, or write `{name}` in append mode (the \
                 default) and read that"
            ))),
    }
}

/// Checks a node's plan: no join of two different streams, a watermark for a stateful step,
/// and an operator that can keep the step as state. Records the node's origins.
async fn check_node(
    planning: &mut TablePlanning<'_>,
    file: &PipelineFile,
    st: &StreamStatement,
    name: &str,
    plan: &LogicalPlan,
) -> Result<(), SqlError> {
    if let Some(join) =
        find_stream_join(plan, &planning.origins).map_err(|e| datafusion_error(file, st, e))?
    {
        let span = join_span(&st.query, join.subquery).unwrap_or_else(|| st.query.body_span());
        return Err(file
            .error(span, join.message(&st.name))
            .with_hint(join.hint()));
    }
    let steps = stateful_steps(plan);
    let origins = match steps.first() {
        Some(_) => BTreeSet::from([name.to_string()]),
        None => plan_origins(plan, &planning.origins).map_err(|e| datafusion_error(file, st, e))?,
    };
    if origins.is_empty() {
        refuse_reference_only(planning, file, st, plan)?;
    }
    planning.origins.insert(name.to_string(), origins);
    let Some(step) = steps.first() else {
        return Ok(());
    };
    if step.node().needs_watermark() && !planning.has_watermark {
        return Err(file
            .error(
                st.name_span,
                format!(
                    "`{}` runs {}, which waits for a watermark, but no source declares a watermark",
                    st.name,
                    step.node().describe()
                ),
            )
            .with_hint(
                "add WATERMARK FOR <time column> AS <time column> - INTERVAL '1 minute' to the \
                 source, so Weir knows when event time has passed",
            ));
    }
    // The operator keeps the step as state: open it now, as a run will.
    let mut operator = step.node().operator(&TableContext::default());
    operator.open(planning.ctx, plan).await.map_err(|e| {
        // A plan error's own text, without DataFusion's "Error during planning" prefix.
        let reason = match e {
            weir_engine::EngineError::DataFusion(DataFusionError::Plan(reason)) => reason,
            weir_engine::EngineError::DataFusion(e) => e.strip_backtrace(),
            other => other.to_string(),
        };
        file.error(
            st.query.body_span(),
            format!(
                "`{}` cannot keep its {} as state: {reason}",
                st.name,
                step.node().describe()
            ),
        )
        .with_hint(step.node().usage())
    })?;
    Ok(())
}

/// Refuses a node that reads reference tables and no stream: it would write the whole
/// reference again every epoch.
fn refuse_reference_only(
    planning: &TablePlanning<'_>,
    file: &PipelineFile,
    st: &StreamStatement,
    plan: &LogicalPlan,
) -> Result<(), SqlError> {
    let scanned = inputs_of(
        plan,
        &planning.references.iter().cloned().collect::<Vec<_>>(),
    );
    match scanned.first() {
        None => Ok(()),
        Some(reference) => Err(file
            .error(
                st.query.body_span(),
                format!(
                    "`{}` reads the reference table `{reference}` and no stream: it would write \
                     the whole reference again every epoch",
                    st.name
                ),
            )
            .with_hint(format!(
                "join `{reference}` with a stream (SELECT ... FROM events e JOIN {reference} r \
                 ON ...), or query it directly with `weir query`"
            ))),
    }
}

/// The `candidates` (streams and earlier steps) that `plan` scans, in their order.
fn inputs_of(plan: &LogicalPlan, candidates: &[String]) -> Vec<String> {
    let mut scanned = HashSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            scanned.insert(scan.table_name.to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let mut inputs: Vec<String> = Vec::new();
    for c in candidates {
        if scanned.contains(c) && !inputs.contains(c) {
            inputs.push(c.clone());
        }
    }
    inputs
}
