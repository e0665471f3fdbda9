//! `weir`: run, check and inspect streaming SQL pipelines. This crate only parses arguments,
//! wires the SQL planner, the engine and the lakehouse together, and prints results.

#[macro_use]
mod output;
mod commands;
mod produce;
mod read_only;
mod serve;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc instead of the system allocator: epochs allocate and free many large Arrow and
/// Parquet buffers, which glibc's malloc returns to the kernel (and the kernel zeroes again)
/// every epoch. See [`keep_freed_memory_between_epochs`].
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (index 15 in both the v2 and the v3 `mi_option_e` enum;
/// the sys crate names the options around it but not this one).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the process before mimalloc gives it back to the OS.
/// mimalloc's default (10 ms) is shorter than an epoch, so every epoch faulted in and zeroed its
/// buffers afresh: 1.4 s of a 4.3 s medallion run was kernel time. One second was still too
/// short for epochs that take most of a second (the HOP bench: 120k page faults, 2.4 s of kernel
/// time, 8.6 s); ten seconds keeps the buffers while epochs follow each other (3k faults, 0.7 s,
/// 6.3 s) and still returns them once a pipeline idles. Peak RSS grows by under 10%.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Sets mimalloc's purge delay unless the user set `MIMALLOC_PURGE_DELAY` themselves.
fn keep_freed_memory_between_epochs() {
    // SAFETY: `mi_option_set_default` only stores a number in mimalloc's option table; it is
    // safe to call at any time, from any thread, and leaves an option set from the environment
    // alone.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

/// Warnings and errors, but not delta-rs's MERGE warnings: every MERGE of an update-mode
/// table logs that DataFusion reported no skipped-file metric (twice per table and epoch),
/// which says nothing about the data. `WEIR_LOG` replaces this filter.
const DEFAULT_LOG_FILTER: &str = "warn,deltalake_core::operations::merge=error";

/// Streaming SQL pipelines from Kafka, files or generators into Delta Lake tables.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the server is, and how to print its answers.
#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// The server (default: WEIR_SERVER, else http://127.0.0.1:7878).
    #[arg(long)]
    server: Option<String>,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
}

/// How progress is reported while a pipeline runs.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq)]
pub enum ProgressFormat {
    /// A short status line per epoch on stderr (updated in place on a terminal).
    Text,
    /// One line per epoch on stderr with every table's rows and every operator's state.
    Verbose,
    /// One JSON record per epoch on stdout.
    Json,
    /// Nothing but the final summary.
    Quiet,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline (a .sql file or a folder of them) until Ctrl-C, or once with --once.
    Run(commands::RunArgs),
    /// Parse and plan a pipeline without reading any data.
    Validate {
        /// Pipeline file or folder.
        pipeline: PathBuf,
    },
    /// Show a pipeline's DAG and each node's DataFusion plans.
    Explain {
        /// Pipeline file or folder.
        pipeline: PathBuf,
    },
    /// Run batch SQL over every Delta table of the lake (`SELECT * FROM bronze.events`).
    Query {
        /// The SQL query.
        sql: String,
        /// Folder that holds the tables.
        #[arg(long, default_value = "lake", env = "WEIR_LAKE")]
        lake: PathBuf,
        /// Ask a running `weir serve` at this URL instead (its lake).
        #[arg(long)]
        server: Option<String>,
        /// With --server: the server's JSON answer.
        #[arg(long, requires = "server")]
        json: bool,
    },
    /// Run pipelines as a service: submitted with `weir submit`, controlled over HTTP.
    Serve(serve::ServeArgs),
    /// Send a pipeline (a .sql file or a folder of them) to a running `weir serve`, which
    /// checks it and starts it.
    Submit {
        /// Pipeline file or folder.
        pipeline: PathBuf,
        /// Its name on the server (default: the file or folder name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the pipelines of a running `weir serve`.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// One pipeline of a running `weir serve`: state, epoch, last epoch's figures, progress.
    Show {
        /// The pipeline's name.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Stop a pipeline of a running `weir serve` after its current epoch (it stays stopped).
    Stop {
        /// The pipeline's name.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Start a stopped or failed pipeline of a running `weir serve` again, from its checkpoint.
    Restart {
        /// The pipeline's name.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The progress lines of a pipeline of a running `weir serve`.
    Logs {
        /// The pipeline's name.
        name: String,
        /// Keep printing new lines until the pipeline stops.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the lake's tables with their rows, Delta version and last committed epoch.
    Tables {
        /// Folder that holds the tables.
        #[arg(long, default_value = "lake", env = "WEIR_LAKE")]
        lake: PathBuf,
    },
    /// Where a pipeline is: last committed epoch, source positions, watermark, window state.
    Status {
        /// Pipeline file or folder.
        pipeline: PathBuf,
        /// Folder that holds the tables.
        #[arg(long, default_value = "lake", env = "WEIR_LAKE")]
        lake: PathBuf,
        /// Checkpoint folder (default `<lake>/_checkpoints/<pipeline>`).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Send events to Kafka: generated events of an example, or the lines of a JSON file.
    Produce {
        /// The topic (it must exist): for `--file` and `--from-generator ecommerce`.
        #[arg(long)]
        topic: Option<String>,
        /// Prepended to the topics of `retail`, `microservices` and `clicks` events (which
        /// go to their own topics: transactions, refunds; order.created, ...; events).
        #[arg(long, default_value = "")]
        topic_prefix: String,
        /// The brokers (the Kafka examples read the same KAFKA_BOOTSTRAP variable).
        #[arg(long, default_value = "127.0.0.1:9092", env = "KAFKA_BOOTSTRAP")]
        bootstrap: String,
        /// Generate events of this kind: `ecommerce` (the ecommerce and kafka examples),
        /// `retail`, `microservices`, `clicks` (the retail, microservices and event-processor
        /// examples).
        #[arg(long, value_parser = ["ecommerce", "retail", "microservices", "clicks"], conflicts_with = "file")]
        from_generator: Option<String>,
        /// Number of generated events.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Generator seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Messages per second (0 = as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Send each non-empty line of this file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Write generated e-commerce events as newline-delimited JSON files (for demos and benchmarks).
    Generate {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Number of events.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Number of files to spread them over.
        #[arg(long, default_value_t = 10)]
        files: u64,
        /// Seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Fraction of broken JSON records.
        #[arg(long, default_value_t = 0.001)]
        malformed_ratio: f64,
    },
}

/// Prints every panic as Rust does, except one that delta-rs provokes and catches itself: after
/// a Parquet upload fails at completion (a full disk, a file-size limit), delta-rs calls
/// object_store's `BufWriter::abort`, which panics by design ("Already shut down"); delta-rs
/// catches that and logs a warning, but the default hook has already printed the panic with a
/// backtrace, once per file, beside the real I/O error. That panic is logged at debug level.
fn quiet_caught_upload_abort_panics() {
    let print_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_object_store_writer = info.location().is_some_and(|at| {
            at.file().contains("object_store") && at.file().ends_with("buffered.rs")
        });
        let message = info.payload().downcast_ref::<&str>().copied();
        if in_object_store_writer && message == Some("Already shut down") {
            tracing::debug!("object_store upload abort after a failed upload: {info}");
            return;
        }
        print_panic(info)
    }));
}

fn main() -> ExitCode {
    keep_freed_memory_between_epochs();
    quiet_caught_upload_abort_panics();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not in log files or pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    // Planning walks SQL syntax trees recursively (sqlparser's visitors, DataFusion's
    // planner): a generated 10,000-term OR nests 10,000 deep. The command runs on a thread
    // with a large stack, and so do the runtime's workers; the memory is only reserved.
    let command = std::thread::Builder::new()
        .name("weir".into())
        .stack_size(COMMAND_STACK_BYTES)
        .spawn(move || run_command(cli));
    match command.map(|t| t.join()) {
        Ok(Ok(code)) => code,
        Ok(Err(_)) => ExitCode::FAILURE, // the panic was printed
        Err(e) => {
            errln!("error: cannot start the command's thread: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Stack of the command's thread and of the runtime's worker threads.
const COMMAND_STACK_BYTES: usize = 256 << 20;

/// Runs the parsed command on an async runtime; the process exit code.
fn run_command(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(COMMAND_STACK_BYTES)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => commands::run(args).await,
            Command::Validate { pipeline } => commands::validate(&pipeline).await,
            Command::Explain { pipeline } => commands::explain(&pipeline).await,
            Command::Query {
                sql,
                server: Some(server),
                json,
                ..
            } => serve::client::query(&serve::client::server_url(Some(server)), &sql, json).await,
            Command::Query { sql, lake, .. } => commands::query(&sql, &lake).await,
            Command::Serve(args) => serve::serve(args).await,
            Command::Submit {
                pipeline,
                name,
                server,
            } => {
                let url = serve::client::server_url(server.server);
                serve::client::submit(&url, &pipeline, name, server.json).await
            }
            Command::List { server } => {
                serve::client::list(&serve::client::server_url(server.server), server.json).await
            }
            Command::Show { name, server } => {
                let url = serve::client::server_url(server.server);
                serve::client::show(&url, &name, server.json).await
            }
            Command::Stop { name, server } => {
                let url = serve::client::server_url(server.server);
                serve::client::control(&url, &name, "stop").await
            }
            Command::Restart { name, server } => {
                let url = serve::client::server_url(server.server);
                serve::client::control(&url, &name, "restart").await
            }
            Command::Logs {
                name,
                follow,
                server,
            } => {
                let url = serve::client::server_url(server.server);
                serve::client::logs(&url, &name, follow).await
            }
            Command::Tables { lake } => commands::tables(&lake).await,
            Command::Status {
                pipeline,
                lake,
                checkpoint,
            } => status::status(&pipeline, &lake, checkpoint.as_deref()).await,
            Command::Produce {
                topic,
                topic_prefix,
                bootstrap,
                from_generator,
                events,
                seed,
                rate,
                file,
            } => {
                let needs_topic = || {
                    topic.clone().ok_or_else(|| {
                        commands::CliError::Usage(
                            "--topic is needed with --file and --from-generator ecommerce".into(),
                        )
                    })
                };
                let input = match (file, from_generator.as_deref()) {
                    (Some(path), _) => produce::ProduceInput::File {
                        topic: needs_topic()?,
                        path,
                    },
                    (None, None | Some("ecommerce")) => produce::ProduceInput::Ecommerce {
                        topic: needs_topic()?,
                        events,
                        seed,
                    },
                    (None, Some(kind)) => produce::ProduceInput::Example {
                        kind: kind.to_string(),
                        prefix: topic_prefix,
                        events,
                        seed,
                    },
                };
                produce::produce(&bootstrap, input, rate)
            }
            Command::Generate {
                out,
                events,
                files,
                seed,
                malformed_ratio,
            } => commands::generate(&out, events, files, seed, malformed_ratio),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("{e}");
            e.exit_code()
        }
    }
}
