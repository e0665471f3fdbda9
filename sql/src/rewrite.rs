//! Query rewrites applied before DataFusion plans a pipeline query.
//!
//! Metadata columns (`_source`, `_epoch`, `_file`, ...) are hidden columns, as in RisingWave:
//! `SELECT *` from a source leaves them out, naming them selects them. DataFusion has no hidden
//! columns, so `*` over a source becomes `* EXCLUDE (<metadata columns>)`.

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    ExcludeSelectItem, Ident, ObjectName, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, TableFactor, VisitMut, VisitorMut,
    WildcardAdditionalOptions,
};

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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

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
