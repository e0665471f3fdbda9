//! [`JoinNode`]: the logical plan node that marks a join of two streams as a stateful step.
//!
//! The planner wraps a `Join` whose two sides come from different streams, and whose ON
//! clause bounds one side's event time by the other's, in this node. As a batch plan the node
//! is that join unchanged; a streaming run hands the table's plan to the [`JoinOperator`] the
//! node builds, which keeps each side's rows until the watermark proves they can match
//! nothing more.

use std::fmt;

use datafusion::common::{Column, DFSchemaRef, JoinType};
use datafusion::error::{DataFusionError, Result as DataFusionResult};
use datafusion::logical_expr::{
    Expr, Join, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};

use super::{JoinConfig, JoinOperator};
use crate::operators::registry::single_input;
use crate::operators::{StatefulNode, StreamOperator, TableContext};

/// How far apart the two sides' event times may be for a pair to match: `right_time -
/// left_time` lies in `[lower_ms, upper_ms]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub struct TimeBound {
    /// The smallest `right_time - left_time` of a match (ms).
    pub lower_ms: i64,
    /// The largest (ms).
    pub upper_ms: i64,
}

impl TimeBound {
    /// How far behind the watermark the join's output event times can be: a stored row is
    /// kept until no on-time row of the other side can match it.
    pub fn output_delay_ms(&self) -> i64 {
        self.upper_ms.max(-self.lower_ms).max(0)
    }
}

/// A join of two streams as one step of a table's logical plan: `input` is the `Join`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct JoinNode {
    /// The join of the two streams.
    pub input: LogicalPlan,
    /// The left side's event-time column (in the left input's schema).
    pub left_time: Column,
    /// The right side's event-time column.
    pub right_time: Column,
    /// How far apart the two event times may be.
    pub bound: TimeBound,
}

impl JoinNode {
    /// The node type's name in plans (`weir explain`).
    pub const NAME: &'static str = "IntervalJoinOperator";

    /// The node as a stateful step, if it is a join node (the operator registry's entry).
    pub fn stateful(node: &dyn UserDefinedLogicalNode) -> Option<&dyn StatefulNode> {
        node.as_any()
            .downcast_ref::<JoinNode>()
            .map(|n| n as &dyn StatefulNode)
    }

    /// The wrapped join.
    pub fn join(&self) -> DataFusionResult<&Join> {
        match &self.input {
            LogicalPlan::Join(join) => Ok(join),
            _ => Err(DataFusionError::Internal(format!(
                "{} wraps a join",
                Self::NAME
            ))),
        }
    }

    /// The join as a person reads it (`LEFT join: c.ts - a.ts in [0s, 30m]`).
    pub fn definition(&self) -> String {
        let kind = self
            .join()
            .map_or("?".to_string(), |j| join_kind(j.join_type));
        format!(
            "{kind} interval join: {} - {} within [{}, {}]",
            self.right_time.flat_name(),
            self.left_time.flat_name(),
            duration(self.bound.lower_ms),
            duration(self.bound.upper_ms)
        )
    }
}

/// `INNER`, `LEFT OUTER`, ... as SQL writes it.
pub fn join_kind(join_type: JoinType) -> String {
    match join_type {
        JoinType::Inner => "INNER".to_string(),
        JoinType::Left => "LEFT OUTER".to_string(),
        JoinType::Right => "RIGHT OUTER".to_string(),
        JoinType::Full => "FULL OUTER".to_string(),
        other => other.to_string().to_uppercase(),
    }
}

/// `30m`, `-5s`, `1h30m`, `250ms`.
fn duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let sign = if ms < 0 { "-" } else { "" };
    let mut rest = ms.unsigned_abs();
    let mut out = String::from(sign);
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if rest > 0 {
        out.push_str(&format!("{rest}ms"));
    }
    out
}

impl UserDefinedLogicalNodeCore for JoinNode {
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
        Ok(JoinNode {
            input,
            ..self.clone()
        })
    }
}

impl StatefulNode for JoinNode {
    fn describe(&self) -> String {
        self.definition()
    }

    fn state(&self) -> &'static str {
        "each side's rows until the watermark passes their time bound"
    }

    fn needs_watermark(&self) -> bool {
        true
    }

    fn usage(&self) -> &'static str {
        "join two streams on keys and an event-time bound: FROM added a LEFT JOIN checkouts c \
         ON a.user_id = c.user_id AND c.ts BETWEEN a.ts AND a.ts + INTERVAL '30 minutes'"
    }

    fn operator(&self, table: &TableContext) -> Box<dyn StreamOperator> {
        Box::new(JoinOperator::new(JoinConfig {
            left_time: self.left_time.clone(),
            right_time: self.right_time.clone(),
            bound: self.bound,
            definition: self.definition(),
            late_rows_to: table.late_rows_to.clone(),
        }))
    }
}
