//! Spark-style windows in GROUP BY, so Spark jobs port by copying their expressions:
//!
//! ```sql
//! SELECT window.start, window.end, product_id, sum(amount)
//! FROM events GROUP BY window(event_time, '10 minutes' [, '5 minutes']), product_id
//! ```
//!
//! `window(col, size)` is a tumbling window and `window(col, size, slide)` a sliding one, as in
//! Spark; `session_window(col, gap)` is a session window per the other group keys (exposed as
//! `session_window.start` / `.end`; a session ends `gap` after its last event). The statement is rewritten into the FROM form (`TUMBLE` / `HOP`), grouped by
//! `window_start, window_end`; `window.start` / `window.end` become those columns (named `start`
//! and `end` in the output, as Spark names them), and a bare `window` becomes a struct with
//! fields `start` and `end`. The same window operator then runs both syntaxes.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    Ident, ObjectName, Query, Select, SelectItem, SetExpr, TableFactor, TableFunctionArgs,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Span;

use crate::parser::object_name_to_string;
use crate::windows::WindowError;

/// How to write a Spark window, for hints.
const USAGE: &str = "GROUP BY window(time_column, '10 minutes' [, '5 minutes' /* slide */ [, '1 minute' /* startTime */]]), key \
    or GROUP BY session_window(time_column, '30 minutes'), key";

/// Rewrites every `GROUP BY window(...)` of `query` (including subqueries in FROM) into the
/// TUMBLE / HOP form.
pub fn rewrite_spark_windows(query: &mut Query) -> Result<(), WindowError> {
    rewrite_set_expr(&mut query.body)?;
    if let Some(with) = &mut query.with {
        for cte in &mut with.cte_tables {
            rewrite_spark_windows(&mut cte.query)?;
        }
    }
    Ok(())
}

fn rewrite_set_expr(body: &mut SetExpr) -> Result<(), WindowError> {
    match body {
        SetExpr::Select(select) => rewrite_select(select),
        SetExpr::Query(q) => rewrite_spark_windows(q),
        SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_expr(left)?;
            rewrite_set_expr(right)
        }
        _ => Ok(()),
    }
}

/// `SELECT ... FROM x GROUP BY window(ts, ...), k` becomes `... FROM TUMBLE(x, ts, ...) AS x
/// GROUP BY window_start, window_end, k`, with `window.start` / `window.end` renamed.
fn rewrite_select(select: &mut Select) -> Result<(), WindowError> {
    for table in &mut select.from {
        if let TableFactor::Derived { subquery, .. } = &mut table.relation {
            rewrite_spark_windows(subquery)?;
        }
    }
    let GroupByExpr::Expressions(exprs, _) = &mut select.group_by else {
        return Ok(());
    };
    let Some(position) = exprs.iter().position(|e| spark_window_call(e).is_some()) else {
        return Ok(());
    };
    let Some((span, struct_name, args)) = spark_window_call(&exprs[position]) else {
        return Ok(());
    };
    let error = |message: &str| WindowError {
        span,
        message: message.to_string(),
        hint: USAGE.to_string(),
    };
    let session = struct_name == "session_window";
    check_arity(session, args.len(), &error)?;
    if exprs
        .iter()
        .filter(|e| spark_window_call(e).is_some())
        .count()
        > 1
    {
        return Err(error("GROUP BY has more than one window"));
    }
    let [single] = select.from.as_mut_slice() else {
        return Err(error(
            "window() in GROUP BY needs exactly one source, table or view in FROM",
        ));
    };
    if !single.joins.is_empty() {
        return Err(error(
            "window() in GROUP BY cannot window a join yet; join in a view and window the view",
        ));
    }
    let TableFactor::Table {
        name,
        args: table_args @ None,
        ..
    } = &mut single.relation
    else {
        return Err(error(
            "window() in GROUP BY needs a named source, table or view in FROM (name a subquery with CREATE VIEW)",
        ));
    };
    let input = Expr::CompoundIdentifier(
        name.0
            .iter()
            .filter_map(|p| p.as_ident().cloned())
            .collect(),
    );
    let (function, function_args) = table_function(session, input, &args);
    let alias_name = object_name_to_string(name);
    *table_args = Some(TableFunctionArgs {
        args: function_args
            .into_iter()
            .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
            .collect(),
        settings: None,
    });
    *name = ObjectName::from(vec![Ident::new(function)]);
    if let TableFactor::Table { alias, .. } = &mut single.relation {
        if alias.is_none() {
            *alias = Some(datafusion::sql::sqlparser::ast::TableAlias {
                explicit: true,
                at: None,
                name: Ident::new(alias_name.rsplit('.').next().unwrap_or(&alias_name)),
                columns: Vec::new(),
            });
        }
    }
    exprs.splice(
        position..=position,
        [
            Expr::Identifier(Ident::new("window_start")),
            Expr::Identifier(Ident::new("window_end")),
        ],
    );
    for item in &mut select.projection {
        name_window_fields(item, struct_name);
    }
    let replace = |e: &mut Expr| replace_window_references(e, struct_name);
    let _ = visit_expressions_mut(&mut select.projection, replace);
    let _ = visit_expressions_mut(&mut select.having, replace);
    let _ = visit_expressions_mut(&mut select.qualify, replace);
    Ok(())
}

