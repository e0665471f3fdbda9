//! One epoch in one transaction: the commit table's row for (pipeline, table) is locked and
//! read (an epoch it already holds is skipped), the rows are loaded with a binary `COPY` into a
//! temporary table, moved into the target with one `INSERT ... SELECT` (an upsert on the
//! primary key, the last row of a key winning, when there is one), the rows of replaced
//! sessions deleted, and the commit row moved to this epoch. A crash anywhere before `COMMIT`
//! leaves nothing behind; a replay after it finds the epoch and skips.

use arrow::array::RecordBatch;
use bytes::BytesMut;
use futures::SinkExt;
use tokio_postgres::{Client, Transaction};

use crate::copy::{encode_rows, header, trailer};
use crate::error::PostgresError;
use crate::table::{quote, TableName};
use crate::types::ColumnType;

/// COPY data is sent in pieces of about this size.
const CHUNK_BYTES: usize = 4 << 20;

/// Where an epoch goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// The table.
    pub name: TableName,
    /// The pipeline (the commit table's key, with the table).
    pub pipeline: String,
    /// The columns, in the query's order, with their mappings.
    pub columns: Vec<(String, ColumnType)>,
    /// Upsert keys; empty to append.
    pub primary_key: Vec<String>,
    /// `on_conflict = 'nothing'`: a key's first row stays (later rows with the key, in the
    /// same epoch or later ones, are dropped), instead of the last row winning.
    pub keep_first: bool,
}

/// What an epoch did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Written {
    /// Rows written into the table.
    pub rows: u64,
    /// For upserts, how many were new keys.
    pub inserted: Option<u64>,
    /// The table already held the epoch: nothing was written.
    pub already_committed: bool,
}

