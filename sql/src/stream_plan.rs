//! One `CREATE TABLE` / `CREATE VIEW` query into a DataFusion logical plan: identifiers
//! resolved, window functions rewritten and their aggregates marked as stateful steps, and
//! DataFusion's errors turned into positioned SQL errors.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{Query, Statement as SqlStatement};
use datafusion::sql::sqlparser::tokenizer::Span;

use crate::error::{Location, SqlError};
use crate::identifiers::{name_selected_fields, resolve_identifiers, KnownNames};
use crate::parser::{PipelineFile, StreamStatement};
use crate::rewrite::{
    exists_in_select_lists, expression_depth, hide_metadata_columns, MAX_EXPRESSION_DEPTH,
};
use crate::spark_windows::rewrite_spark_windows;
use crate::steps::{distinct_on_as_row_number, mark_dedupe_steps, mark_window_steps, StepError};
use crate::windows::{rewrite_window_functions, WindowSpec};

/// What the sources say about event time, for steps that need it.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventTimes {
    /// The sources' watermark columns.
    pub columns: Vec<String>,
    /// The longest watermark delay: how long a dedupe remembers a key after its event time.
    pub horizon_ms: i64,
}

/// Plans `st`'s query against the pipeline's streams; `hidden` are each source's metadata
/// columns (left out of `SELECT *`), `known` the column names it may use.
pub(crate) async fn plan_stream(
    ctx: &SessionContext,
    file: &PipelineFile,
    st: &StreamStatement,
    hidden: &HashMap<String, Vec<String>>,
    known: &KnownNames,
    event_time: &EventTimes,
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
    let plan = distinct_on_as_row_number(plan).map_err(|e| datafusion_error(file, st, e))?;
    let plan = mark_dedupe_steps(plan, event_time.horizon_ms, &event_time.columns).map_err(
        |e| match e {
            StepError::DataFusion(e) => datafusion_error(file, st, e),
            other => file.error(st.query.body_span(), other.to_string()),
        },
    )?;
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
