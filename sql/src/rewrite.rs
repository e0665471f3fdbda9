//! Query rewrites applied before DataFusion plans a pipeline query.
//!
//! Metadata columns (`_source`, `_epoch`, `_file`, ...) are hidden columns, as in RisingWave:
//! `SELECT *` from a source leaves them out, naming them selects them. DataFusion has no hidden
//! columns, so `*` over a source becomes `* EXCLUDE (<metadata columns>)`.
//!
//! EXISTS in a SELECT list becomes a correlated count, which DataFusion can run.

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, BinaryOperator, ExcludeSelectItem, Expr, GroupByExpr, Ident, ObjectName,
    Query, Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, TableFactor, Value, Visit,
    VisitMut, Visitor, VisitorMut, WildcardAdditionalOptions,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::parser::object_name_to_string;

/// Rewrites every `*` and `source.*` over a source in `query` to exclude the source's hidden
/// columns. `hidden` maps stream names to their hidden column names.
pub fn hide_metadata_columns(query: &mut Query, hidden: &HashMap<String, Vec<String>>) {
    let mut visitor = Hider { hidden };
    let _ = query.visit(&mut visitor);
}

struct Hider<'a> {
    hidden: &'a HashMap<String, Vec<String>>,
}

impl VisitorMut for Hider<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        rewrite_set_expr(&mut query.body, self.hidden);
        ControlFlow::Continue(())
    }
}

fn rewrite_set_expr(body: &mut SetExpr, hidden: &HashMap<String, Vec<String>>) {
    match body {
        SetExpr::Select(select) => rewrite_select(select, hidden),
        SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_expr(left, hidden);
            rewrite_set_expr(right, hidden);
        }
        _ => {}
    }
}

fn rewrite_select(select: &mut Select, hidden: &HashMap<String, Vec<String>>) {
    let mut all: Vec<String> = Vec::new();
    let mut by_qualifier: HashMap<String, Vec<String>> = HashMap::new();
    for from in &select.from {
        let factors = std::iter::once(&from.relation).chain(from.joins.iter().map(|j| &j.relation));
        for factor in factors {
            let TableFactor::Table { name, alias, .. } = factor else {
                continue;
            };
            let table = object_name_to_string(name);
            let Some(cols) = hidden.get(&table) else {
                continue;
            };
            for c in cols {
                if !all.contains(c) {
                    all.push(c.clone());
                }
            }
            let qualifier = match alias {
                Some(a) => a.name.value.to_ascii_lowercase(),
                None => table.clone(),
            };
            by_qualifier.insert(qualifier, cols.clone());
            if let Some(last) = table.rsplit('.').next() {
                by_qualifier
                    .entry(last.to_string())
                    .or_insert_with(|| cols.clone());
            }
        }
    }
    if all.is_empty() {
        return;
    }
    for item in &mut select.projection {
        match item {
            SelectItem::Wildcard(options) => exclude(options, &all),
            SelectItem::QualifiedWildcard(
                SelectItemQualifiedWildcardKind::ObjectName(name),
                options,
            ) => {
                if let Some(cols) = by_qualifier.get(&object_name_to_string(name)) {
                    exclude(options, cols);
                }
            }
            _ => {}
        }
    }
}

fn exclude(options: &mut WildcardAdditionalOptions, columns: &[String]) {
    let mut list = match options.opt_exclude.take() {
        None => Vec::new(),
        Some(ExcludeSelectItem::Single(n)) => vec![n],
        Some(ExcludeSelectItem::Multiple(v)) => v,
    };
    for c in columns {
        if !list.iter().any(|n| object_name_to_string(n) == *c) {
            list.push(ObjectName::from(vec![Ident::new(c.clone())]));
        }
    }
    options.opt_exclude = Some(ExcludeSelectItem::Multiple(list));
}

/// Rewrites `EXISTS (SELECT ... FROM t WHERE ...)` in SELECT lists (and CASE inside them) into
/// `(SELECT count(*) FROM t WHERE ...) > 0` (`= 0` for NOT EXISTS). DataFusion 55 turns EXISTS
/// in WHERE into a semi join but cannot run it anywhere else ("Physical plan does not support
/// logical expression Exists"), while it does run a correlated scalar count, without the count
/// bug. Subqueries that group, aggregate with HAVING, use DISTINCT or a LIMIT are left as they
/// are: their row count is not "any row matched".
pub fn exists_in_select_lists(query: &mut Query) {
    let _ = query.visit(&mut ExistsToCount);
}

