//! Finds the Delta tables of a lake folder and registers them with DataFusion under dotted
//! names from their paths (`<lake>/bronze/events` is `bronze.events`), for `weir query` and for
//! batch oracles in tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::common::TableReference;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;

use crate::error::LakehouseError;

/// Folders below `lake` that hold a Delta table, with their dotted names, in name order.
/// Weir's own checkpoint folders are skipped.
pub fn find_delta_tables(lake: &Path) -> Result<Vec<(String, PathBuf)>, LakehouseError> {
    let mut found = Vec::new();
    walk(lake, lake, 0, &mut found)?;
    found.sort();
    Ok(found)
}

fn walk(
    lake: &Path,
    dir: &Path,
    depth: usize,
    found: &mut Vec<(String, PathBuf)>,
) -> Result<(), LakehouseError> {
    if dir.join("_delta_log").is_dir() {
        let rel = dir.strip_prefix(lake).unwrap_or(dir);
        let name = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect::<Vec<_>>()
            .join(".");
        found.push((name, dir.to_path_buf()));
        return Ok(());
    }
    if depth >= 3 {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|source| LakehouseError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() && name != "_checkpoints" && !name.starts_with('.') {
            walk(lake, &path, depth + 1, found)?;
        }
    }
    Ok(())
}

/// Registers every Delta table of `lake` with `ctx` at its latest version; returns the
/// registered names. A long-lived session calls it again to see new commits: the tables of
/// each schema (`gold`) are swapped in at once, as a new schema, so a query planned meanwhile
/// sees the old tables or the new ones, never a missing one.
pub async fn register_lake(
    ctx: &SessionContext,
    lake: &Path,
) -> Result<Vec<String>, LakehouseError> {
    let mut names = Vec::new();
    let mut schemas: BTreeMap<String, Arc<MemorySchemaProvider>> = BTreeMap::new();
    for (name, path) in find_delta_tables(lake)? {
        let delta_err = |source| LakehouseError::Delta {
            table: path.display().to_string(),
            epoch: None,
            source: Box::new(source),
        };
        let url = deltalake::ensure_table_uri(path.to_string_lossy()).map_err(delta_err)?;
        let mut table = DeltaTable::try_from_url(url).await.map_err(delta_err)?;
        table.load().await.map_err(delta_err)?;
        table
            .update_datafusion_session(&ctx.state())
            .map_err(delta_err)?;
        let provider =
            table
                .table_provider()
                .await
                .map_err(|source| LakehouseError::DataFusion {
                    table: name.clone(),
                    source: Box::new(source),
                })?;
        let reference = TableReference::from(name.as_str());
        let df_err = |source| LakehouseError::DataFusion {
            table: name.clone(),
            source: Box::new(source),
        };
        if let TableReference::Partial { schema, table } = &reference {
            schemas
                .entry(schema.to_string())
                .or_default()
                .register_table(table.to_string(), provider)
                .map_err(df_err)?;
        } else {
            // A table at the lake's top, or three folders deep: registered on its own.
            ctx.deregister_table(reference.clone()).map_err(df_err)?;
            ctx.register_table(reference, provider).map_err(df_err)?;
        }
        names.push(name);
    }
    if let Some(catalog) = ctx.catalog("datafusion") {
        for (schema, tables) in schemas {
            catalog.register_schema(&schema, tables).map_err(|source| {
                LakehouseError::DataFusion {
                    table: schema.clone(),
                    source: Box::new(source),
                }
            })?;
        }
    }
    Ok(names)
}

/// One table of a lake as `weir tables` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSummary {
    /// Dotted name (`gold.sessions`).
    pub name: String,
    /// Rows in its latest version (from the Delta log's file statistics).
    pub rows: Option<u64>,
    /// Its latest Delta version.
    pub version: Option<u64>,
    /// The last epoch a pipeline committed to it, with that pipeline, when one did.
    pub last_epoch: Option<(String, i64)>,
}

/// Every Delta table of `lake` with its rows, version and last committed epoch (of the
/// pipelines whose checkpoints are under `<lake>/_checkpoints`).
pub async fn summarize_lake(lake: &Path) -> Result<Vec<TableSummary>, LakehouseError> {
    let pipelines: Vec<String> = std::fs::read_dir(lake.join("_checkpoints"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for (name, path) in find_delta_tables(lake)? {
        let delta_err = |source| LakehouseError::Delta {
            table: path.display().to_string(),
            epoch: None,
            source: Box::new(source),
        };
        let url = deltalake::ensure_table_uri(path.to_string_lossy()).map_err(delta_err)?;
        let mut table = DeltaTable::try_from_url(url).await.map_err(delta_err)?;
        table.load().await.map_err(delta_err)?;
        let mut summary = TableSummary {
            name: name.clone(),
            rows: None,
            version: table.version(),
            last_epoch: None,
        };
        if let Ok(state) = table.snapshot() {
            summary.rows = state
                .snapshot()
                .log_data()
                .iter()
                .map(|file| file.num_records().map(|n| n as u64))
                .sum::<Option<u64>>();
            for pipeline in &pipelines {
                let app_id = format!("weir:{pipeline}:{name}");
                if let Some(epoch) = state
                    .transaction_version(table.log_store().as_ref(), &app_id)
                    .await
                    .map_err(delta_err)?
                {
                    if summary.last_epoch.as_ref().is_none_or(|(_, e)| *e < epoch) {
                        summary.last_epoch = Some((pipeline.clone(), epoch));
                    }
                }
            }
        }
        out.push(summary);
    }
    Ok(out)
}
