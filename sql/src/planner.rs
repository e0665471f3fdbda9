//! Plans a parsed pipeline: builds each source's connector and schema, orders tables and views
//! by their dependencies (cycles are errors), and plans every query with DataFusion against the
//! pipeline's streams. The result is what `weir run`, `weir validate` and `weir explain` use.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::displayable;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, Query, Statement as SqlStatement, Visit, Visitor,
};
use datafusion::sql::sqlparser::tokenizer::Span;
use weir_engine::connectors::Connectors;
use weir_engine::operators::stateful_steps;
use weir_engine::options::{edit_distance, Options};
use weir_engine::runtime::epoch_table::EpochTable;
use weir_engine::runtime::{register_stream, session_context, source_schema};
use weir_engine::source::{Source, SourceArgs, SourceRegistry, COMMON_METADATA};
use weir_engine::types::SUPPORTED_TYPES;
use weir_engine::EngineError;

use crate::error::{Location, SqlError, SqlErrors};
use crate::identifiers::{name_selected_fields, resolve_identifiers, KnownNames};
use crate::interval::expr_duration;
pub use crate::parser::StreamKind;
use crate::parser::{
    parse_file, OptionSpec, PipelineFile, SourceStatement, Statement, StreamStatement,
};
use crate::rewrite::{
    exists_in_select_lists, expression_depth, hide_metadata_columns, MAX_EXPRESSION_DEPTH,
};
use crate::sinks::overlapping_table_paths;
pub use crate::sinks::TableSink;
use crate::spark_windows::rewrite_spark_windows;
use crate::steps::{mark_window_steps, StepError};
use crate::stream_joins::Origins;
use crate::table_nodes::{plan_table, TablePlanning};
use crate::windows::{rewrite_window_functions, WindowSpec};

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
}

