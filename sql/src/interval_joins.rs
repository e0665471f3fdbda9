//! Joins of two streams, planned as interval joins: the join of two different streams (see
//! `stream_joins`) is wrapped in the join operator's node
//! (`weir_engine::operators::join::node::JoinNode`) when its ON clause has equality keys and
//! bounds one side's event time by the other's (`c.ts BETWEEN a.ts AND a.ts + INTERVAL '30
//! minutes'`, or `a.window_end = b.window_end` for windows of the same size). Without a bound
//! both sides' rows would have to be kept forever and an outer join could never emit, so such
//! a join is refused with the bound to add.
//!
//! Which columns are event times is traced through the plan: a source's watermark column,
//! the `window_end` of a window's output, and any column that is one of those passed on.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, JoinType, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, Distinct, Expr, Extension, Join, LogicalPlan, Operator,
};
use weir_engine::operators::dedupe::node::DedupeNode;
use weir_engine::operators::join::node::{join_kind, JoinNode, TimeBound};
use weir_engine::operators::window::node::WindowNode;

use crate::stream_joins::{names, plan_origins, Origins};

/// The event-time columns of each stream (sources and planned nodes), by stream name.
pub type EventColumns = HashMap<String, BTreeSet<String>>;

/// Why a join of two streams cannot run.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// No bound on how far apart the two sides' event times may be.
    #[error(
        "joins {left} with {right}, two unbounded streams, without a bound on how far apart \
         their event times may be: every row of both would be kept forever, and an outer join \
         could never emit its unmatched rows"
    )]
    NoTimeBound {
        /// The left side's streams.
        left: String,
        /// The right side's.
        right: String,
        /// What to add.
        hint: String,
    },
    /// A join type the operator does not run.
    #[error("is a {0} join of two streams; only INNER, LEFT, RIGHT and FULL OUTER joins are")]
    Unsupported(String),
    /// No equality of keys between the sides.
    #[error("joins {left} with {right} with no equality of keys between them in its ON clause")]
    NoKeys {
        /// The left side's streams.
        left: String,
        /// The right side's.
        right: String,
    },
    /// A bound that no pair satisfies.
    #[error("bounds the event times so that no pair can match ({0})")]
    EmptyBound(String),
    /// DataFusion refused the plan.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}

impl JoinError {
    /// What to write instead.
    pub fn hint(&self) -> String {
        match self {
            JoinError::NoTimeBound { hint, .. } => hint.clone(),
            JoinError::Unsupported(_) => {
                "write the join as INNER, LEFT, RIGHT or FULL OUTER JOIN with a time bound".into()
            }
            JoinError::NoKeys { .. } => {
                "join on a key both streams have, in JOIN ... ON (a comma join's WHERE is not \
                 read as one): ON a.user_id = c.user_id AND c.ts BETWEEN a.ts AND a.ts + \
                 INTERVAL '30 minutes'"
                    .into()
            }
            JoinError::EmptyBound(_) => "check the order of the BETWEEN bounds".into(),
            JoinError::DataFusion(_) => String::new(),
        }
    }
}

/// A plan with its stream joins marked.
pub struct MarkedJoins {
    /// The plan, each interval join wrapped in a [`JoinNode`].
    pub plan: LogicalPlan,
    /// Joins of a stream with itself that have no time bound and stay per epoch (a row
    /// meets only rows of its own epoch), by the streams they read.
    pub per_epoch_self_joins: Vec<String>,
}

