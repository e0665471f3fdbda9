//! [`WindowNode`]: the logical plan node that marks a window aggregate as a stateful step.
//!
//! The planner wraps the `Aggregate` of every TUMBLE / HOP / SESSION in one, so the stateful
//! steps of a table are found by node type, not by where its aggregates happen to sit. A batch
//! plan of the node is its aggregate unchanged (see `operators::StatefulStepPlanner`); a
//! streaming run hands the table's plan to the [`WindowOperator`] the node builds.

use std::fmt;

use datafusion::common::DFSchemaRef;
use datafusion::error::Result as DataFusionResult;
use datafusion::logical_expr::{
    Expr, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};

use super::{WindowConfig, WindowOperator};
use crate::operators::registry::single_input;
use crate::operators::{StatefulNode, StreamOperator, TableContext};

/// A window over event time, as the planner read it from SQL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct WindowDefinition {
    /// The window as a person reads it (`TUMBLE on ts: size 1min`); checkpoints refuse state
    /// built for another definition.
    pub description: String,
    /// The event-time column the window reads (late rows' `event_time`).
    pub time_column: String,
    /// The column that ends a window; a window is final once the watermark passes it.
    pub window_end: String,
    /// Session windows: overlapping windows of the same keys merge.
    pub sessions: bool,
}

/// A windowed aggregate as one step of a table's logical plan: `input` is the `Aggregate`
/// over the window's rows; the node's output is the aggregate's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct WindowNode {
    /// The aggregate over the window's rows (grouped by `window_start`, `window_end`, keys).
    pub input: LogicalPlan,
    /// Which window.
    pub window: WindowDefinition,
}

impl WindowNode {
    /// The node type's name in plans (`weir explain`).
    pub const NAME: &'static str = "WindowOperator";

    /// Wraps a window aggregate.
    pub fn new(input: LogicalPlan, window: WindowDefinition) -> Self {
        WindowNode { input, window }
    }

    /// The node as a stateful step, if it is a window node (the operator registry's entry).
    pub fn stateful(node: &dyn UserDefinedLogicalNode) -> Option<&dyn StatefulNode> {
        node.as_any()
            .downcast_ref::<WindowNode>()
            .map(|n| n as &dyn StatefulNode)
    }
}

impl UserDefinedLogicalNodeCore for WindowNode {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}: {}; state: one row per open (window, keys) group",
            Self::NAME,
            self.window.description
        )
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        inputs: Vec<LogicalPlan>,
    ) -> DataFusionResult<Self> {
        let input = single_input(Self::NAME, inputs)?;
        Ok(WindowNode::new(input, self.window.clone()))
    }

    /// The output is the input's columns, so a column the plan above does not use is not
    /// needed from the aggregate either (the optimizer prunes unused aggregates as before).
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        Some(vec![output_columns.to_vec()])
    }
}

impl StatefulNode for WindowNode {
    fn describe(&self) -> String {
        format!("window {}", self.window.description)
    }

    fn state(&self) -> &'static str {
        "one row per open (window, keys) group"
    }

    fn needs_watermark(&self) -> bool {
        true
    }

    fn usage(&self) -> &'static str {
        "aggregate per window: SELECT window_start, window_end, key, count(*) FROM TUMBLE(...) \
         GROUP BY window_start, window_end, key"
    }

    fn operator(&self, table: &TableContext) -> Box<dyn StreamOperator> {
        Box::new(WindowOperator::new(WindowConfig {
            window_end: self.window.window_end.clone(),
            sessions: self.window.sessions,
            update_mode: table.update_mode,
            time_column: self.window.time_column.clone(),
            window: self.window.description.clone(),
            late_rows_to: table.late_rows_to.clone(),
        }))
    }
}