/// Refuses a wrong number of arguments to `window()` / `session_window()`.
fn check_arity(
    session: bool,
    count: usize,
    error: &dyn Fn(&str) -> WindowError,
) -> Result<(), WindowError> {
    if session && count != 2 {
        return Err(error(&format!(
            "session_window() takes 2 arguments (time column, gap), got {}",
            count
        )));
    }
    if !(2..=4).contains(&count) {
        return Err(error(&format!(
            "window() takes 2 to 4 arguments (time column, size [, slide [, startTime]]), got {}",
            count
        )));
    }
    Ok(())
}

/// The table function (`tumble`, `hop` or `session`) and its arguments for Spark's
/// `window(time, size[, slide[, startTime]])` or `session_window(time, gap)` over `input`.
fn table_function(session: bool, input: Expr, args: &[Expr]) -> (&'static str, Vec<Expr>) {
    // Spark: window(time, size[, slide]); HOP takes (input, time, slide, size).
    match args {
        [time, gap] if session => ("session", vec![input, time.clone(), gap.clone()]),
        [time, size] => ("tumble", vec![input, time.clone(), size.clone()]),
        [time, size, slide] => (
            "hop",
            vec![input, time.clone(), slide.clone(), size.clone()],
        ),
        // Spark's startTime is the window offset.
        [time, size, slide, start] => (
            "hop",
            vec![
                input,
                time.clone(),
                slide.clone(),
                size.clone(),
                start.clone(),
            ],
        ),
        _ => unreachable!("argument count checked above"),
    }
}

/// `window(...)` or `session_window(...)` in GROUP BY: its position, the name of the struct
/// column it exposes, and its arguments.
fn spark_window_call(expr: &Expr) -> Option<(Span, &'static str, Vec<Expr>)> {
    let Expr::Function(f) = expr else { return None };
    let struct_name = match object_name_to_string(&f.name).as_str() {
        "window" => "window",
        "session_window" => "session_window",
        _ => return None,
    };
    let span = f
        .name
        .0
        .first()
        .and_then(|p| p.as_ident())
        .map(|i| i.span)
        .unwrap_or(Span::empty());
    let args = match &f.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((span, struct_name, args))
}

/// Gives an unnamed `window.start`, `window.end` or `window` in SELECT Spark's output name.
fn name_window_fields(item: &mut SelectItem, struct_name: &str) {
    let SelectItem::UnnamedExpr(expr) = item else {
        return;
    };
    let name = match window_reference(expr, struct_name) {
        Some(WindowRef::Start) => "start",
        Some(WindowRef::End) => "end",
        Some(WindowRef::Whole) => struct_name,
        None => return,
    };
    *item = SelectItem::ExprWithAlias {
        expr: expr.clone(),
        alias: Ident::new(name),
    };
}

