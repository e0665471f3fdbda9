//! Column names keep their case; references to them do not need to.
//!
//! Spark users write camelCase (`eventId`, `eventTime`) and expect the JSON key, the Delta
//! column and the SQL reference to agree, with references case-insensitive as in Spark.
//! DataFusion folds unquoted identifiers to lower case and matches names exactly, so `eventId`
//! would look for a column `eventid`. Before DataFusion plans a query, this rewrite replaces
//! every identifier that names a column of the streams the query reads (or an alias the query
//! defines) with that column's exact spelling, quoted, when exactly one spelling matches
//! case-insensitively. Aliases (`AS totalRevenue`) keep their spelling too, so the tables
//! written carry the names the query gave. A name with two spellings (`id` and `ID`) is left to
//! DataFusion's own rules (quoted: exact; unquoted: lower case).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::ControlFlow;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::sql::sqlparser::ast::{
    AccessExpr, Expr, Ident, Query, SelectItem, SetExpr, TableFactor, Value, Visit, VisitMut,
    Visitor, VisitorMut,
};

/// The column names (nested fields included) a query may reference, by lower-case spelling.
#[derive(Debug, Clone, Default)]
pub struct KnownNames {
    spellings: HashMap<String, BTreeSet<String>>,
    /// Names of tables and table aliases (lower case): parts of compound identifiers that name
    /// them are qualifiers, not columns, and are left alone.
    qualifiers: HashSet<String>,
}

impl KnownNames {
    /// Adds every column of `schema`, and the fields of struct, list and map columns.
    pub fn add_schema(&mut self, schema: &Schema) {
        for field in schema.fields() {
            self.add_field(field);
        }
    }

    fn add_field(&mut self, field: &Field) {
        self.add_name(field.name());
        match field.data_type() {
            DataType::Struct(fields) => fields.iter().for_each(|f| self.add_field(f)),
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                if let DataType::Struct(fields) = f.data_type() {
                    fields.iter().for_each(|f| self.add_field(f));
                }
            }
            DataType::Map(entries, _) => {
                if let DataType::Struct(fields) = entries.data_type() {
                    // A map's value may be a struct; its `key` / `value` names are internal.
                    for f in fields.iter() {
                        if let DataType::Struct(inner) = f.data_type() {
                            inner.iter().for_each(|f| self.add_field(f));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Adds one name as written.
    pub fn add_name(&mut self, name: &str) {
        self.spellings
            .entry(name.to_lowercase())
            .or_default()
            .insert(name.to_string());
    }

    /// Adds a table name (`bronze.events`): its parts are qualifiers, not columns.
    pub fn add_table(&mut self, name: &str) {
        for part in name.split('.') {
            self.qualifiers.insert(part.to_lowercase());
        }
    }

    /// The one spelling of a name that matches `name` case-insensitively, if exactly one does.
    fn spelling(&self, name: &str) -> Option<&str> {
        let found = self.spellings.get(&name.to_lowercase())?;
        match found.len() {
            1 => found.iter().next().map(String::as_str),
            _ => None,
        }
    }

    /// Rewrites `ident` to the column's exact spelling, quoted, where that changes what
    /// DataFusion resolves it to.
    fn fix(&self, ident: &mut Ident) {
        let Some(spelling) = self.spelling(&ident.value) else {
            return;
        };
        let folded_differs = ident.quote_style.is_none() && spelling != spelling.to_lowercase();
        if ident.value != spelling || folded_differs {
            ident.value = spelling.to_string();
            ident.quote_style = Some('"');
        }
    }
}

/// Rewrites the identifiers of `query` to the exact spelling of the columns they name (see the
/// module docs). `known` holds the columns of the streams the query reads.
pub fn resolve_identifiers(query: &mut Query, known: &KnownNames) {
    let mut known = known.clone();
    let mut collect = CollectAliases(&mut known);
    let _ = Visit::visit(&*query, &mut collect);
    let mut rewrite = Rewrite(&known);
    let _ = query.visit(&mut rewrite);
}

/// Names a selected struct field after the field, as Spark does: `SELECT item.product_id`
/// gives a column `product_id` (DataFusion would call it `item[product_id]`). For
/// `table.column` the name is the column's, as before. Runs after the window rewrites, which
/// name Spark's `window.start` themselves.
pub fn name_selected_fields(query: &mut Query) {
    struct Namer;
    impl VisitorMut for Namer {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            for_each_select_item_mut(&mut query.body, &mut |item| {
                if let SelectItem::UnnamedExpr(expr @ Expr::CompoundIdentifier(_)) = item {
                    let Expr::CompoundIdentifier(parts) = &*expr else {
                        return;
                    };
                    if let Some(last) = parts.last().cloned() {
                        *item = SelectItem::ExprWithAlias {
                            expr: expr.clone(),
                            alias: last,
                        };
                    }
                }
            });
            ControlFlow::Continue(())
        }
    }
    let _ = query.visit(&mut Namer);
}

/// Adds the aliases a query defines (output columns, table aliases) to the known names.
struct CollectAliases<'a>(&'a mut KnownNames);

impl Visitor for CollectAliases<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.0.add_table(&cte.alias.name.value);
                for column in &cte.alias.columns {
                    self.0.add_name(&column.name.value);
                }
            }
        }
        for_each_select_item(&query.body, &mut |item| {
            if let SelectItem::ExprWithAlias { alias, .. } = item {
                self.0.add_name(&alias.value);
            }
        });
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        let alias = match factor {
            TableFactor::Table { alias, .. }
            | TableFactor::Derived { alias, .. }
            | TableFactor::UNNEST { alias, .. }
            | TableFactor::Function { alias, .. } => alias.as_ref(),
            _ => None,
        };
        if let Some(alias) = alias {
            self.0.add_table(&alias.name.value);
            for column in &alias.columns {
                self.0.add_name(&column.name.value);
            }
        }
        ControlFlow::Continue(())
    }
}