impl PlannedPipeline {
    /// The DAG and each node's optimised logical and physical plan, for `weir explain`.
    pub async fn explain(&self) -> Result<String, DataFusionError> {
        let mut out = String::new();
        out.push_str(&format!("pipeline {}\n\nsources:\n", self.name));
        for s in &self.sources {
            let wm = s
                .watermark
                .as_ref()
                .map(|(c, d)| format!(", watermark {c} - {}s", d.as_secs()))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {} (connector {}{wm}) at {}\n",
                s.name, s.connector, s.location
            ));
            for f in s.table.schema_ref().fields() {
                out.push_str(&format!(
                    "    {}: {}{}\n",
                    f.name(),
                    f.data_type(),
                    if f.is_nullable() { "" } else { " NOT NULL" }
                ));
            }
        }
        out.push_str("\nnodes (in run order):\n");
        for n in &self.nodes {
            let target = match (&n.sink, &n.step_of) {
                (Some(s), _) => format!(" -> {}", s.planned.describe()),
                (None, Some(table)) => format!(" (a step of `{table}`, not stored)"),
                (None, None) => " (view, not stored)".to_string(),
            };
            let mode = match n.sink.as_ref().and_then(|s| s.update_keys.as_ref()) {
                Some(_) => "update",
                None => "append",
            };
            let window = stateful_steps(&n.plan)
                .first()
                .map(|step| {
                    let step = step.node();
                    format!(
                        " [{}; {mode} output; state: {}]",
                        step.describe(),
                        step.state()
                    )
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "  {} <- [{}]{target}{window}\n",
                n.name,
                n.inputs.join(", ")
            ));
        }
        for n in &self.nodes {
            let state = self.ctx.state();
            let optimized = state.optimize(&n.plan)?;
            let physical = state.create_physical_plan(&n.plan).await?;
            out.push_str(&format!(
                "\n== {} ({}) ==\nlogical plan:\n{}\nphysical plan:\n{}",
                n.name,
                n.location,
                optimized.display_indent(),
                displayable(physical.as_ref()).indent(true)
            ));
        }
        Ok(out)
    }
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

    // Names are unique across sources, tables and views.
    let mut declared_at: HashMap<String, Location> = HashMap::new();
    for (file, stmt) in &statements {
        let (name, span) = match stmt {
            Statement::Source(s) => (&s.name, s.name_span),
            Statement::Stream(s) => (&s.name, s.name_span),
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

    let ctx = session_context(threads);
    let mut sources = Vec::new();
    let mut hidden: HashMap<String, Vec<String>> = HashMap::new();
    for (file, stmt) in &statements {
        if let Statement::Source(s) = stmt {
            match plan_source(&ctx, name, file, s, &connectors.sources) {
                Ok(planned) => {
                    let declared: HashSet<&str> = planned
                        .declared
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect();
                    let meta = planned
                        .table
                        .schema_ref()
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .filter(|n| !declared.contains(n.as_str()))
                        .collect();
                    hidden.insert(planned.name.clone(), meta);
                    sources.push(planned);
                }
                Err(e) => errors.push(e),
            }
        }
    }

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
        let ctes = cte_names(&st.query);
        let mut refs = Vec::new();
        let _ = datafusion::sql::sqlparser::ast::visit_relations(&*st.query, |rel| {
            let name = crate::parser::object_name_to_string(rel);
            if crate::windows::is_window_function(&name) {
                return ControlFlow::<()>::Continue(());
            }
            let span = rel
                .0
                .first()
                .and_then(|p| p.as_ident())
                .map(|i| i.span)
                .unwrap_or(st.name_span);
            // A WITH query of the same name shadows a stream of the pipeline.
            let shadowed = ctes.contains(&name);
            if !shadowed && known.contains(&name) {
                refs.push((name, span));
            } else if !shadowed {
                let mut e = file.error(span, format!("unknown source, table or view `{name}`"));
                let mut names: Vec<&String> = known.iter().collect();
                names.sort();
                let close = names
                    .iter()
                    .filter(|k| edit_distance(k, &name) <= 2)
                    .min_by_key(|k| edit_distance(k, &name));
                let declared = names
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                e = e.with_hint(match close {
                    Some(k) => format!("did you mean `{k}`? Declared: {declared}"),
                    None => format!(
                        "declare it with CREATE SOURCE / CREATE TABLE / CREATE VIEW; declared: {declared}"
                    ),
                });
                errors.push(e);
            }
            ControlFlow::<()>::Continue(())
        });
        for (name, span) in crate::windows::window_inputs(&st.query) {
            let shadowed = ctes.contains(&name);
            if !shadowed && known.contains(&name) {
                refs.push((name, span));
            } else if !shadowed {
                errors.push(file.error(span, format!("unknown source, table or view `{name}` in a window function"))
                    .with_hint("the first argument of TUMBLE / HOP names a source, table, view or WITH query of this pipeline"));
            }
        }
        if refs.iter().any(|(r, _)| r == &st.name) {
            let span = refs
                .iter()
                .find(|(r, _)| r == &st.name)
                .map(|(_, s)| *s)
                .unwrap_or(st.name_span);
            errors.push(
                file.error(span, format!("`{}` reads itself", st.name))
                    .with_hint(
                        "a streaming table cannot read its own output; read its inputs instead",
                    ),
            );
        }
        inputs.insert(st.name.clone(), refs);
    }
    if !errors.is_empty() {
        return Err(SqlErrors(errors));
    }

    let order = match dependency_order(&streams, &inputs) {
        Ok(order) => after_dead_letter_writers(order, &streams, &inputs),
        Err(e) => return Err(e.into()),
    };

    let mut origins: Origins = sources
        .iter()
        .map(|s| (s.name.clone(), BTreeSet::from([s.name.clone()])))
        .collect();
    for s in &sources {
        let name = dead_letter_stream_name(&s.name);
        origins.insert(name.clone(), BTreeSet::from([name]));
    }
    let mut schemas: HashMap<String, SchemaRef> = sources
        .iter()
        .map(|s| (s.name.clone(), s.table.schema_ref()))
        .collect();
    for s in &sources {
        schemas.insert(
            dead_letter_stream_name(&s.name),
            s.dead_letter_stream.schema_ref(),
        );
    }
    let mut planning = TablePlanning {
        ctx: &ctx,
        hidden: &hidden,
        sinks: &connectors.sinks,
        has_watermark: sources.iter().any(|s| s.watermark.is_some()),
        origins,
        schemas,
        update_tables: HashSet::new(),
    };
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
    errors.extend(overlapping_table_paths(&nodes));
    if !errors.is_empty() {
        return Err(SqlErrors(errors));
    }
    Ok(PlannedPipeline {
        name: name.to_string(),
        ctx,
        sources,
        nodes,
    })
}

