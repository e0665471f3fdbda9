//! Refuses combinations of different streams that keep no state. A node's plan runs over each
//! epoch's rows, so a join (or a subquery) that combines two streams only ever matches rows
//! that happen to arrive in the same epoch: a row of one stream never meets a row of the other
//! that arrives later, and the answer depends on how the streams were cut into epochs. A join
//! with keys and a time bound is an interval join that keeps state (`interval_joins`); any
//! other combination of two streams is an error at plan time.
//!
//! What stays allowed: joining views of the *same* source (each epoch holds the same rows on
//! both sides, so a row-for-row join is complete), and joining a stream with constants
//! (`VALUES`, `unnest` of a literal).
//!
//! Every stream has an *origin*: a source is its own origin; a windowed table or view is its
//! own origin too (it emits a window's rows in a later epoch than the rows it read); any other
//! node has the origins of what it reads.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::logical_expr::LogicalPlan;
use weir_engine::operators::join::node::JoinNode;

/// The origins of each stream of a pipeline, by stream name.
pub type Origins = BTreeMap<String, BTreeSet<String>>;

/// Two sides of one join (or of a query and its subquery) that come from different streams.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamJoin {
    /// The origins of one side.
    pub left: BTreeSet<String>,
    /// The origins of the other.
    pub right: BTreeSet<String>,
    /// True when the two sides are a query and a subquery rather than a JOIN.
    pub subquery: bool,
}

/// The origins of everything `plan` scans (subqueries included).
pub fn plan_origins(plan: &LogicalPlan, origins: &Origins) -> Result<BTreeSet<String>> {
    let mut found = BTreeSet::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = scan.table_name.to_string();
            match origins.get(&name) {
                Some(o) => found.extend(o.iter().cloned()),
                None => {
                    found.insert(name);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(found)
}

/// The first join of `plan` whose sides come from different streams, if any.
pub fn find_stream_join(plan: &LogicalPlan, origins: &Origins) -> Result<Option<StreamJoin>> {
    // Joins the planner made interval joins (see `interval_joins`) keep state across epochs.
    let mut stateful: Vec<*const LogicalPlan> = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::Extension(e) = node {
            if let Some(j) = e.node.as_any().downcast_ref::<JoinNode>() {
                stateful.push(&j.input as *const LogicalPlan);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let mut found = None;
    plan.apply_with_subqueries(|node| {
        let (sides, subquery) = match node {
            LogicalPlan::Join(_) if stateful.contains(&(node as *const LogicalPlan)) => {
                return Ok(TreeNodeRecursion::Continue);
            }
            LogicalPlan::Join(join) => (
                vec![join.left.as_ref().clone(), join.right.as_ref().clone()],
                false,
            ),
            _ => {
                let mut sides: Vec<LogicalPlan> = node.inputs().into_iter().cloned().collect();
                let before = sides.len();
                node.apply_subqueries(|sub| {
                    sides.push(sub.clone());
                    Ok(TreeNodeRecursion::Jump)
                })?;
                if sides.len() == before {
                    return Ok(TreeNodeRecursion::Continue);
                }
                (sides, true)
            }
        };
        let mut streams: Vec<BTreeSet<String>> = Vec::new();
        for side in &sides {
            let o = plan_origins(side, origins)?;
            if !o.is_empty() {
                streams.push(o);
            }
        }
        let combines_streams = streams.iter().any(|o| o.len() > 1)
            || streams.windows(2).any(|pair| pair[0] != pair[1]);
        if combines_streams {
            let left = streams.first().cloned().unwrap_or_default();
            let right = streams
                .iter()
                .find(|o| **o != left)
                .or(streams.get(1))
                .cloned()
                .unwrap_or_default();
            found = Some(StreamJoin {
                left,
                right,
                subquery,
            });
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(found)
}

impl StreamJoin {
    /// What is wrong, for the error message.
    pub fn message(&self, node: &str) -> String {
        let what = if self.subquery {
            "a subquery combines"
        } else {
            "joins"
        };
        let sides = if self.left == self.right {
            names(&self.left)
        } else {
            format!("{} with {}", names(&self.left), names(&self.right))
        };
        format!(
            "`{node}` {what} {sides}, different streams: Weir evaluates a query over each \
             epoch's rows, so a row of one stream would never meet a row of the other that \
             arrives in a later epoch"
        )
    }

    /// What to do instead.
    pub fn hint(&self) -> &'static str {
        "join two streams with JOIN ... ON keys and an event-time bound (`AND c.ts BETWEEN \
         a.ts AND a.ts + INTERVAL '30 minutes'`), not with a subquery or without keys"
    }
}

/// `` `a` and `b` ``: streams as messages name them.
pub fn names(streams: &BTreeSet<String>) -> String {
    streams
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Where the first join (or, for `subquery`, the first subquery) of `query` is written.
pub fn join_span(
    query: &datafusion::sql::sqlparser::ast::Query,
    subquery: bool,
) -> Option<datafusion::sql::sqlparser::tokenizer::Span> {
    use datafusion::sql::sqlparser::ast::{Expr, Query, SetExpr, Spanned, Visit, Visitor};
    use datafusion::sql::sqlparser::tokenizer::Span;
    use std::ops::ControlFlow;
    struct First {
        subquery: bool,
    }
    impl Visitor for First {
        type Break = Span;
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<Span> {
            if self.subquery {
                return ControlFlow::Continue(());
            }
            if let SetExpr::Select(select) = q.body.as_ref() {
                if let Some(second) = select.from.get(1) {
                    return ControlFlow::Break(second.relation.span());
                }
                if let Some(join) = select.from.iter().flat_map(|t| t.joins.first()).next() {
                    return ControlFlow::Break(join.relation.span());
                }
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<Span> {
            match e {
                Expr::Subquery(_) | Expr::InSubquery { .. } | Expr::Exists { .. }
                    if self.subquery =>
                {
                    ControlFlow::Break(e.span())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    match query.visit(&mut First { subquery }) {
        ControlFlow::Break(span) if span != Span::empty() => Some(span),
        _ => None,
    }
}
