//! Helpers for the end-to-end tests: run a pipeline folder into a lake exactly as `weir run`
//! does, and read the lake back with batch DataFusion as the oracle.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::util::display::array_value_to_string;
use datafusion::prelude::SessionContext;
use weir_engine::runtime::checkpoint::Checkpoint;
use weir_engine::runtime::progress::EpochReport;
use weir_engine::runtime::{session_context, EpochCallback, RunOptions, RunSummary};
use weir_sql::parser::{parse_file, Statement};
use weir_sql::{load_pipeline_files_with_env, plan_pipeline};

/// Any error, for test plumbing.
pub type TestError = Box<dyn std::error::Error + Send + Sync>;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// An example pipeline folder.
pub fn example(name: &str) -> PathBuf {
    repo_root().join("examples").join(name)
}

/// What a run did, epoch by epoch.
#[derive(Debug)]
pub struct RunResult {
    /// Totals.
    pub summary: RunSummary,
    /// One report per epoch, in order.
    pub epochs: Vec<EpochReport>,
}

/// Runs `pipeline` with `--once` into `lake` (checkpoint under the lake), with `${VAR}`s taken
/// from `env` first, then the process environment.
pub async fn run_pipeline(
    pipeline: &Path,
    lake: &Path,
    env: &[(&str, &str)],
) -> Result<RunResult, TestError> {
    run_pipeline_with(pipeline, lake, env, false).await
}

/// Like [`run_pipeline`]; with `drain`, as `weir run --once --drain`.
pub async fn run_pipeline_with(
    pipeline: &Path,
    lake: &Path,
    env: &[(&str, &str)],
    drain: bool,
) -> Result<RunResult, TestError> {
    run_pipeline_observed(pipeline, lake, env, drain, Arc::new(|_: &EpochReport| {})).await
}

/// Like [`run_pipeline_with`], also calling `observe` after every epoch (so a test can change
/// the world between epochs).
pub async fn run_pipeline_observed(
    pipeline: &Path,
    lake: &Path,
    env: &[(&str, &str)],
    drain: bool,
    observe: EpochCallback,
) -> Result<RunResult, TestError> {
    let lookup = |name: &str| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .or_else(|| std::env::var(name).ok())
    };
    let files = load_pipeline_files_with_env(pipeline, &lookup)?;
    let name = weir_cli::pipeline_name(pipeline);
    let planned = plan_pipeline(&name, &files, 2, &weir_cli::connectors()).await?;
    let checkpoint = Checkpoint::open(checkpoint_dir(lake, pipeline), &name)?;
    let mut runnable = weir_cli::assemble(planned, lake, checkpoint).await?;
    let epochs = Arc::new(Mutex::new(Vec::new()));
    let sink = epochs.clone();
    let options = RunOptions {
        once: true,
        drain,
        on_epoch: Some(Arc::new(move |r: &EpochReport| {
            if let Ok(mut v) = sink.lock() {
                v.push(r.clone());
            }
            observe(r);
        })),
        ..RunOptions::default()
    };
    let summary = runnable.run(&options).await?;
    let epochs = epochs.lock().map(|v| v.clone()).unwrap_or_default();
    Ok(RunResult { summary, epochs })
}

/// Plans `pipeline` and assembles it against `lake` (checkpoint under the lake), ready to
/// run or spawn with options of the test's choosing.
pub async fn assemble_pipeline(
    pipeline: &Path,
    lake: &Path,
) -> Result<weir_engine::runtime::Pipeline, TestError> {
    let files = load_pipeline_files_with_env(pipeline, &|name: &str| std::env::var(name).ok())?;
    let name = weir_cli::pipeline_name(pipeline);
    let planned = plan_pipeline(&name, &files, 2, &weir_cli::connectors()).await?;
    let checkpoint = Checkpoint::open(checkpoint_dir(lake, pipeline), &name)?;
    Ok(weir_cli::assemble(planned, lake, checkpoint).await?)
}

/// The default checkpoint folder of `pipeline` in `lake`.
pub fn checkpoint_dir(lake: &Path, pipeline: &Path) -> PathBuf {
    lake.join("_checkpoints")
        .join(weir_cli::pipeline_name(pipeline))
}

/// A batch SQL session over every Delta table of `lake`.
pub async fn lake_context(lake: &Path) -> Result<SessionContext, TestError> {
    let ctx = session_context(2);
    weir_lakehouse::register_lake(&ctx, lake).await?;
    Ok(ctx)
}

/// Rows of a query as `a|b|c` strings, sorted: a multiset that two answers can be compared by.
pub async fn sorted_rows(ctx: &SessionContext, sql: &str) -> Result<Vec<String>, TestError> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let mut rows = rows_of(&batches)?;
    rows.sort();
    Ok(rows)
}

fn rows_of(batches: &[RecordBatch]) -> Result<Vec<String>, TestError> {
    let mut rows = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let mut cells = Vec::with_capacity(b.num_columns());
            for c in b.columns() {
                cells.push(array_value_to_string(c, r)?);
            }
            rows.push(cells.join("|"));
        }
    }
    Ok(rows)
}

/// A single number from a `SELECT count(*) ...`-style query.
pub async fn scalar(ctx: &SessionContext, sql: &str) -> Result<i64, TestError> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let cell = rows_of(&batches)?
        .into_iter()
        .next()
        .ok_or("query returned no rows")?;
    Ok(cell.parse()?)
}

/// The `AS SELECT ...` text of table or view `name` in a pipeline folder, to run as a batch
/// query (the oracle).
pub fn stream_query(pipeline: &Path, name: &str) -> Result<String, TestError> {
    for file in load_pipeline_files_with_env(pipeline, &|_| None)? {
        for stmt in parse_file(&file)? {
            if let Statement::Stream(s) = stmt {
                if s.name == name {
                    return Ok(s.query.to_string());
                }
            }
        }
    }
    Err(format!("no table or view `{name}` in {}", pipeline.display()).into())
}

/// The column names of a query's result, quoted, joined with commas.
pub async fn column_list(ctx: &SessionContext, sql: &str) -> Result<String, TestError> {
    let df = ctx.sql(sql).await?;
    Ok(df
        .schema()
        .fields()
        .iter()
        .map(|f| format!("\"{}\"", f.name()))
        .collect::<Vec<_>>()
        .join(", "))
}

/// Plans `sql` as a one-file pipeline named `p`, as `weir validate` would.
pub async fn plan_sql(sql: &str) -> Result<weir_sql::PlannedPipeline, TestError> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("p.sql");
    std::fs::write(&file, sql)?;
    let files = load_pipeline_files_with_env(&file, &|_| None)?;
    Ok(plan_pipeline("p", &files, 1, &weir_cli::connectors()).await?)
}