/// Turns an option error of the engine into a positioned SQL error with its hint.
pub(crate) fn option_error(
    file: &PipelineFile,
    options: &[OptionSpec],
    fallback: Span,
    err: EngineError,
) -> SqlError {
    match err {
        EngineError::Option {
            key,
            message,
            hint,
            unknown_key,
        } => {
            let opt = options.iter().find(|o| o.key == key);
            let span = opt
                .map(|o| {
                    if unknown_key {
                        o.key_span
                    } else {
                        o.value_span
                    }
                })
                .unwrap_or(fallback);
            let msg = if unknown_key {
                format!("`{key}` {message}")
            } else {
                format!("option `{key}`: {message}")
            };
            let e = file.error(span, msg);
            match hint {
                Some(h) => e.with_hint(h),
                None => e,
            }
        }
        other => file.error(fallback, other.to_string()),
    }
}

fn plan_source(
    ctx: &SessionContext,
    pipeline: &str,
    file: &PipelineFile,
    s: &SourceStatement,
    sources: &SourceRegistry,
) -> Result<PlannedSource, SqlError> {
    let mut fields = Vec::new();
    let mut seen = HashSet::new();
    for c in &s.columns {
        if !seen.insert(c.name.to_lowercase()) {
            return Err(file
                .error(c.span, format!("column `{}` is declared twice", c.name))
                .with_hint("column names are case-insensitive in SQL (as in Spark); rename one"));
        }
        let data_type = c.data_type.to_arrow().map_err(|type_name| {
            file.error(
                c.span,
                format!("type `{type_name}` of column `{}` is not supported", c.name),
            )
            .with_hint(format!("use one of {SUPPORTED_TYPES}"))
        })?;
        if COMMON_METADATA
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&c.name))
        {
            return Err(file
                .error(
                    c.span,
                    format!("`{}` is a metadata column every source has", c.name),
                )
                .with_hint("rename the column"));
        }
        fields.push(Field::new(&c.name, data_type, !c.not_null));
    }
    if fields.is_empty() {
        return Err(file
            .error(
                s.name_span,
                format!("source `{}` declares no columns", s.name),
            )
            .with_hint("list the record's fields: CREATE SOURCE s (id TEXT, amount DOUBLE, ...)"));
    }
    let declared = Arc::new(Schema::new(fields));
    let watermark = match &s.watermark {
        None => None,
        Some(w) => {
            let field = declared
                .fields()
                .iter()
                .find(|f| f.name().eq_ignore_ascii_case(&w.column));
            let Some(field) = field else {
                return Err(file
                    .error(
                        w.span,
                        format!("WATERMARK FOR `{}`: no such column", w.column),
                    )
                    .with_hint("name a TIMESTAMP column of this source"));
            };
            if !matches!(
                field.data_type(),
                arrow::datatypes::DataType::Timestamp(_, _)
            ) {
                return Err(file.error(
                    w.span,
                    format!(
                        "WATERMARK FOR `{}`: the column is {}, not TIMESTAMP",
                        w.column,
                        field.data_type()
                    ),
                ));
            }
            let delay = match &w.expr {
                Expr::Identifier(i) if i.value.eq_ignore_ascii_case(&w.column) => {
                    Some(Duration::ZERO)
                }
                Expr::BinaryOp {
                    left,
                    op: BinaryOperator::Minus,
                    right,
                } if matches!(&**left, Expr::Identifier(i) if i.value.eq_ignore_ascii_case(&w.column)) => {
                    expr_duration(right)
                }
                _ => None,
            };
            let Some(delay) = delay else {
                return Err(file
                    .error(w.span, "the watermark must be the column minus an interval")
                    .with_hint(format!(
                        "WATERMARK FOR {0} AS {0} - INTERVAL '10 minutes'",
                        w.column
                    )));
            };
            Some((field.name().clone(), delay))
        }
    };
    let mut options = Options::new(s.options.iter().map(|o| (o.key.clone(), o.value.clone())));
    let Some(connector) = options.take_str("connector") else {
        return Err(file
            .error(s.name_span, format!("source `{}` has no connector", s.name))
            .with_hint(format!(
                "add WITH (connector = {}, ...)",
                sources
                    .names()
                    .iter()
                    .map(|n| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            )));
    };
    let connector = connector.to_ascii_lowercase();
    // Taken here, not by the connector: it belongs to the watermark, for every connector.
    let idle_timeout = match options.take_str("idle_timeout") {
        None => DEFAULT_IDLE_TIMEOUT,
        Some(text) => crate::interval::parse_duration(&text).ok_or_else(|| {
            option_error(
                file,
                &s.options,
                s.name_span,
                EngineError::option_hint(
                    "idle_timeout",
                    format!("'{text}' is not a duration"),
                    "write e.g. idle_timeout = '30 seconds'",
                ),
            )
        })?,
    };
    let max_event_time_ahead = match options.take_str("max_event_time_ahead") {
        None => Some(Duration::from_millis(
            weir_engine::event_time::DEFAULT_MAX_AHEAD_MS as u64,
        )),
        Some(text) if text.eq_ignore_ascii_case("none") => None,
        Some(text) => Some(crate::interval::parse_duration(&text).ok_or_else(|| {
            option_error(
                file,
                &s.options,
                s.name_span,
                EngineError::option_hint(
                    "max_event_time_ahead",
                    format!("'{text}' is not a duration"),
                    "write e.g. max_event_time_ahead = '1 day' (or 'none')",
                ),
            )
        })?),
    };
    let json_lenient = options
        .take_choice("json.lenient", &["true", "false"])
        .map_err(|e| option_error(file, &s.options, s.name_span, e))?
        .is_some_and(|v| v == "true");
    let late_to_dead_letter = options
        .take_choice("late_data", &["drop", "dead_letter"])
        .map_err(|e| option_error(file, &s.options, s.name_span, e))?
        .is_some_and(|v| v == "dead_letter");
    let args = SourceArgs {
        pipeline,
        source: &s.name,
    };
    let source = sources
        .build(args, &connector, options, &declared)
        .map_err(|e| option_error(file, &s.options, s.name_span, e))?;
    let schema = source_schema(&declared, &source.metadata_fields());
    let table = register_stream(ctx, &s.name, schema)
        .map_err(|e| file.error(s.name_span, format!("cannot register source: {e}")))?;
    let dead_letter_stream = register_stream(
        ctx,
        &dead_letter_stream_name(&s.name),
        weir_engine::dead_letter::dead_letter_schema(),
    )
    .map_err(|e| {
        file.error(
            s.name_span,
            format!("cannot register its dead letters: {e}"),
        )
    })?;
    Ok(PlannedSource {
        name: s.name.clone(),
        connector,
        source,
        declared,
        table,
        dead_letter_stream,
        watermark,
        idle_timeout,
        json_lenient,
        max_event_time_ahead,
        late_to_dead_letter,
        location: file.location(s.name_span),
    })
}