/// Calls `f` on every SELECT item of the selects directly in `body` (not in subqueries).
fn for_each_select_item(body: &SetExpr, f: &mut dyn FnMut(&SelectItem)) {
    match body {
        SetExpr::Select(select) => select.projection.iter().for_each(f),
        SetExpr::SetOperation { left, right, .. } => {
            for_each_select_item(left, f);
            for_each_select_item(right, f);
        }
        SetExpr::Query(q) => for_each_select_item(&q.body, f),
        _ => {}
    }
}

fn for_each_select_item_mut(body: &mut SetExpr, f: &mut dyn FnMut(&mut SelectItem)) {
    match body {
        SetExpr::Select(select) => select.projection.iter_mut().for_each(f),
        SetExpr::SetOperation { left, right, .. } => {
            for_each_select_item_mut(left, f);
            for_each_select_item_mut(right, f);
        }
        SetExpr::Query(q) => for_each_select_item_mut(&mut q.body, f),
        _ => {}
    }
}

struct Rewrite<'a>(&'a KnownNames);

impl VisitorMut for Rewrite<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        // An alias keeps its spelling: `AS totalRevenue` names the column `totalRevenue`.
        for_each_select_item_mut(&mut query.body, &mut |item| {
            if let SelectItem::ExprWithAlias { alias, .. } = item {
                if alias.quote_style.is_none() && alias.value != alias.value.to_lowercase() {
                    alias.quote_style = Some('"');
                }
            }
        });
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::Identifier(ident) => self.0.fix(ident),
            // `items[1].product_id`: DataFusion takes a field after a subscript only as a
            // string, `items[1].'product_id'`.
            Expr::CompoundFieldAccess { access_chain, .. } => {
                for access in access_chain.iter_mut() {
                    if let AccessExpr::Dot(Expr::Identifier(ident)) = access {
                        let name = self.0.spelling(&ident.value).unwrap_or(&ident.value);
                        *access = AccessExpr::Dot(Expr::value(Value::SingleQuotedString(
                            name.to_string(),
                        )));
                    }
                }
            }
            Expr::CompoundIdentifier(parts) => {
                for part in parts.iter_mut() {
                    if !self.0.qualifiers.contains(&part.value.to_lowercase()) {
                        self.0.fix(part);
                    }
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn resolve(sql: &str, columns: &[&str]) -> String {
        let mut q = Parser::new(&GenericDialect {})
            .try_with_sql(sql)
            .unwrap()
            .parse_query()
            .unwrap();
        let mut known = KnownNames::default();
        columns.iter().for_each(|c| known.add_name(c));
        known.add_table("events");
        resolve_identifiers(&mut q, &known);
        q.to_string()
    }

    #[test]
    fn references_take_the_declared_spelling() {
        assert_eq!(
            resolve(
                "SELECT eventId, EVENTTIME, \"eventid\", e.eventId AS totalId FROM events AS e \
                 WHERE amount > 1",
                &["eventId", "eventTime", "amount"]
            ),
            "SELECT \"eventId\", \"eventTime\", \"eventId\", e.\"eventId\" AS \"totalId\" \
             FROM events AS e WHERE amount > 1"
        );
    }

    #[test]
    fn two_spellings_are_left_to_datafusion() {
        assert_eq!(
            resolve("SELECT id, \"ID\" FROM events", &["id", "ID"]),
            "SELECT id, \"ID\" FROM events"
        );
    }

    #[test]
    fn aliases_are_known_to_the_rest_of_the_query() {
        assert_eq!(
            resolve(
                "SELECT totalrevenue FROM (SELECT sum(amount) AS totalRevenue FROM events) AS t",
                &["amount"]
            ),
            "SELECT \"totalRevenue\" FROM (SELECT sum(amount) AS \"totalRevenue\" FROM events) AS t"
        );
    }
}
