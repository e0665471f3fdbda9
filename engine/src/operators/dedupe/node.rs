//! [`DedupeNode`]: the logical plan node that marks a deduplication as a stateful step.
//!
//! The planner wraps the `ROW_NUMBER() OVER (PARTITION BY keys [ORDER BY time])` window that
//! a `WHERE rn = 1` filter keeps (or the one `SELECT DISTINCT ON (keys)` plans to) in this
//! node. As a batch plan the node is that window unchanged; a streaming run hands the table's
//! plan to the [`DedupeOperator`] the node builds, which keeps the seen keys across epochs.

use std::fmt;

use datafusion::common::DFSchemaRef;
use datafusion::error::{DataFusionError, Result as DataFusionResult};
use datafusion::logical_expr::{
    Expr, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};

use super::state::Keep;
use super::{DedupeConfig, DedupeOperator};
use crate::operators::registry::single_input;
use crate::operators::{StatefulNode, StreamOperator, TableContext};

/// A deduplication as one step of a table's logical plan: `input` is the `ROW_NUMBER()`
/// window (one expression) over the rows to deduplicate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct DedupeNode {
    /// The `ROW_NUMBER()` window over the rows.
    pub input: LogicalPlan,
    /// The key columns (`PARTITION BY`), as named in the window's input.
    pub keys: Vec<String>,
    /// The event-time column (`ORDER BY`, or the input's watermark column), if any.
    pub time_column: Option<String>,
    /// Which row of a key is kept.
    pub keep: Keep,
    /// How long after its event time a key is remembered (the watermark delay).
    pub horizon_ms: i64,
}

impl DedupeNode {
    /// The node type's name in plans (`weir explain`).
    pub const NAME: &'static str = "DedupeOperator";

    /// The node as a stateful step, if it is a dedupe node (the operator registry's entry).
    pub fn stateful(node: &dyn UserDefinedLogicalNode) -> Option<&dyn StatefulNode> {
        node.as_any()
            .downcast_ref::<DedupeNode>()
            .map(|n| n as &dyn StatefulNode)
    }

    /// The rows the window numbers (the window's input).
    pub fn rows(&self) -> DataFusionResult<&LogicalPlan> {
        match &self.input {
            LogicalPlan::Window(window) => Ok(window.input.as_ref()),
            _ => Err(DataFusionError::Internal(format!(
                "{} wraps a ROW_NUMBER() window",
                Self::NAME
            ))),
        }
    }

    /// The dedupe as a person reads it (`dedupe on (id) keeping the earliest by ts`).
    pub fn definition(&self) -> String {
        let keep = match (&self.keep, &self.time_column) {
            (Keep::FirstArrived, _) => "the first to arrive".to_string(),
            (Keep::Earliest, Some(t)) => format!("the earliest by {t}"),
            (Keep::Latest, Some(t)) => format!("the latest by {t}"),
            (_, None) => "one row".to_string(),
        };
        format!("dedupe on ({}) keeping {keep}", self.keys.join(", "))
    }
}

impl UserDefinedLogicalNodeCore for DedupeNode {
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
            "{}: {}; state: {}",
            Self::NAME,
            self.definition(),
            self.state()
        )
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        inputs: Vec<LogicalPlan>,
    ) -> DataFusionResult<Self> {
        let input = single_input(Self::NAME, inputs)?;
        Ok(DedupeNode {
            input,
            ..self.clone()
        })
    }
}

impl StatefulNode for DedupeNode {
    fn describe(&self) -> String {
        self.definition()
    }

    fn state(&self) -> &'static str {
        match self.keep {
            Keep::Earliest => {
                "each key seen within the watermark, with its row until the watermark passes it"
            }
            _ => "each key seen within the watermark, with its event time",
        }
    }

    fn needs_watermark(&self) -> bool {
        self.keep == Keep::Earliest
    }

    fn usage(&self) -> &'static str {
        "deduplicate with SELECT ... FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY \
         event_time) AS rn FROM events) WHERE rn = 1, or SELECT DISTINCT ON (id) ..."
    }

    fn operator(&self, table: &TableContext) -> Box<dyn StreamOperator> {
        Box::new(DedupeOperator::new(DedupeConfig {
            rows: self.rows().ok().cloned(),
            keys: self.keys.clone(),
            time_column: self.time_column.clone(),
            keep: self.keep,
            horizon_ms: self.horizon_ms,
            definition: self.definition(),
            late_rows_to: table.late_rows_to.clone(),
        }))
    }
}