/// A source with no new data for this long stops holding the watermark back.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn plan_stream(
    ctx: &SessionContext,
    file: &PipelineFile,
    st: &StreamStatement,
    hidden: &HashMap<String, Vec<String>>,
    known: &KnownNames,
) -> Result<(LogicalPlan, SchemaRef, Vec<WindowSpec>), SqlError> {
    let depth = expression_depth(&st.query);
    if depth > MAX_EXPRESSION_DEPTH {
        return Err(file
            .error(
                st.query.body_span(),
                format!(
                    "`{}` nests expressions {depth} deep (more than {MAX_EXPRESSION_DEPTH})",
                    st.name
                ),
            )
            .with_hint(
                "a long chain of OR / AND / CASE is slow to plan: use `x IN (...)`, or join a \
                 VALUES list",
            ));
    }
    let mut query: Box<Query> = st.query.clone();
    resolve_identifiers(&mut query, known);
    rewrite_spark_windows(&mut query)
        .map_err(|e| file.error(e.span, e.message).with_hint(e.hint))?;
    let windows = rewrite_window_functions(&mut query)
        .map_err(|e| file.error(e.span, e.message).with_hint(e.hint))?;
    name_selected_fields(&mut query);
    hide_metadata_columns(&mut query, hidden);
    exists_in_select_lists(&mut query);
    let statement = DFStatement::Statement(Box::new(SqlStatement::Query(query)));
    let plan = ctx
        .state()
        .statement_to_plan(statement)
        .await
        .map_err(|e| datafusion_error(file, st, e))?;
    let schema: Schema = plan.schema().as_arrow().clone();
    let mut names = HashSet::new();
    for f in schema.fields() {
        if !names.insert(f.name().clone()) {
            return Err(file
                .error(
                    st.query.body_span(),
                    format!("`{}` produces two columns named `{}`", st.name, f.name()),
                )
                .with_hint("give one of them another name with AS"));
        }
    }
    let plan = mark_window_steps(plan, &windows).map_err(|e| {
        let hint = match e {
            StepError::DataFusion(e) => return datafusion_error(file, st, e),
            StepError::SharedAggregate(_) => {
                "aggregate each window in its own view; to join \
                 two windowed views, see the README on stream joins"
            }
            _ => {
                "aggregate per window: SELECT window_start, window_end, key, count(*) FROM \
                 TUMBLE(...) GROUP BY window_start, window_end, key"
            }
        };
        file.error(
            st.query.body_span(),
            format!("`{}` windows rows but {e}", st.name),
        )
        .with_hint(hint)
    })?;
    Ok((plan, Arc::new(schema), windows))
}

