//! The stateful steps of a table's logical plan.
//!
//! [`mark_window_steps`] wraps the aggregate over each window function's rows in the window
//! operator's node (`weir_engine::operators::window::node::WindowNode`), so a step is found by
//! its node type. [`split_steps`] then gives a table whose plan holds several steps in sequence
//! (a window over a window, in one query) a chain of hidden nodes, one step each: every runtime
//! node runs at most one operator, and each step downstream of another judges lateness by the
//! previous epoch's watermark, as a window over another table's window does.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef, TableReference};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, LogicalPlanBuilder, TableSource, UserDefinedLogicalNode,
};
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
            let found = markers_below(node.inputs()[0], windows.len());
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
        let in_main_tree = count_markers(&plan, windows.len());
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

/// The window markers in `plan` that no step below has taken yet.
fn markers_below(plan: &LogicalPlan, windows: usize) -> Vec<usize> {
    let mut found = Vec::new();
    let _ = plan.apply(|node| {
        if is_step(node) {
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

fn count_markers(plan: &LogicalPlan, windows: usize) -> usize {
    let mut count = 0;
    let _ = plan.apply(|node| {
        if let LogicalPlan::SubqueryAlias(alias) = node {
            if (0..windows).any(|i| alias.alias.table() == window_marker(i)) {
                count += 1;
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    count
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