/// Wraps every join of two different streams in `plan` (innermost first) in a [`JoinNode`],
/// and every join of a stream with itself that has a time bound (an add and a later checkout
/// of the same events); a self-join without one stays per epoch and is reported.
pub fn mark_join_steps(
    plan: LogicalPlan,
    origins: &Origins,
    events: &EventColumns,
) -> Result<MarkedJoins, JoinError> {
    let mut failed = None;
    let mut per_epoch_self_joins = Vec::new();
    let plan = plan
        .transform_up(|node| {
            let LogicalPlan::Join(join) = &node else {
                return Ok(Transformed::no(node));
            };
            let left = plan_origins(&join.left, origins)?;
            let right = plan_origins(&join.right, origins)?;
            if left.is_empty() || right.is_empty() {
                return Ok(Transformed::no(node));
            }
            match (join_node(join, events, (&left, &right)), left == right) {
                (Ok(step), _) => Ok(Transformed::yes(LogicalPlan::Extension(Extension {
                    node: Arc::new(step),
                }))),
                (Err(_), true) => {
                    per_epoch_self_joins.push(names(&left));
                    Ok(Transformed::no(node))
                }
                (Err(e), false) => {
                    failed = Some(e);
                    Ok(Transformed::no(node))
                }
            }
        })?
        .data;
    match failed {
        Some(e) => Err(e),
        None => Ok(MarkedJoins {
            plan,
            per_epoch_self_joins,
        }),
    }
}

/// The join node for `join`, or why it cannot be one.
fn join_node(
    join: &Join,
    events: &EventColumns,
    (left, right): (&BTreeSet<String>, &BTreeSet<String>),
) -> Result<JoinNode, JoinError> {
    if !matches!(
        join.join_type,
        JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
    ) {
        return Err(JoinError::Unsupported(join_kind(join.join_type)));
    }
    let conjuncts: Vec<Expr> = join
        .on
        .iter()
        .map(|(l, r)| l.clone().eq(r.clone()))
        .chain(
            join.filter
                .iter()
                .flat_map(|f| split_conjunction(f).into_iter().cloned()),
        )
        .collect();
    let sides = Sides { join, events };
    if !conjuncts.iter().any(|c| sides.is_key_equality(c)) {
        return Err(JoinError::NoKeys {
            left: names(left),
            right: names(right),
        });
    }
    let mut bounds: Vec<(Column, Column, Option<i64>, Option<i64>)> = Vec::new();
    for conjunct in &conjuncts {
        for (l, r, lower, upper) in sides.time_constraints(conjunct) {
            let at = match bounds.iter().position(|b| b.0 == l && b.1 == r) {
                Some(i) => i,
                None => {
                    bounds.push((l, r, None, None));
                    bounds.len() - 1
                }
            };
            let b = &mut bounds[at];
            if let Some(lo) = lower {
                b.2 = Some(b.2.map_or(lo, |x: i64| x.max(lo)));
            }
            if let Some(hi) = upper {
                b.3 = Some(b.3.map_or(hi, |x: i64| x.min(hi)));
            }
        }
    }
    let Some((left_time, right_time, Some(lower_ms), Some(upper_ms))) =
        bounds.into_iter().find(|b| b.2.is_some() && b.3.is_some())
    else {
        return Err(JoinError::NoTimeBound {
            left: names(left),
            right: names(right),
            hint: sides.bound_hint(),
        });
    };
    if lower_ms > upper_ms {
        return Err(JoinError::EmptyBound(format!(
            "{} - {} between {lower_ms} ms and {upper_ms} ms",
            right_time.flat_name(),
            left_time.flat_name()
        )));
    }
    Ok(JoinNode {
        input: LogicalPlan::Join(join.clone()),
        left_time,
        right_time,
        bound: TimeBound { lower_ms, upper_ms },
    })
}

/// A column of one side of a join, with the offset an expression adds to it.
struct Term {
    column: Column,
    left: bool,
    offset_ms: i64,
}

/// The two sides of one join, for reading its ON clause.
struct Sides<'a> {
    join: &'a Join,
    events: &'a EventColumns,
}