/// Turns a DataFusion planning error into a positioned SQL error.
pub(crate) fn datafusion_error(
    file: &PipelineFile,
    st: &StreamStatement,
    e: DataFusionError,
) -> SqlError {
    let fallback = file.location(st.query.body_span());
    let (location, message, mut hints) = match e.diagnostic() {
        Some(d) => {
            let loc = d
                .span
                .map(|s| Location {
                    file: file.path.clone(),
                    line: s.start.line,
                    column: s.start.column,
                })
                .unwrap_or(fallback);
            let hints: Vec<String> = d
                .helps
                .iter()
                .map(|h| h.message.clone())
                .chain(d.notes.iter().map(|n| n.message.clone()))
                .collect();
            (loc, d.message.clone(), hints)
        }
        None => (fallback, e.find_root().to_string(), Vec::new()),
    };
    let missing_field = match e.find_root() {
        DataFusionError::SchemaError(schema_error, _) => match schema_error.as_ref() {
            SchemaError::FieldNotFound { valid_fields, .. } => Some(valid_fields),
            _ => None,
        },
        _ => None,
    };
    if let Some(valid_fields) = missing_field {
        if valid_fields.is_empty() {
            hints.push(
                "check the spelling, or add the column to the source's column list".to_string(),
            );
        } else {
            let names: Vec<String> = valid_fields.iter().map(|c| c.flat_name()).collect();
            hints.push(format!("available columns: {}", names.join(", ")));
        }
    }
    let mut err = file.error_at(location, format!("in `{}`: {message}", st.name));
    if !hints.is_empty() {
        err = err.with_hint(hints.join("; "));
    }
    err
}

