//! Which SQL statements only read: the guard of `weir query`, the server's query route and
//! the PostgreSQL wire protocol. Tables are written by pipelines only, and no statement may
//! write files or open files outside the lake.

use datafusion::sql::sqlparser::ast::Statement;

/// Queries, EXPLAIN of a read, SHOW TABLES / COLUMNS / FUNCTIONS and DESCRIBE. `COPY TO`,
/// `INSERT`, `CREATE EXTERNAL TABLE` and the like are not: they would write files anywhere,
/// add rows behind the pipelines' transaction ids, or open arbitrary files.
pub fn is_read(statement: &Statement) -> bool {
    match statement {
        Statement::Query(_)
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ExplainTable { .. } => true,
        Statement::Explain { statement, .. } => is_read(statement),
        _ => false,
    }
}

/// A refused statement as messages name it: its first two words (`` `INSERT INTO ...` ``).
pub fn statement_kind(statement: &impl std::fmt::Display) -> String {
    let text = statement.to_string();
    let kind: Vec<&str> = text.split_whitespace().take(2).collect();
    format!("`{} ...`", kind.join(" "))
}

/// The session statements a PostgreSQL client sends on its own (psql, DBeaver, Grafana,
/// dbt): settings, `SHOW` of a setting, transactions (no-ops over a read-only lake) and
/// cursors.
pub fn is_session_statement(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Set(_)
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Declare { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. }
            | Statement::Discard { .. }
            | Statement::Deallocate { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn statement(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn reads_pass_and_writes_do_not() {
        for sql in [
            "SELECT 1",
            "EXPLAIN SELECT 1",
            "SHOW TABLES",
            "WITH a AS (SELECT 1) SELECT * FROM a",
        ] {
            assert!(is_read(&statement(sql)), "{sql}");
        }
        for sql in [
            "COPY t TO '/tmp/x.csv'",
            "INSERT INTO t VALUES (1)",
            "DELETE FROM t",
            "UPDATE t SET a = 1",
            "CREATE TABLE t (a INT)",
            "DROP TABLE t",
            "EXPLAIN INSERT INTO t VALUES (1)",
        ] {
            let parsed = statement(sql);
            assert!(!is_read(&parsed), "{sql}");
            assert!(!is_session_statement(&parsed), "{sql}");
        }
    }

    #[test]
    fn a_clients_session_statements_are_allowed() {
        for sql in [
            "SET search_path = public",
            "SHOW search_path",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
        ] {
            assert!(is_session_statement(&statement(sql)), "{sql}");
        }
    }
}
