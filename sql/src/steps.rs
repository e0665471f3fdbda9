//! The stateful steps of a table's logical plan.
//!
//! [`mark_window_steps`] wraps the aggregate over each window function's rows in the window
//! operator's node (`weir_engine::operators::window::node::WindowNode`), so a step is found by
//! its node type. [`split_steps`] then gives a table whose plan holds several steps in sequence
//! (a window over a window, in one query) a chain of hidden nodes, one step each: every runtime
//! node runs at most one operator, and each step downstream of another judges lateness by the
//! previous epoch's watermark, as a window over another table's window does.

use std::sync::Arc;

use arrow::datatypes::DataType;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::common::{Column, DFSchemaRef, TableReference};
use datafusion::error::{DataFusionError, Result};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::expr::WindowFunctionDefinition;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{col, lit, Distinct, ExprFunctionExt, WindowFrame};
use datafusion::logical_expr::{
    BinaryExpr, Expr, Extension, Filter, LogicalPlan, LogicalPlanBuilder, Operator, Projection,
    SortExpr as Sort, SubqueryAlias, TableSource, UserDefinedLogicalNode, Window,
};
use weir_engine::operators::dedupe::node::DedupeNode;
use weir_engine::operators::dedupe::state::Keep;
use weir_engine::operators::stateful_node;
use weir_engine::operators::window::node::{WindowDefinition, WindowNode};

use crate::windows::{window_marker, WindowSpec, WINDOW_END};

/// Why the windows of a query could not be made into steps.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// One aggregate groups the rows of several window functions.
    #[error("one GROUP BY aggregates {0} window functions")]
    SharedAggregate(usize),
    /// A window function whose rows no aggregate groups.
    #[error("the windowed query has no GROUP BY aggregate")]
    NoAggregate,
    /// A window inside an expression's subquery (`IN (SELECT ... FROM TUMBLE(...))`).
    #[error("a window function inside a subquery expression")]
    InSubqueryExpression,
    /// DataFusion refused a rewritten plan.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}

/// Wraps the aggregate over the rows of each of `windows` (found by its marker alias, see
/// `windows::window_marker`) in a [`WindowNode`].
pub fn mark_window_steps(
    plan: LogicalPlan,
    windows: &[WindowSpec],
) -> std::result::Result<LogicalPlan, StepError> {
    if windows.is_empty() {
        return Ok(plan);
    }
    let mut wrapped = 0;
    let mut shared = None;
    let plan = plan
        .transform_up(|node| {
            let LogicalPlan::Aggregate(_) = &node else {
                return Ok(Transformed::no(node));
            };
            let found = markers_in(node.inputs()[0], windows.len(), false);
            match found.as_slice() {
                [] => Ok(Transformed::no(node)),
                [index] => {
                    wrapped += 1;
                    let step = WindowNode::new(node, definition(&windows[*index]));
                    Ok(Transformed::yes(extension(step)))
                }
                more => {
                    shared = Some(more.len());
                    Ok(Transformed::new(node, false, TreeNodeRecursion::Stop))
                }
            }
        })?
        .data;
    if let Some(n) = shared {
        return Err(StepError::SharedAggregate(n));
    }
    if wrapped < windows.len() {
        let in_main_tree = markers_in(&plan, windows.len(), true).len();
        return Err(if in_main_tree > 0 {
            StepError::NoAggregate
        } else {
            StepError::InSubqueryExpression
        });
    }
    Ok(plan)
}

/// The window as the operator's node holds it.
pub fn definition(spec: &WindowSpec) -> WindowDefinition {
    WindowDefinition {
        description: spec.describe(),
        time_column: spec.time_column.clone(),
        window_end: WINDOW_END.to_string(),
        sessions: spec.is_session(),
    }
}

fn extension(node: impl UserDefinedLogicalNode + 'static) -> LogicalPlan {
    LogicalPlan::Extension(Extension {
        node: Arc::new(node),
    })
}

