//! Stateful steps in logical plans: the [`StatefulNode`] trait every operator's logical node
//! implements, the one list of node types Weir knows ([`STATEFUL_NODES`]), and how a batch plan
//! runs through them ([`StatefulStepPlanner`]).
//!
//! The planner marks each stateful step of a table with its operator's node (a DataFusion
//! logical extension node, one type per operator, in the operator's folder). Finding the steps
//! of a plan, building their operators and explaining them all go through this file, so a new
//! operator is its folder plus one line in [`STATEFUL_NODES`].

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DataFusionResult};
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};

use super::dedupe::node::DedupeNode;
use super::join::node::JoinNode;
use super::step_exec::StatefulStepExec;
use super::window::node::WindowNode;
use super::StreamOperator;

/// The logical node of a stateful step: what it is, and how to build its operator.
pub trait StatefulNode: Send + Sync {
    /// The step as a person reads it (`window TUMBLE on ts: size 1min`).
    fn describe(&self) -> String;

    /// What state the step keeps, for `weir explain`.
    fn state(&self) -> &'static str;

    /// Whether the step needs a watermark to ever release its rows.
    fn needs_watermark(&self) -> bool;

    /// How to write the step in SQL, for errors about it.
    fn usage(&self) -> &'static str;

    /// The operator that runs the step for a table.
    fn operator(&self, table: &TableContext) -> Box<dyn StreamOperator>;
}

/// What an operator needs to know about the table it runs in.
#[derive(Debug, Clone, Default)]
pub struct TableContext {
    /// The table's output mode is update: emit changed groups every epoch, not closed ones.
    pub update_mode: bool,
    /// The source whose dead-letter table receives late rows, when it asks for them.
    pub late_rows_to: Option<String>,
}

/// Recognises one node type: the node as a stateful step, if it is of that type.
pub type AsStatefulNode = fn(&dyn UserDefinedLogicalNode) -> Option<&dyn StatefulNode>;

/// The one input of a stateful node being rebuilt (`with_exprs_and_inputs`); `node` names it
/// in the error when there is not exactly one.
pub fn single_input(node: &str, mut inputs: Vec<LogicalPlan>) -> DataFusionResult<LogicalPlan> {
    match (inputs.pop(), inputs.is_empty()) {
        (Some(input), true) => Ok(input),
        _ => Err(DataFusionError::Internal(format!("{node} takes one input"))),
    }
}

/// Every stateful node type: one line per operator.
pub const STATEFUL_NODES: &[AsStatefulNode] = &[
    WindowNode::stateful,
    DedupeNode::stateful,
    JoinNode::stateful,
];

/// The extension node as a stateful step, if it is one.
pub fn stateful_node(node: &dyn UserDefinedLogicalNode) -> Option<&dyn StatefulNode> {
    STATEFUL_NODES.iter().find_map(|as_step| as_step(node))
}

/// A stateful step found in a plan: its extension node and the registry entry that
/// recognised it.
#[derive(Clone)]
pub struct StatefulStep {
    extension: Arc<dyn UserDefinedLogicalNode>,
    recognised_by: AsStatefulNode,
}

impl StatefulStep {
    /// The step's node.
    pub fn node(&self) -> &dyn StatefulNode {
        match (self.recognised_by)(self.extension.as_ref()) {
            Some(node) => node,
            // `collect_steps` only keeps nodes their entry recognises.
            None => unreachable!("a StatefulStep holds a node its registry entry recognises"),
        }
    }

    /// The step's extension node, to downcast to its type.
    pub fn as_extension(&self) -> &dyn UserDefinedLogicalNode {
        self.extension.as_ref()
    }
}

/// The stateful steps of `plan`, outermost first (subqueries in expressions included).
pub fn stateful_steps(plan: &LogicalPlan) -> Vec<StatefulStep> {
    let mut steps = Vec::new();
    collect_steps(plan, &mut steps);
    steps
}

fn collect_steps(plan: &LogicalPlan, steps: &mut Vec<StatefulStep>) {
    if let LogicalPlan::Extension(e) = plan {
        let entry = STATEFUL_NODES
            .iter()
            .find(|as_step| as_step(e.node.as_ref()).is_some());
        if let Some(recognised_by) = entry {
            steps.push(StatefulStep {
                extension: Arc::clone(&e.node),
                recognised_by: *recognised_by,
            });
        }
    }
    for input in plan.inputs() {
        collect_steps(input, steps);
    }
    let _ = plan.apply_subqueries(|subquery| {
        collect_steps(subquery, steps);
        Ok(TreeNodeRecursion::Jump)
    });
}

/// Plans a stateful step of one input as a [`StatefulStepExec`] over its input's physical
/// plan: run as a batch (in `weir explain`) a window node is its aggregate. The operator, not
/// this plan, keeps the state across epochs.
#[derive(Debug, Default)]
pub struct StatefulStepPlanner;

#[async_trait]
impl ExtensionPlanner for StatefulStepPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> DataFusionResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(step) = stateful_node(node) else {
            return Ok(None);
        };
        match physical_inputs {
            [input] => Ok(Some(Arc::new(StatefulStepExec::new(
                step.describe(),
                Arc::clone(input),
            )))),
            _ => Err(DataFusionError::Internal(format!(
                "{} has {} inputs; a stateful step of several inputs runs only as its own node",
                node.name(),
                physical_inputs.len()
            ))),
        }
    }
}

/// DataFusion's physical planner with the stateful steps' planner.
#[derive(Debug, Default)]
pub struct WeirQueryPlanner;

#[async_trait]
impl QueryPlanner for WeirQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> DataFusionResult<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(StatefulStepPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}