impl Sides<'_> {
    /// Which side `column` is of, and whether it is that side's event time; the column as
    /// that side's schema qualifies it.
    fn side_of(&self, column: &Column) -> Option<(Column, bool, bool)> {
        for (left, plan) in [(true, &self.join.left), (false, &self.join.right)] {
            if let Ok(i) = plan.schema().index_of_column(column) {
                let qualified = Column::from(plan.schema().qualified_field(i));
                return Some((qualified, left, is_event_time(plan, i, self.events)));
            }
        }
        None
    }

    /// `a.x = b.y` with one column of each side.
    fn is_key_equality(&self, e: &Expr) -> bool {
        let Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) = e
        else {
            return false;
        };
        let side = |e: &Expr| match e {
            Expr::Column(c) => self.side_of(c).map(|s| s.1),
            _ => None,
        };
        matches!((side(left), side(right)), (Some(a), Some(b)) if a != b)
    }

    /// An event-time column of one side plus a constant interval (`a.ts + INTERVAL '5m'`).
    fn term(&self, e: &Expr) -> Option<Term> {
        match e {
            Expr::Column(c) => {
                let (column, left, event) = self.side_of(c)?;
                event.then_some(Term {
                    column,
                    left,
                    offset_ms: 0,
                })
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (term, interval, sign) = match (op, self.term(left), self.term(right)) {
                    (Operator::Plus, Some(t), None) => (t, right, 1),
                    (Operator::Plus, None, Some(t)) => (t, left, 1),
                    (Operator::Minus, Some(t), None) => (t, right, -1),
                    _ => return None,
                };
                let ms = interval_ms(interval)?;
                Some(Term {
                    offset_ms: term.offset_ms.checked_add(sign * ms)?,
                    ..term
                })
            }
            _ => None,
        }
    }

    /// The constraints `conjunct` puts on `right_time - left_time`: (left column, right
    /// column, lower bound, upper bound).
    fn time_constraints(&self, conjunct: &Expr) -> Vec<(Column, Column, Option<i64>, Option<i64>)> {
        match conjunct {
            Expr::Between(b) if !b.negated => {
                let low = Expr::BinaryExpr(BinaryExpr::new(
                    b.expr.clone(),
                    Operator::GtEq,
                    b.low.clone(),
                ));
                let high = Expr::BinaryExpr(BinaryExpr::new(
                    b.expr.clone(),
                    Operator::LtEq,
                    b.high.clone(),
                ));
                let mut out = self.time_constraints(&low);
                out.extend(self.time_constraints(&high));
                out
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                self.comparison(left, *op, right).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    /// `a op b` as a bound on `right_time - left_time`.
    fn comparison(
        &self,
        a: &Expr,
        op: Operator,
        b: &Expr,
    ) -> Option<(Column, Column, Option<i64>, Option<i64>)> {
        let (a, b) = (self.term(a)?, self.term(b)?);
        if a.left == b.left {
            return None;
        }
        // a.col + a.off op b.col + b.off  <=>  a.col - b.col op b.off - a.off
        let d = b.offset_ms.checked_sub(a.offset_ms)?;
        // As right - left: flip when `a` is the left side.
        let (op, d, left, right) = if a.left {
            (flip(op)?, d.checked_neg()?, a.column, b.column)
        } else {
            (op, d, b.column, a.column)
        };
        let (lower, upper) = match op {
            Operator::Gt | Operator::GtEq => (Some(d), None),
            Operator::Lt | Operator::LtEq => (None, Some(d)),
            Operator::Eq => (Some(d), Some(d)),
            _ => return None,
        };
        Some((left, right, lower, upper))
    }

    /// What bound to add, naming the event-time columns the sides have.
    fn bound_hint(&self) -> String {
        let times = |plan: &LogicalPlan| -> Vec<String> {
            (0..plan.schema().fields().len())
                .filter(|&i| is_event_time(plan, i, self.events))
                .map(|i| Column::from(plan.schema().qualified_field(i)).flat_name())
                .collect()
        };
        let (l, r) = (times(&self.join.left), times(&self.join.right));
        match (l.first(), r.first()) {
            (Some(l), Some(r)) => format!(
                "bound the event times in the ON clause, for example `AND {r} BETWEEN {l} AND \
                 {l} + INTERVAL '30 minutes'`"
            ),
            _ => "both sides need an event time with a watermark (WATERMARK FOR ts AS ts - \
                  INTERVAL '...' on their sources) and a bound on it in the ON clause, for \
                  example `AND c.ts BETWEEN a.ts AND a.ts + INTERVAL '30 minutes'`"
                .to_string(),
        }
    }
}

/// `x op y` as `y op' x`.
fn flip(op: Operator) -> Option<Operator> {
    Some(match op {
        Operator::Lt => Operator::Gt,
        Operator::LtEq => Operator::GtEq,
        Operator::Gt => Operator::Lt,
        Operator::GtEq => Operator::LtEq,
        Operator::Eq => Operator::Eq,
        _ => return None,
    })
}

/// A constant interval of days and smaller units, in milliseconds.
fn interval_ms(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => (v.days
            as i64)
            .checked_mul(86_400_000)?
            .checked_add(v.nanoseconds / 1_000_000),
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => (v.days as i64)
            .checked_mul(86_400_000)?
            .checked_add(v.milliseconds as i64),
        Expr::Cast(c) => interval_ms(&c.expr),
        _ => None,
    }
}

/// Whether output column `i` of `plan` is an event time: a source's watermark column, a
/// window's `window_end`, or one of those passed on unchanged.
pub fn is_event_time(plan: &LogicalPlan, i: usize, events: &EventColumns) -> bool {
    let same_in = |input: &LogicalPlan| is_event_time(input, i, events);
    match plan {
        LogicalPlan::Projection(p) => {
            match p.expr.get(i).map(|e| e.clone().unalias_nested().data) {
                Some(Expr::Column(c)) => p
                    .input
                    .schema()
                    .index_of_column(&c)
                    .is_ok_and(|j| is_event_time(&p.input, j, events)),
                _ => false,
            }
        }
        LogicalPlan::SubqueryAlias(a) => same_in(&a.input),
        LogicalPlan::Filter(f) => same_in(&f.input),
        LogicalPlan::Sort(s) => same_in(&s.input),
        LogicalPlan::Limit(l) => same_in(&l.input),
        LogicalPlan::Repartition(r) => same_in(&r.input),
        LogicalPlan::Distinct(Distinct::All(input)) => same_in(input),
        LogicalPlan::Window(w) => i < w.input.schema().fields().len() && same_in(&w.input),
        LogicalPlan::Union(u) => u.inputs.iter().all(|input| same_in(input)),
        LogicalPlan::Join(j) => {
            let n = j.left.schema().fields().len();
            match j.join_type {
                JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => {
                    if i < n {
                        is_event_time(&j.left, i, events)
                    } else {
                        is_event_time(&j.right, i - n, events)
                    }
                }
                _ => false,
            }
        }
        LogicalPlan::Extension(e) => {
            let any = e.node.as_any();
            if let Some(w) = any.downcast_ref::<WindowNode>() {
                plan.schema().field(i).name() == &w.window.window_end
            } else if let Some(d) = any.downcast_ref::<DedupeNode>() {
                same_in(&d.input)
            } else if let Some(j) = any.downcast_ref::<JoinNode>() {
                same_in(&j.input)
            } else {
                false
            }
        }
        LogicalPlan::TableScan(scan) => {
            let name = scan.projected_schema.field(i).name();
            events
                .get(&scan.table_name.to_string())
                .is_some_and(|columns| columns.contains(name))
        }
        _ => false,
    }
}

/// The names of `plan`'s output columns that are event times.
pub fn event_time_columns(plan: &LogicalPlan, events: &EventColumns) -> BTreeSet<String> {
    plan.schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(i, _)| is_event_time(plan, *i, events))
        .map(|(_, f)| f.name().clone())
        .collect()
}