/// The window markers in `plan`: below its steps too with `through_steps`, otherwise only
/// those no step below has taken yet.
fn markers_in(plan: &LogicalPlan, windows: usize, through_steps: bool) -> Vec<usize> {
    let mut found = Vec::new();
    let _ = plan.apply(|node| {
        if !through_steps && is_step(node) {
            return Ok(TreeNodeRecursion::Jump);
        }
        if let LogicalPlan::SubqueryAlias(alias) = node {
            if let Some(i) = (0..windows).find(|i| alias.alias.table() == window_marker(*i)) {
                found.push(i);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

fn is_step(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Extension(e) if stateful_node(e.node.as_ref()).is_some())
}

/// One stateful step cut out of a table's plan, to run as its own hidden node.
pub struct Step {
    /// The hidden node's name: `<table>__step<N>`.
    pub name: String,
    /// The step and the stateless part below it.
    pub plan: LogicalPlan,
}

/// Registers a step's output as a stream and returns it as a table source to scan.
pub type RegisterStep<'a> = dyn FnMut(&str, SchemaRef) -> Result<Arc<dyn TableSource>> + 'a;

/// Cuts `plan` so that it keeps at most one stateful step: when one step sits on top of the
/// others (a window over a window), the steps below it become [`Step`]s, inputs first, and
/// the plan scans their streams; when several sit side by side, all of them do.
pub fn split_steps(
    table: &str,
    plan: LogicalPlan,
    register: &mut RegisterStep<'_>,
) -> Result<(LogicalPlan, Vec<Step>)> {
    let mut steps = Vec::new();
    let plan = match outer_steps(&plan) {
        0 => plan,
        1 => {
            plan.transform_down(|node| {
                if !is_step(&node) {
                    return Ok(Transformed::no(node));
                }
                let inputs = node
                    .inputs()
                    .into_iter()
                    .map(|input| cut_every_step(table, input.clone(), &mut steps, register))
                    .collect::<Result<Vec<_>>>()?;
                let node = node.with_new_exprs(node.expressions(), inputs)?;
                Ok(Transformed::new(node, true, TreeNodeRecursion::Jump))
            })?
            .data
        }
        _ => cut_every_step(table, plan, &mut steps, register)?,
    };
    Ok((plan, steps))
}

/// Steps of `plan` with no step above them.
fn outer_steps(plan: &LogicalPlan) -> usize {
    let mut count = 0;
    let _ = plan.apply(|node| {
        if is_step(node) {
            count += 1;
            return Ok(TreeNodeRecursion::Jump);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    count
}

/// Replaces every step of `plan` (innermost first) with a scan of its own hidden node.
fn cut_every_step(
    table: &str,
    plan: LogicalPlan,
    steps: &mut Vec<Step>,
    register: &mut RegisterStep<'_>,
) -> Result<LogicalPlan> {
    let plan = plan.transform_up(|node| {
        if !is_step(&node) {
            return Ok(Transformed::no(node));
        }
        let name = format!("{table}__step{}", steps.len() + 1);
        let schema = Arc::clone(node.schema());
        let source = register(&name, Arc::new(schema.as_arrow().clone()))?;
        steps.push(Step {
            name: name.clone(),
            plan: node,
        });
        Ok(Transformed::yes(scan_as(&name, source, &schema)?))
    })?;
    Ok(plan.data)
}

/// A scan of stream `name` whose columns carry the names and qualifiers of `schema`, so the
/// plan above reads it as it read the step.
fn scan_as(name: &str, source: Arc<dyn TableSource>, schema: &DFSchemaRef) -> Result<LogicalPlan> {
    let reference = TableReference::from(name);
    let columns = schema.iter().map(|(qualifier, field)| {
        Expr::Column(Column::new(Some(reference.clone()), field.name()))
            .alias_qualified(qualifier.cloned(), field.name())
    });
    LogicalPlanBuilder::scan(reference.clone(), source, None)?
        .project(columns)?
        .build()
}

/// Wraps every `ROW_NUMBER() OVER (PARTITION BY keys [ORDER BY time])` window that a
/// `WHERE rn = 1` keeps in a [`DedupeNode`]: the Flink / RisingWave deduplication. Keys are
/// remembered for `horizon_ms` after their event time; without an ORDER BY, the first of
/// `time_columns` (the sources' watermark columns) the rows have is their event time.
pub fn mark_dedupe_steps(
    plan: LogicalPlan,
    horizon_ms: i64,
    time_columns: &[String],
) -> std::result::Result<LogicalPlan, StepError> {
    let plan = plan.transform_up(|node| {
        let LogicalPlan::Filter(filter) = &node else {
            return Ok(Transformed::no(node));
        };
        let dedupe = Dedupe {
            horizon_ms,
            time_columns,
        };
        // `rn = 1` alone or as one conjunct (`WHERE amount > 0 AND rn = 1`).
        for conjunct in split_conjunction(&filter.predicate) {
            let Some(column) = row_number_is_one(conjunct) else {
                continue;
            };
            if let Some(input) = dedupe.wrap(filter.input.as_ref(), &column)? {
                return Ok(Transformed::yes(LogicalPlan::Filter(Filter::try_new(
                    filter.predicate.clone(),
                    Arc::new(input),
                )?)));
            }
        }
        Ok(Transformed::no(node))
    })?;
    Ok(plan.data)
}

/// The column of `rn = 1` (or `rn <= 1`, `1 = rn`).
fn row_number_is_one(predicate: &Expr) -> Option<Column> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = predicate else {
        return None;
    };
    let is_one = |e: &Expr| match e {
        Expr::Literal(v, _) => {
            v.cast_to(&DataType::Int64).ok() == Some(ScalarValue::Int64(Some(1)))
        }
        _ => false,
    };
    match (left.as_ref(), op, right.as_ref()) {
        (Expr::Column(c), Operator::Eq | Operator::LtEq, one) if is_one(one) => Some(c.clone()),
        (one, Operator::Eq | Operator::GtEq, Expr::Column(c)) if is_one(one) => Some(c.clone()),
        _ => None,
    }
}

/// How to wrap one `ROW_NUMBER()` window.
struct Dedupe<'a> {
    horizon_ms: i64,
    time_columns: &'a [String],
}

impl Dedupe<'_> {
    /// `plan` with the window that computes `column` wrapped, following the column through
    /// projections and aliases; `None` when `column` is not such a window's.
    fn wrap(&self, plan: &LogicalPlan, column: &Column) -> Result<Option<LogicalPlan>> {
        match plan {
            LogicalPlan::Projection(p) => {
                let Ok(i) = p.schema.index_of_column(column) else {
                    return Ok(None);
                };
                let Expr::Column(inner) = p.expr[i].clone().unalias_nested().data else {
                    return Ok(None);
                };
                let Some(input) = self.wrap(&p.input, &inner)? else {
                    return Ok(None);
                };
                Ok(Some(LogicalPlan::Projection(
                    Projection::try_new_with_schema(
                        p.expr.clone(),
                        Arc::new(input),
                        Arc::clone(&p.schema),
                    )?,
                )))
            }
            LogicalPlan::SubqueryAlias(a) => {
                let inner = Column::from_name(&column.name);
                let Some(input) = self.wrap(&a.input, &inner)? else {
                    return Ok(None);
                };
                Ok(Some(LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(
                    Arc::new(input),
                    a.alias.clone(),
                )?)))
            }
            LogicalPlan::Window(w) => Ok(self.node(w, column).map(extension)),
            _ => Ok(None),
        }
    }

    /// The dedupe node for window `w` when it is one `ROW_NUMBER()` computing `column`,
    /// partitioned by columns and ordered by at most one column.
    fn node(&self, w: &Window, column: &Column) -> Option<DedupeNode> {
        let [expr] = w.window_expr.as_slice() else {
            return None;
        };
        let output = w.schema.fields().last()?;
        if output.name() != &column.name {
            return None;
        }
        let Expr::WindowFunction(f) = expr.clone().unalias_nested().data else {
            return None;
        };
        let WindowFunctionDefinition::WindowUDF(udf) = &f.fun else {
            return None;
        };
        if udf.name() != "row_number" || f.params.partition_by.is_empty() {
            return None;
        }
        let keys = f
            .params
            .partition_by
            .iter()
            .map(|e| match e {
                Expr::Column(c) => Some(c.name.clone()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let input_schema = w.input.schema();
        let (time_column, keep) = match f.params.order_by.as_slice() {
            [] => {
                let time = self
                    .time_columns
                    .iter()
                    .find(|t| input_schema.fields().iter().any(|f| f.name() == *t))
                    .cloned();
                (time, Keep::FirstArrived)
            }
            [Sort {
                expr: Expr::Column(c),
                asc,
                ..
            }] => (
                Some(c.name.clone()),
                if *asc { Keep::Earliest } else { Keep::Latest },
            ),
            _ => return None,
        };
        Some(DedupeNode {
            input: LogicalPlan::Window(w.clone()),
            keys,
            time_column,
            keep,
            horizon_ms: self.horizon_ms,
        })
    }
}

/// Rewrites every `SELECT DISTINCT ON (keys) ... ORDER BY keys, time` into the
/// `ROW_NUMBER() ... WHERE rn = 1` form, so both deduplicate through the same step. The rest
/// of `ORDER BY` after the keys (at most one column) picks the row kept.
pub fn distinct_on_as_row_number(plan: LogicalPlan) -> Result<LogicalPlan> {
    let plan = plan.transform_up(|node| {
        let LogicalPlan::Distinct(Distinct::On(on)) = &node else {
            return Ok(Transformed::no(node));
        };
        let keys = on.on_expr.len();
        let order: Vec<Sort> = match &on.sort_expr {
            Some(sorts) if sorts.len() >= keys => sorts[keys..].to_vec(),
            _ => Vec::new(),
        };
        // Without an order, a ROWS frame as SQL's `OVER (PARTITION BY ...)` gets (the
        // builder's default RANGE frame needs an ORDER BY column).
        let frame = WindowFrame::new((!order.is_empty()).then_some(false));
        let row_number = row_number()
            .partition_by(on.on_expr.clone())
            .order_by(order)
            .window_frame(frame)
            .build()?
            .alias(DISTINCT_ON_ROW_NUMBER);
        let numbered = LogicalPlanBuilder::from(on.input.as_ref().clone())
            .window(vec![row_number])?
            .filter(col(DISTINCT_ON_ROW_NUMBER).eq(lit(1u64)))?
            .build()?;
        let columns =
            on.select_expr
                .iter()
                .zip(on.schema.iter())
                .map(|(expr, (qualifier, field))| {
                    expr.clone()
                        .unalias()
                        .alias_qualified(qualifier.cloned(), field.name())
                });
        let projected = LogicalPlanBuilder::from(numbered)
            .project(columns)?
            .build()?;
        Ok(Transformed::yes(projected))
    })?;
    Ok(plan.data)
}

/// The row-number column a rewritten `DISTINCT ON` filters on.
const DISTINCT_ON_ROW_NUMBER: &str = "__weir_distinct_on_rn";
