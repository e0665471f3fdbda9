//! The subcommands: glue between the SQL planner, the engine and the lakehouse.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_engine::runtime::checkpoint::Checkpoint;
use weir_engine::runtime::{session_context, EpochCallback, RunOptions};
use weir_engine::source::generator::ecommerce::{EcommerceConfig, EcommerceGenerator};
use weir_engine::source::generator::reference_data::{write_products_csv, write_users_csv};
use weir_engine::EngineError;
use weir_lakehouse::{register_lake, LakehouseError};
use weir_sql::{load_pipeline_files, plan_pipeline, PlannedPipeline, SqlErrors};

use crate::ProgressFormat;

/// Why a command failed; each kind has its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The pipeline's SQL is wrong (exit 2).
    #[error("{0}")]
    Sql(#[from] SqlErrors),
    /// The engine stopped (exit 1).
    #[error("error: {0}")]
    Engine(#[from] EngineError),
    /// A table could not be opened or written (exit 1).
    #[error("error: {0}")]
    Lakehouse(#[from] LakehouseError),
    /// A batch query failed (exit 1).
    #[error("error: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// Writing output failed (exit 1).
    #[error("error: {0}")]
    Io(#[from] std::io::Error),
    /// `weir query` was given a statement that would change something (exit 2).
    #[error(
        "error: weir query is read-only: it runs SELECT, EXPLAIN, SHOW and DESCRIBE over the \
         lake's tables, not {statement}. Tables are written by pipelines (weir run), so that \
         every row is committed exactly once"
    )]
    NotReadOnly {
        /// The kind of statement refused.
        statement: String,
    },
    /// The command's arguments do not fit together (exit 2).
    #[error("error: {0}")]
    Usage(String),
    /// A `weir serve` refused the request: bad SQL, an unknown pipeline (exit 2). The
    /// server's text carries its own positions and hints.
    #[error("{0}")]
    Server(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Sql(_)
            | CliError::NotReadOnly { .. }
            | CliError::Usage(_)
            | CliError::Server(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

/// Arguments of `weir run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Pipeline file or folder.
    pub pipeline: PathBuf,
    /// Process everything available now, then exit.
    #[arg(long, alias = "available-now")]
    pub once: bool,
    /// With --once: treat the end of the input as the end of time and emit every open window.
    #[arg(long, requires = "once")]
    pub drain: bool,
    /// Stop after this many epochs (a replayed one included); the rest of the input is left
    /// for the next run.
    #[arg(long)]
    pub max_epochs: Option<u64>,
    /// Folder that holds the pipeline's tables.
    #[arg(long, default_value = "lake", env = "WEIR_LAKE")]
    pub lake: PathBuf,
    /// Checkpoint folder (default: <lake>/_checkpoints/<pipeline>).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Seconds between epoch starts (Spark's processing-time trigger); ignored with --once.
    #[arg(long, default_value_t = 1.0)]
    pub trigger_interval: f64,
    /// Threads for decoding and query execution (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Progress output.
    #[arg(long, value_enum, default_value_t = ProgressFormat::Text)]
    pub progress: ProgressFormat,
    /// Serve Prometheus metrics at http://ADDR/metrics while the pipeline runs (off loopback
    /// only with a WEIR_TOKEN).
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

pub(crate) async fn plan(path: &Path, threads: usize) -> Result<PlannedPipeline, CliError> {
    let files = load_pipeline_files(path)?;
    let connectors = weir_cli::connectors();
    let planned =
        plan_pipeline(&weir_cli::pipeline_name(path), &files, threads, &connectors).await?;
    for warning in &planned.warnings {
        errln!("{}", warning.as_warning());
    }
    Ok(planned)
}

/// What `weir run` prints after each epoch in `format` (`in_place`: stderr is a terminal).
fn progress_callback(format: ProgressFormat, in_place: bool) -> Option<EpochCallback> {
    match format {
        // Progress lines are best effort: when their reader goes away (`| head -2`) the
        // pipeline keeps running and committing instead of panicking on a closed pipe.
        ProgressFormat::Text if in_place => Some(Arc::new(
            |r: &weir_engine::runtime::progress::EpochReport| {
                // Back to the line's start, the new status, the rest of the line cleared.
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r{}\x1b[K", r.status_line());
                let _ = err.flush();
            },
        )),
        ProgressFormat::Text => Some(Arc::new(
            |r: &weir_engine::runtime::progress::EpochReport| {
                let _ = writeln!(std::io::stderr().lock(), "{}", r.status_line());
            },
        )),
        ProgressFormat::Verbose => Some(Arc::new(
            |r: &weir_engine::runtime::progress::EpochReport| {
                let _ = writeln!(std::io::stderr().lock(), "{r}");
            },
        )),
        ProgressFormat::Json => Some(Arc::new(
            |r: &weir_engine::runtime::progress::EpochReport| {
                if let Ok(line) = serde_json::to_string(r) {
                    let _ = writeln!(std::io::stdout().lock(), "{line}");
                }
            },
        )),
        ProgressFormat::Quiet => None,
    }
}

/// Plans the pipeline at `path`, locks its checkpoint (`checkpoint`, by default
/// `<lake>/_checkpoints/<name>`) and opens its tables: a pipeline ready to run, as `weir run`
/// and `weir serve` start one.
pub(crate) async fn open_pipeline(
    path: &Path,
    lake: &Path,
    checkpoint: Option<&Path>,
    threads: usize,
) -> Result<weir_engine::runtime::Pipeline, CliError> {
    let planned = plan(path, threads).await?;
    let name = planned.name.clone();
    std::fs::create_dir_all(lake)?;
    let checkpoint_dir = checkpoint
        .map(Path::to_path_buf)
        .unwrap_or_else(|| lake.join("_checkpoints").join(&name));
    let checkpoint = Checkpoint::open(&checkpoint_dir, &name)?;
    // Before any table is opened: a second run of the pipeline stops here.
    let lock = checkpoint.lock()?;
    Ok(weir_cli::assemble(planned, lake, checkpoint)
        .await?
        .with_run_lock(lock))
}

/// `weir run`.
pub async fn run(args: RunArgs) -> Result<(), CliError> {
    let threads = args.threads.unwrap_or_else(default_threads);
    if let Some(addr) = args.metrics_addr {
        crate::serve::metrics::serve_for_run(addr).await?;
    }
    let mut pipeline = open_pipeline(
        &args.pipeline,
        &args.lake,
        args.checkpoint.as_deref(),
        threads,
    )
    .await?;

    // On a terminal the status line is rewritten in place; in a log, one line per epoch.
    let in_place = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let options = RunOptions {
        once: args.once,
        trigger_interval: Duration::from_secs_f64(args.trigger_interval.max(0.01)),
        on_epoch: progress_callback(args.progress, in_place),
        drain: args.drain,
        max_epochs: args.max_epochs,
        ..RunOptions::default()
    };
    let stop = options.stop.clone();
    tokio::spawn(async move {
        // SIGTERM (systemd, Kubernetes, `docker stop`) is treated like Ctrl-C.
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut stop_signal = async || match term.as_mut() {
            Some(term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            },
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        };
        stop_signal().await;
        errln!("stopping after the current epoch (Ctrl-C or SIGTERM again to stop at once)");
        stop.store(true, Ordering::SeqCst);
        stop_signal().await;
        std::process::exit(130);
    });
    if matches!(
        args.progress,
        ProgressFormat::Text | ProgressFormat::Verbose
    ) {
        errln!(
            "weir: running pipeline `{}` into {} (checkpoint {})",
            pipeline.name(),
            args.lake.display(),
            pipeline.checkpoint_root().display()
        );
    }
    let started = Instant::now();
    let result = pipeline.run(&options).await;
    if in_place && args.progress == ProgressFormat::Text {
        // End the status line before anything else is printed.
        errln!("");
    }
    let summary = result?;
    let secs = started.elapsed().as_secs_f64();
    let rows_in: u64 = summary.rows_in.values().sum();
    let dead: u64 = summary.dead_letters.values().sum();
    // The summary goes to stderr in every mode (JSON progress lines own stdout).
    {
        let rss = peak_rss_mib()
            .map(|m| format!(", peak RSS {m:.0} MiB"))
            .unwrap_or_default();
        errln!(
            "weir: {} epochs, {rows_in} records in {secs:.1}s ({:.0} records/s), {dead} dead-lettered{rss}",
            summary.epochs,
            rows_in as f64 / secs.max(1e-9)
        );
        for (table, rows) in &summary.rows_out {
            match summary.rows_new.get(table) {
                Some(new) => errln!("  {table}: {rows} rows merged ({new} new)"),
                None => errln!("  {table}: +{rows} rows"),
            }
        }
    }
    Ok(())
}

/// `weir validate`.
pub async fn validate(path: &Path) -> Result<(), CliError> {
    let planned = plan(path, 1).await?;
    outln!(
        "ok: pipeline `{}` with {} source(s), {} table(s), {} view(s), {} reference table(s)",
        planned.name,
        planned.sources.len(),
        planned.nodes.iter().filter(|n| n.sink.is_some()).count(),
        planned
            .nodes
            .iter()
            .filter(|n| n.sink.is_none() && n.step_of.is_none())
            .count(),
        planned.references.len()
    );
    Ok(())
}

/// `weir explain`.
pub async fn explain(path: &Path) -> Result<(), CliError> {
    let planned = plan(path, default_threads()).await?;
    print_stdout(&planned.explain().await?)
}

/// `weir query`.
pub async fn query(sql: &str, lake: &Path) -> Result<(), CliError> {
    let (_, batches) = query_batches(sql, lake).await?;
    let table = arrow::util::pretty::pretty_format_batches(&batches)
        .map_err(datafusion::error::DataFusionError::from)?;
    print_stdout(&table.to_string())?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    errln!("({rows} rows)");
    Ok(())
}

/// A session for batch queries over the lake: Weir's functions, and SHOW TABLES, SHOW COLUMNS
/// and information_schema.tables / columns listing the lake's tables.
pub(crate) fn query_session() -> datafusion::prelude::SessionContext {
    let ctx = session_context(default_threads());
    ctx.state_ref()
        .write()
        .config_mut()
        .options_mut()
        .catalog
        .information_schema = true;
    ctx
}

/// The schema and rows of a read-only batch query over the lake's tables (`weir query`, and
/// the server's query route): writes, `COPY`, `CREATE` and file-reading statements are
/// refused.
pub async fn query_batches(
    sql: &str,
    lake: &Path,
) -> Result<(arrow::datatypes::SchemaRef, Vec<arrow::array::RecordBatch>), CliError> {
    let ctx = query_session();
    let tables = register_lake(&ctx, lake).await?;
    if tables.is_empty() {
        errln!("note: no Delta tables found under {}", lake.display());
    }
    let mut known = weir_sql::identifiers::KnownNames::default();
    for name in &tables {
        known.add_table(name);
        if let Ok(table) = ctx.table(name.as_str()).await {
            known.add_schema(table.schema().as_arrow());
        }
    }
    let answer = ctx
        .execute_logical_plan(batch_plan(&ctx, sql, &known).await?)
        .await?;
    let schema = Arc::new(answer.schema().as_arrow().clone());
    Ok((schema, answer.collect().await?))
}

/// `weir tables`: each table of the lake with its rows, Delta version and last epoch.
pub async fn tables(lake: &Path) -> Result<(), CliError> {
    let tables = weir_lakehouse::catalog::summarize_lake(lake).await?;
    if tables.is_empty() {
        errln!("note: no Delta tables found under {}", lake.display());
        return Ok(());
    }
    let width = tables
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut text = format!(
        "{:<width$}  {:>12}  {:>7}  last epoch",
        "table", "rows", "version"
    );
    for t in &tables {
        let known = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        let epoch = t
            .last_epoch
            .as_ref()
            .map_or("-".to_string(), |(pipeline, e)| format!("{e} ({pipeline})"));
        text.push_str(&format!(
            "\n{:<width$}  {:>12}  {:>7}  {epoch}",
            t.name,
            known(t.rows),
            known(t.version)
        ));
    }
    print_stdout(&text)
}

/// The plan of a batch query: column names resolve case-insensitively to the lake's columns
/// (`eventId` finds `eventId`, as in pipelines), and EXISTS in SELECT lists is rewritten into
/// a form DataFusion can run (see `weir_sql::rewrite::exists_in_select_lists`).
async fn batch_plan(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
    known: &weir_sql::identifiers::KnownNames,
) -> Result<datafusion::logical_expr::LogicalPlan, CliError> {
    use datafusion::sql::parser::Statement;
    use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let mut statement = state.sql_to_statement(sql, &dialect)?;
    check_read_only(&statement)?;
    if let Statement::Statement(inner) = &mut statement {
        if let SqlStatement::Query(query) = inner.as_mut() {
            weir_sql::identifiers::resolve_identifiers(query, known);
            weir_sql::rewrite::exists_in_select_lists(query);
        }
    }
    Ok(state.statement_to_plan(statement).await?)
}

/// Refuses every statement but queries, EXPLAIN (of a query), SHOW and DESCRIBE: `COPY TO`,
/// `INSERT`, `CREATE EXTERNAL TABLE` and the like would write files anywhere, add rows behind
/// the pipelines' transaction ids, or open arbitrary files.
fn check_read_only(statement: &datafusion::sql::parser::Statement) -> Result<(), CliError> {
    use datafusion::sql::parser::Statement;
    let read_only = match statement {
        Statement::Statement(inner) => crate::read_only::is_read(inner),
        Statement::Explain(explain) => return check_read_only(&explain.statement),
        _ => false,
    };
    if read_only {
        return Ok(());
    }
    Err(CliError::NotReadOnly {
        statement: crate::read_only::statement_kind(statement),
    })
}

/// `weir generate`.
pub fn generate(
    out: &Path,
    events: u64,
    files: u64,
    seed: u64,
    malformed_ratio: f64,
) -> Result<(), CliError> {
    std::fs::create_dir_all(out)?;
    let generator = EcommerceGenerator::new(EcommerceConfig {
        seed,
        malformed_ratio,
        ..EcommerceConfig::default()
    });
    let files = files.max(1);
    let per_file = events.div_ceil(files);
    let mut written = 0u64;
    for f in 0..files {
        let start = f * per_file;
        let end = ((f + 1) * per_file).min(events);
        if start >= end {
            break;
        }
        let path = out.join(format!("events-{f:05}.json"));
        let mut buf = Vec::with_capacity(((end - start) * 420) as usize);
        for i in start..end {
            generator.write_event(i, &mut buf);
            buf.push(b'\n');
        }
        std::fs::File::create(&path)?.write_all(&buf)?;
        written += end - start;
    }
    let config = EcommerceConfig {
        seed,
        ..EcommerceConfig::default()
    };
    write_users_csv(&config, &mut std::fs::File::create(out.join("users.csv"))?)?;
    write_products_csv(
        &config,
        &mut std::fs::File::create(out.join("products.csv"))?,
    )?;
    errln!(
        "wrote {written} events to {}, with users.csv and products.csv (reference tables)",
        out.display()
    );
    Ok(())
}

/// Prints to stdout; a closed pipe (`weir explain | head`) is not an error.
fn print_stdout(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`), for the run summary.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