/// Why an attempt failed: the server (maybe transient) or the rows themselves.
#[derive(Debug)]
pub enum Failure {
    /// A request failed; `.0` says which.
    Server(&'static str, tokio_postgres::Error),
    /// Not worth a retry.
    Fatal(PostgresError),
}

fn server(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Failure {
    move |e| Failure::Server(what, e)
}

/// Writes `rows` (and deletes `replaced`, by primary key) as epoch `epoch`, or skips.
pub async fn write_epoch(
    client: &mut Client,
    target: &Target,
    epoch: u64,
    rows: &[RecordBatch],
    replaced: &[RecordBatch],
) -> Result<Written, Failure> {
    let tx = client.transaction().await.map_err(server("begin"))?;
    let lock = format!(
        "SELECT epoch FROM {} WHERE pipeline = $1 AND table_name = $2 FOR UPDATE",
        target.name.commit_table()
    );
    let table_key = target.name.to_string();
    let last = tx
        .query_opt(&lock, &[&target.pipeline, &table_key])
        .await
        .map_err(server("read the commit table"))?
        .map(|r| r.get::<_, i64>(0));
    if last.is_some_and(|last| last >= epoch as i64) {
        tx.rollback().await.map_err(server("roll back"))?;
        return Ok(Written {
            already_committed: true,
            ..Written::default()
        });
    }
    stage(
        &tx,
        "weir_stage",
        &target.columns,
        &target.name,
        epoch,
        rows,
    )
    .await?;
    if !target.primary_key.is_empty() && replaced.iter().any(|b| b.num_rows() > 0) {
        delete_replaced(&tx, target, epoch, replaced).await?;
    }
    let (written, inserted) = insert(&tx, target).await?;
    let mark = format!(
        "INSERT INTO {} (pipeline, table_name, epoch) VALUES ($1, $2, $3) \
         ON CONFLICT (pipeline, table_name) DO UPDATE SET epoch = EXCLUDED.epoch, \
         committed_at = now()",
        target.name.commit_table()
    );
    tx.execute(&mark, &[&target.pipeline, &table_key, &(epoch as i64)])
        .await
        .map_err(server("update the commit table"))?;
    tx.commit().await.map_err(server("commit"))?;
    Ok(Written {
        rows: written,
        inserted,
        already_committed: false,
    })
}

/// A temporary table `name` (dropped at commit) of `columns`, loaded with `rows` (whose
/// columns are those, in that order) by binary COPY.
async fn stage(
    tx: &Transaction<'_>,
    name: &str,
    columns: &[(String, ColumnType)],
    table: &TableName,
    epoch: u64,
    rows: &[RecordBatch],
) -> Result<(), Failure> {
    let definitions: Vec<String> = columns
        .iter()
        .map(|(c, t)| format!("{} {}", quote(c), t.wire.sql()))
        .collect();
    let create = format!(
        "CREATE TEMPORARY TABLE {name} ({}) ON COMMIT DROP",
        definitions.join(", ")
    );
    tx.batch_execute(&create)
        .await
        .map_err(server("create the staging table"))?;
    let names: Vec<String> = columns.iter().map(|(c, _)| quote(c)).collect();
    let types: Vec<ColumnType> = columns.iter().map(|(_, t)| t.clone()).collect();
    let copy = format!(
        "COPY {name} ({}) FROM STDIN (FORMAT binary)",
        names.join(", ")
    );
    let sink = tx.copy_in(&copy).await.map_err(server("start COPY"))?;
    futures::pin_mut!(sink);
    let mut buffer = BytesMut::with_capacity(CHUNK_BYTES + (64 << 10));
    header(&mut buffer);
    for batch in rows.iter().filter(|b| b.num_rows() > 0) {
        encode_rows(batch, &types, &mut buffer).map_err(|source| {
            Failure::Fatal(PostgresError::Encode {
                table: table.to_string(),
                epoch,
                source,
            })
        })?;
        if buffer.len() >= CHUNK_BYTES {
            let chunk = buffer.split().freeze();
            sink.send(chunk).await.map_err(server("send COPY data"))?;
        }
    }
    trailer(&mut buffer);
    sink.send(buffer.freeze())
        .await
        .map_err(server("send COPY data"))?;
    sink.finish().await.map_err(server("finish COPY"))?;
    Ok(())
}

/// Deletes the rows whose primary keys `replaced` holds (sessions merged into others).
async fn delete_replaced(
    tx: &Transaction<'_>,
    target: &Target,
    epoch: u64,
    replaced: &[RecordBatch],
) -> Result<(), Failure> {
    let keys = &target.primary_key;
    let key_columns: Vec<(String, ColumnType)> = keys
        .iter()
        .filter_map(|k| target.columns.iter().find(|(c, _)| c == k).cloned())
        .collect();
    let key_batches: Vec<RecordBatch> = replaced
        .iter()
        .map(|b| {
            let indices: Vec<usize> = keys
                .iter()
                .map(|k| b.schema().index_of(k))
                .collect::<Result<_, _>>()?;
            b.project(&indices)
        })
        .collect::<Result<_, _>>()
        .map_err(|source| {
            Failure::Fatal(PostgresError::Encode {
                table: target.name.to_string(),
                epoch,
                source,
            })
        })?;
    stage(
        tx,
        "weir_replaced",
        &key_columns,
        &target.name,
        epoch,
        &key_batches,
    )
    .await?;
    let on: Vec<String> = keys
        .iter()
        .map(|k| format!("t.{0} = r.{0}", quote(k)))
        .collect();
    let delete = format!(
        "DELETE FROM {} t USING weir_replaced r WHERE {}",
        target.name.quoted(),
        on.join(" AND ")
    );
    tx.execute(&delete, &[])
        .await
        .map_err(server("delete replaced rows"))?;
    Ok(())
}

/// Moves the staged rows into the table: appended, or upserted on the primary key (the last
/// staged row of a key wins). Returns rows written and, for upserts, how many were new.
async fn insert(tx: &Transaction<'_>, target: &Target) -> Result<(u64, Option<u64>), Failure> {
    let columns: Vec<String> = target.columns.iter().map(|(c, _)| quote(c)).collect();
    let select: Vec<String> = target
        .columns
        .iter()
        .map(|(c, t)| match t.declared.starts_with("numeric") {
            true => format!("CAST(s.{} AS {})", quote(c), t.declared),
            false => format!("s.{}", quote(c)),
        })
        .collect();
    if target.primary_key.is_empty() {
        let sql = format!(
            "INSERT INTO {} ({}) SELECT {} FROM weir_stage s",
            target.name.quoted(),
            columns.join(", "),
            select.join(", ")
        );
        let rows = tx.execute(&sql, &[]).await.map_err(server("insert rows"))?;
        return Ok((rows, None));
    }
    let keys: Vec<String> = target.primary_key.iter().map(|k| quote(k)).collect();
    let staged_keys: Vec<String> = keys.iter().map(|k| format!("s.{k}")).collect();
    let updates: Vec<String> = columns
        .iter()
        .filter(|c| !keys.contains(c))
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    let on_conflict = match updates.is_empty() || target.keep_first {
        true => "DO NOTHING".to_string(),
        false => format!("DO UPDATE SET {}", updates.join(", ")),
    };
    // The row of a key that the epoch keeps: its first (keep_first) or its last.
    let order = if target.keep_first { "ASC" } else { "DESC" };
    let sql = format!(
        "WITH upserted AS (INSERT INTO {table} ({columns}) SELECT DISTINCT ON ({staged}) \
         {select} FROM weir_stage s ORDER BY {staged}, s.ctid {order} ON CONFLICT ({keys}) \
         {on_conflict} RETURNING (xmax = 0) AS inserted) \
         SELECT count(*) FILTER (WHERE inserted), count(*) FROM upserted",
        table = target.name.quoted(),
        columns = columns.join(", "),
        staged = staged_keys.join(", "),
        select = select.join(", "),
        keys = keys.join(", "),
    );
    let row = tx
        .query_one(&sql, &[])
        .await
        .map_err(server("upsert rows"))?;
    let inserted: i64 = row.get(0);
    let written: i64 = row.get(1);
    Ok((written as u64, Some(inserted as u64)))
}