/// Names of the CTEs defined anywhere in `query`.
fn cte_names(query: &Query) -> HashSet<String> {
    struct Ctes(HashSet<String>);
    impl Visitor for Ctes {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(with) = &q.with {
                for cte in &with.cte_tables {
                    self.0.insert(cte.alias.name.value.to_ascii_lowercase());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Ctes(HashSet::new());
    let _ = query.visit(&mut v);
    v.0
}

/// The stream a pipeline's queries read a source's dead letters from (`_dead_letter.events`,
/// the same name `weir query` gives the dead-letter table).
pub fn dead_letter_stream_name(source: &str) -> String {
    format!("_dead_letter.{source}")
}

/// Moves the nodes that read dead letters (directly or through other nodes) after all the
/// others, keeping both groups in dependency order: windowed nodes add late rows to the dead
/// letters while they run, so a reader sees all of the epoch's dead letters.
fn after_dead_letter_writers(
    order: Vec<usize>,
    streams: &[(&PipelineFile, &StreamStatement)],
    inputs: &HashMap<String, Vec<(String, Span)>>,
) -> Vec<usize> {
    let mut readers: HashSet<&str> = HashSet::new();
    for &i in &order {
        let name = streams[i].1.name.as_str();
        let reads_dead_letters = inputs[name]
            .iter()
            .any(|(n, _)| n.starts_with("_dead_letter.") || readers.contains(n.as_str()));
        if reads_dead_letters {
            readers.insert(name);
        }
    }
    let (late, early): (Vec<usize>, Vec<usize>) = order
        .into_iter()
        .partition(|&i| readers.contains(streams[i].1.name.as_str()));
    early.into_iter().chain(late).collect()
}

/// Orders streams so every stream comes after the streams it reads; a cycle is an error at the
/// reference that closes it.
fn dependency_order(
    streams: &[(&PipelineFile, &StreamStatement)],
    inputs: &HashMap<String, Vec<(String, Span)>>,
) -> Result<Vec<usize>, SqlError> {
    let index: BTreeMap<&str, usize> = streams
        .iter()
        .enumerate()
        .map(|(i, (_, s))| (s.name.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = streams
        .iter()
        .map(|(_, s)| {
            inputs[&s.name]
                .iter()
                .filter_map(|(n, _)| index.get(n.as_str()).copied())
                .collect()
        })
        .collect();
    // Depth-first search; colours: 0 new, 1 in progress, 2 done.
    let mut colour = vec![0u8; streams.len()];
    let mut order = Vec::new();
    let mut path: Vec<usize> = Vec::new();
    fn visit(
        i: usize,
        deps: &[Vec<usize>],
        colour: &mut [u8],
        order: &mut Vec<usize>,
        path: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        match colour[i] {
            2 => return Ok(()),
            1 => {
                let start = path.iter().position(|&p| p == i).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(i);
                return Err(cycle);
            }
            _ => {}
        }
        colour[i] = 1;
        path.push(i);
        for &d in &deps[i] {
            visit(d, deps, colour, order, path)?;
        }
        path.pop();
        colour[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..streams.len() {
        if let Err(cycle) = visit(i, &deps, &mut colour, &mut order, &mut path) {
            // The cycle is [a, b, ..., a] where each reads the next.
            let names: Vec<&str> = cycle.iter().map(|&c| streams[c].1.name.as_str()).collect();
            let (file, first) = streams[cycle[0]];
            let next = &streams[cycle[1]].1.name;
            let span = inputs[&first.name]
                .iter()
                .find(|(n, _)| n == next)
                .map(|(_, s)| *s)
                .unwrap_or(first.name_span);
            return Err(file
                .error(span, format!("cycle between streams: {}", names.join(" reads ")))
                .with_hint("a pipeline is a DAG: make one of these read a source or an upstream table instead"));
        }
    }
    Ok(order)
}

/// Spans of query parts, for errors that DataFusion reports without a position.
pub(crate) trait QuerySpan {
    fn body_span(&self) -> Span;
}

impl QuerySpan for Query {
    fn body_span(&self) -> Span {
        use datafusion::sql::sqlparser::ast::Spanned;
        self.span()
    }
}
