//! [`StatefulStepExec`]: where a stateful step sits in a physical plan.
//!
//! Run as a batch it passes its input through (a window step's input is its aggregate), so
//! `weir explain` and one-off queries give the batch answer. An operator finds its step by
//! this node, not by the shape of the plan around it, and replaces the node with the rows
//! its state releases; the rest of the table's plan runs over them.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

/// A stateful step in a physical plan, over the step's batch plan.
#[derive(Debug)]
pub struct StatefulStepExec {
    /// The step as a person reads it (`window TUMBLE on ts: size 1min`).
    step: String,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl StatefulStepExec {
    /// Marks `input` as the batch plan of `step`.
    pub fn new(step: String, input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = Arc::clone(input.properties());
        StatefulStepExec {
            step,
            input,
            properties,
        }
    }

    /// The step's batch plan.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// The first stateful step in `plan` (outermost), if any.
    pub fn find(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
        if plan.downcast_ref::<StatefulStepExec>().is_some() {
            return Some(Arc::clone(plan));
        }
        plan.children().into_iter().find_map(Self::find)
    }
}

impl DisplayAs for StatefulStepExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StatefulStepExec: {}", self.step)
    }
}

impl ExecutionPlan for StatefulStepExec {
    fn name(&self) -> &str {
        "StatefulStepExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(StatefulStepExec::new(self.step.clone(), input))),
            _ => Err(DataFusionError::Internal(
                "StatefulStepExec takes one input".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}

/// `plan` with the node `target` (a step found by [`StatefulStepExec::find`]) replaced by
/// `replacement`, the rows the step's operator released.
pub fn replace_step(
    plan: &Arc<dyn ExecutionPlan>,
    target: &Arc<dyn ExecutionPlan>,
    replacement: Arc<dyn ExecutionPlan>,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    if Arc::ptr_eq(plan, target) {
        return Ok(replacement);
    }
    let children: Vec<Arc<dyn ExecutionPlan>> = plan
        .children()
        .into_iter()
        .map(|c| replace_step(c, target, replacement.clone()))
        .collect::<datafusion::error::Result<_>>()?;
    if children.is_empty() {
        return Ok(plan.clone());
    }
    datafusion::physical_plan::replace_children_if_necessary(plan.clone(), children)
}

/// The rest of a table's physical plan `plan` over `rows`, the rows the operator of its step
/// `target` released this epoch.
///
/// The rows are cut into batches of the session's batch size and dealt over its target
/// partitions, so the plan above the step (projections, filters, the sink's encoding) runs on
/// every core, not over one large batch. The plan above was built for the step's batch plan,
/// whose partitioning and sort order the released rows do not have: the session's physical
/// optimizer rules run again over the new plan, adding the repartitions and sorts the nodes
/// above require (a final aggregate over hash partitions, a window over sorted rows), so a
/// node never reads rows in a shape it was not planned for.
pub fn plan_over_released(
    state: &SessionState,
    plan: &Arc<dyn ExecutionPlan>,
    target: &Arc<dyn ExecutionPlan>,
    rows: Vec<RecordBatch>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let config = state.config();
    let batch_size = config.batch_size().max(1);
    let count = config.target_partitions().max(1);
    let mut partitions: Vec<Vec<RecordBatch>> = vec![Vec::new(); count];
    let slices = rows.iter().flat_map(|batch| {
        (0..batch.num_rows())
            .step_by(batch_size)
            .map(move |start| batch.slice(start, batch_size.min(batch.num_rows() - start)))
    });
    for (i, slice) in slices.enumerate() {
        partitions[i % count].push(slice);
    }
    let input = MemorySourceConfig::try_new_exec(&partitions, target.schema(), None)?;
    let mut plan = replace_step(plan, target, input)?;
    for rule in state.physical_optimizers() {
        plan = rule.optimize(plan, state.config_options())?;
    }
    Ok(plan)
}