struct ExistsToCount;

impl VisitorMut for ExistsToCount {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let SetExpr::Select(select) = query.body.as_mut() {
            for item in &mut select.projection {
                let expr = match item {
                    SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
                    _ => continue,
                };
                let _ = visit_expressions_mut(expr, |e: &mut Expr| {
                    if let Expr::Exists { subquery, negated } = e {
                        if let Some(count) = count_query(subquery) {
                            *e = Expr::Nested(Box::new(Expr::BinaryOp {
                                left: Box::new(Expr::Subquery(Box::new(count))),
                                op: if *negated {
                                    BinaryOperator::Eq
                                } else {
                                    BinaryOperator::Gt
                                },
                                right: Box::new(Expr::value(Value::Number("0".into(), false))),
                            }));
                        }
                    }
                    ControlFlow::<()>::Continue(())
                });
            }
        }
        ControlFlow::Continue(())
    }
}

/// `subquery` with its SELECT list replaced by `count(*)`, when its row count tells whether
/// it has any row.
fn count_query(subquery: &Query) -> Option<Query> {
    let SetExpr::Select(select) = subquery.body.as_ref() else {
        return None;
    };
    let groups = match &select.group_by {
        GroupByExpr::Expressions(exprs, modifiers) => !exprs.is_empty() || !modifiers.is_empty(),
        GroupByExpr::All(_) => true,
    };
    if groups
        || select.having.is_some()
        || select.distinct.is_some()
        || subquery.limit_clause.is_some()
        || subquery.fetch.is_some()
    {
        return None;
    }
    let mut counted = subquery.clone();
    if let SetExpr::Select(select) = counted.body.as_mut() {
        let count = Parser::new(&GenericDialect {})
            .try_with_sql("count(*)")
            .and_then(|mut p| p.parse_expr())
            .ok()?;
        select.projection = vec![SelectItem::UnnamedExpr(count)];
    }
    counted.order_by = None;
    Some(counted)
}

/// The deepest nesting of expressions in `query` (`a OR b OR c` nests 3 deep).
/// DataFusion's optimizer takes minutes over a 10,000-term OR, so the planner refuses
/// expressions deeper than [`MAX_EXPRESSION_DEPTH`].
pub fn expression_depth(query: &Query) -> usize {
    struct Depth {
        current: usize,
        max: usize,
    }
    impl Visitor for Depth {
        type Break = ();
        fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.current += 1;
            self.max = self.max.max(self.current);
            ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.current -= 1;
            ControlFlow::Continue(())
        }
    }
    let mut depth = Depth { current: 0, max: 0 };
    let _ = Visit::visit(query, &mut depth);
    depth.max
}

/// The deepest expression a query may hold (see [`expression_depth`]).
pub const MAX_EXPRESSION_DEPTH: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(sql: &str) -> String {
        let mut q = Parser::new(&GenericDialect {})
            .try_with_sql(sql)
            .unwrap()
            .parse_query()
            .unwrap();
        let hidden = HashMap::from([(
            "tx".to_string(),
            vec!["_source".to_string(), "_epoch".to_string()],
        )]);
        hide_metadata_columns(&mut q, &hidden);
        q.to_string()
    }

    #[test]
    fn star_over_a_source_hides_metadata() {
        assert_eq!(
            rewrite("SELECT *, _epoch FROM tx"),
            "SELECT * EXCLUDE (_source, _epoch), _epoch FROM tx"
        );
        assert_eq!(
            rewrite("SELECT t.* FROM tx AS t JOIN other AS o ON t.a = o.a"),
            "SELECT t.* EXCLUDE (_source, _epoch) FROM tx AS t JOIN other AS o ON t.a = o.a"
        );
        assert_eq!(rewrite("SELECT * FROM other"), "SELECT * FROM other");
        assert_eq!(
            rewrite("SELECT * FROM (SELECT * FROM tx) AS s"),
            "SELECT * FROM (SELECT * EXCLUDE (_source, _epoch) FROM tx) AS s"
        );
    }
}