enum WindowRef {
    Start,
    End,
    Whole,
}

fn window_reference(expr: &Expr, struct_name: &str) -> Option<WindowRef> {
    match expr {
        Expr::Identifier(i) if i.value.eq_ignore_ascii_case(struct_name) => Some(WindowRef::Whole),
        Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
            if !parts[0].value.eq_ignore_ascii_case(struct_name) {
                return None;
            }
            match parts[1].value.to_ascii_lowercase().as_str() {
                "start" => Some(WindowRef::Start),
                "end" => Some(WindowRef::End),
                _ => None,
            }
        }
        _ => None,
    }
}

fn replace_window_references(expr: &mut Expr, struct_name: &str) -> ControlFlow<()> {
    match window_reference(expr, struct_name) {
        Some(WindowRef::Start) => *expr = Expr::Identifier(Ident::new("window_start")),
        Some(WindowRef::End) => *expr = Expr::Identifier(Ident::new("window_end")),
        Some(WindowRef::Whole) => {
            if let Ok(e) = Parser::new(&GenericDialect {})
                .try_with_sql("named_struct('start', window_start, 'end', window_end)")
                .and_then(|mut p| p.parse_expr())
            {
                *expr = e;
            }
        }
        None => {}
    }
    ControlFlow::Continue(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(sql: &str) -> Result<String, WindowError> {
        let mut q = Parser::new(&GenericDialect {})
            .try_with_sql(sql)
            .unwrap()
            .parse_query()
            .unwrap();
        rewrite_spark_windows(&mut q)?;
        Ok(q.to_string())
    }

    #[test]
    fn tumbling_window_becomes_tumble_with_spark_names() {
        let sql = rewrite(
            "SELECT window.start, window.end, k, count(*) AS n FROM ev \
             GROUP BY window(ts, '1 minute'), k HAVING count(*) > 1",
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT window_start AS start, window_end AS end, k, count(*) AS n \
             FROM tumble(ev, ts, '1 minute') AS ev \
             GROUP BY window_start, window_end, k HAVING count(*) > 1"
        );
    }

    #[test]
    fn sliding_window_becomes_hop_with_slide_first_and_a_struct() {
        let sql = rewrite(
            "SELECT window, count(*) FROM ev AS e GROUP BY window(ts, '15 minutes', '5 minutes')",
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT named_struct('start', window_start, 'end', window_end) AS window, count(*) \
             FROM hop(ev, ts, '5 minutes', '15 minutes') AS e GROUP BY window_start, window_end"
        );
    }

    #[test]
    fn session_window_becomes_session() {
        let sql = rewrite(
            "SELECT user_id, session_window.start, session_window.end, count(*) FROM ev \
             GROUP BY session_window(ts, INTERVAL '30 minutes'), user_id",
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT user_id, window_start AS start, window_end AS end, count(*) \
             FROM session(ev, ts, INTERVAL '30 minutes') AS ev \
             GROUP BY window_start, window_end, user_id"
        );
        let e = rewrite("SELECT 1 FROM ev GROUP BY session_window(ts, '1 minute', '2 minutes')")
            .unwrap_err();
        assert!(e.message.contains("gap"), "{}", e.message);
    }

    #[test]
    fn mistakes_are_explained() {
        let e = rewrite("SELECT count(*) FROM ev GROUP BY window(ts)").unwrap_err();
        assert!(e.message.contains("2 to 4 arguments"), "{}", e.message);
        let e =
            rewrite("SELECT count(*) FROM a JOIN b ON a.x = b.x GROUP BY window(ts, '1 minute')")
                .unwrap_err();
        assert!(e.message.contains("join"), "{}", e.message);
        assert!(rewrite("SELECT count(*) FROM ev GROUP BY k").is_ok());
    }
}
