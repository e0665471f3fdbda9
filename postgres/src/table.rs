//! The target table before the first epoch: created when missing (columns mapped from Arrow,
//! the primary key declared), checked when present (every column there, of a type that takes
//! the query's values, a unique index on the primary key), and the commit table that records
//! the last epoch each (pipeline, table) committed.

use arrow::datatypes::Schema;
use tokio_postgres::Client;

use crate::error::PostgresError;
use crate::types::{accepts, column_type, ColumnType};

/// The commit table, in the target table's schema: one row per (pipeline, table) with the
/// last epoch written, updated in the same transaction as the epoch's rows.
pub const COMMIT_TABLE: &str = "_weir_commits";

/// `schema.table` as PostgreSQL names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// The schema (`public` when the name has none).
    pub schema: String,
    /// The table.
    pub table: String,
}

impl TableName {
    /// `gold.revenue` or `revenue` (in `public`).
    pub fn parse(name: &str) -> TableName {
        match name.split_once('.') {
            Some((schema, table)) => TableName {
                schema: schema.to_string(),
                table: table.to_string(),
            },
            None => TableName {
                schema: "public".to_string(),
                table: name.to_string(),
            },
        }
    }

    /// The quoted name for SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote(&self.schema), quote(&self.table))
    }

    /// The commit table next to this one, quoted.
    pub fn commit_table(&self) -> String {
        format!("{}.{}", quote(&self.schema), quote(COMMIT_TABLE))
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// An identifier quoted for SQL (names are taken as written, case included).
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The target's columns as the query gives them, each with its PostgreSQL mapping.
pub fn mapped_columns(
    table: &str,
    schema: &Schema,
) -> Result<Vec<(String, ColumnType)>, PostgresError> {
    schema
        .fields()
        .iter()
        .map(|f| match column_type(f.data_type()) {
            Some(t) => Ok((f.name().clone(), t)),
            None => Err(PostgresError::UnsupportedType {
                table: table.to_string(),
                column: f.name().clone(),
                arrow_type: f.data_type().to_string(),
            }),
        })
        .collect()
}

/// Creates the table (and its schema) when missing, otherwise checks it; then creates the
/// commit table when missing.
pub async fn prepare(
    client: &Client,
    place: &str,
    name: &TableName,
    columns: &[(String, ColumnType)],
    primary_key: &[String],
) -> Result<(), PostgresError> {
    let existing = existing_columns(client, place, name).await?;
    if existing.is_empty() {
        create(client, place, name, columns, primary_key).await?;
    } else {
        check(name, columns, &existing)?;
        if !primary_key.is_empty() {
            check_unique(client, place, name, primary_key).await?;
        }
    }
    let commits = format!(
        "CREATE TABLE IF NOT EXISTS {} (pipeline text NOT NULL, table_name text NOT NULL, \
         epoch bigint NOT NULL, committed_at timestamptz NOT NULL DEFAULT now(), \
         PRIMARY KEY (pipeline, table_name))",
        name.commit_table()
    );
    client
        .batch_execute(&commits)
        .await
        .map_err(|e| PostgresError::server(place, "create the commit table", e))
}

async fn existing_columns(
    client: &Client,
    place: &str,
    name: &TableName,
) -> Result<Vec<(String, String)>, PostgresError> {
    let rows = client
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            &[&name.schema, &name.table],
        )
        .await
        .map_err(|e| PostgresError::server(place, &format!("read the columns of {name}"), e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn create(
    client: &Client,
    place: &str,
    name: &TableName,
    columns: &[(String, ColumnType)],
    primary_key: &[String],
) -> Result<(), PostgresError> {
    let mut definitions: Vec<String> = columns
        .iter()
        .map(|(column, t)| {
            let not_null = if primary_key.contains(column) {
                " NOT NULL"
            } else {
                ""
            };
            format!("{} {}{not_null}", quote(column), t.declared)
        })
        .collect();
    if !primary_key.is_empty() {
        let keys: Vec<String> = primary_key.iter().map(|k| quote(k)).collect();
        definitions.push(format!("PRIMARY KEY ({})", keys.join(", ")));
    }
    let sql = format!(
        "CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE IF NOT EXISTS {} ({})",
        quote(&name.schema),
        name.quoted(),
        definitions.join(", ")
    );
    tracing::info!("creating PostgreSQL table {name} on {place}");
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| PostgresError::server(place, &format!("create table {name}"), e))
}

/// Every column of the query is in the table with a type that takes its values.
fn check(
    name: &TableName,
    columns: &[(String, ColumnType)],
    existing: &[(String, String)],
) -> Result<(), PostgresError> {
    for (column, t) in columns {
        match existing.iter().find(|(c, _)| c == column) {
            None => {
                return Err(PostgresError::MissingColumn {
                    table: name.to_string(),
                    column: column.clone(),
                    arrow_type: format!("{:?}", t.arrow),
                    declared: t.declared.clone(),
                })
            }
            Some((_, found)) if !accepts(found, t) => {
                return Err(PostgresError::ColumnType {
                    table: name.to_string(),
                    column: column.clone(),
                    existing: found.clone(),
                    arrow_type: format!("{:?}", t.arrow),
                    declared: t.declared.clone(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// An upsert needs a unique index on exactly the primary key's columns.
async fn check_unique(
    client: &Client,
    place: &str,
    name: &TableName,
    primary_key: &[String],
) -> Result<(), PostgresError> {
    let rows = client
        .query(
            "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = $1::text::regclass AND i.indisunique GROUP BY i.indexrelid",
            &[&name.quoted()],
        )
        .await
        .map_err(|e| PostgresError::server(place, &format!("read the indexes of {name}"), e))?;
    let mut wanted = primary_key.to_vec();
    wanted.sort();
    if rows.iter().any(|r| r.get::<_, Vec<String>>(0) == wanted) {
        return Ok(());
    }
    Err(PostgresError::PrimaryKey {
        table: name.to_string(),
        reason: format!(
            "primary_key = '{}' needs a primary key or unique index on exactly those columns \
             for its upserts; add one (ALTER TABLE {} ADD PRIMARY KEY ({})) or change \
             primary_key",
            primary_key.join(","),
            name,
            primary_key.join(", ")
        ),
    })
}

/// The last epoch of `pipeline` the table committed, from the commit table.
pub async fn last_epoch(
    client: &Client,
    place: &str,
    name: &TableName,
    pipeline: &str,
) -> Result<Option<u64>, PostgresError> {
    let sql = format!(
        "SELECT epoch FROM {} WHERE pipeline = $1 AND table_name = $2",
        name.commit_table()
    );
    let row = client
        .query_opt(&sql, &[&pipeline, &name.to_string()])
        .await
        .map_err(|e| PostgresError::server(place, "read the commit table", e))?;
    Ok(row.map(|r| r.get::<_, i64>(0) as u64))
}
