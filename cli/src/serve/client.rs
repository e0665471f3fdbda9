//! The commands that talk to a running `weir serve`: `weir submit`, `list`, `show`, `stop`,
//! `restart`, `logs` and `query --server`. Output is a readable table, or the server's JSON
//! with `--json`.

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::DEFAULT_ADDR;
use crate::commands::CliError;

/// The server URL: `--server`, else `WEIR_SERVER`, else the local default.
pub fn server_url(given: Option<String>) -> String {
    let url = given
        .or_else(|| std::env::var("WEIR_SERVER").ok())
        .unwrap_or_else(|| format!("http://{DEFAULT_ADDR}"));
    url.trim_end_matches('/').to_string()
}

/// A request to the server: its JSON answer, or the server's error as a command error.
async fn call(
    server: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, CliError> {
    let not_running = |e: &dyn std::fmt::Display| {
        CliError::Usage(format!(
            "no weir server answers at {server} ({e}); start one with `weir serve`, or point \
             --server / WEIR_SERVER at it"
        ))
    };
    let uri: hyper::Uri = server
        .parse()
        .map_err(|e| CliError::Usage(format!("`{server}` is not a server URL: {e}")))?;
    let host = uri.host().unwrap_or("127.0.0.1").to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| not_running(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| not_running(&e))?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Ok(token) = std::env::var("WEIR_TOKEN") {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| not_running(&e))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| not_running(&e))?
        .to_bytes();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(value);
    }
    let message = value["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("the server answered {status}"));
    Err(if status.is_client_error() {
        CliError::Server(message)
    } else {
        CliError::Io(std::io::Error::other(message))
    })
}

/// The strings of a JSON array (none for anything else).
fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn print_json(value: &Value) -> Result<(), CliError> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
    Ok(())
}

/// `weir submit PIPELINE [--name N]`: sends the pipeline's .sql files; the server checks them
/// (errors as `weir validate` gives them) and starts the pipeline.
pub async fn submit(
    server: &str,
    pipeline: &Path,
    name: Option<String>,
    as_json: bool,
) -> Result<(), CliError> {
    let files = pipeline_files(pipeline)?;
    let name = name.unwrap_or_else(|| weir_cli::pipeline_name(pipeline));
    let answer = call(
        server,
        Method::POST,
        "/api/pipelines",
        Some(json!({ "name": name, "files": files })),
    )
    .await?;
    if as_json {
        return print_json(&answer);
    }
    errln!("weir: submitted `{name}` to {server}; watch it with `weir show {name}`");
    Ok(())
}

/// The most a submission sends (its SQL and the files beside it).
const MAX_SUBMISSION_BYTES: u64 = 64 << 20;

/// A pipeline's files as the server takes them: a `.sql` file alone, or every file under a
/// folder (its `.sql` files and the files they name by relative path, such as reference CSV
/// files), each with its path inside the folder.
fn pipeline_files(pipeline: &Path) -> Result<Vec<Value>, CliError> {
    if !pipeline.is_dir() {
        let name = pipeline
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(pipeline)?;
        return Ok(vec![json!({ "name": name, "text": text })]);
    }
    let mut paths = Vec::new();
    let mut folders = vec![pipeline.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder)?.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                folders.push(path);
            } else {
                paths.push(path);
            }
        }
    }
    paths.sort();
    let total: u64 = paths
        .iter()
        .filter_map(|p| p.metadata().ok())
        .map(|m| m.len())
        .sum();
    if total > MAX_SUBMISSION_BYTES {
        return Err(CliError::Usage(format!(
            "{} holds {} MB of files; a submission sends at most {} MB (its SQL and small \
             reference files): give large data by absolute path instead",
            pipeline.display(),
            total >> 20,
            MAX_SUBMISSION_BYTES >> 20
        )));
    }
    let mut files = Vec::new();
    for path in paths {
        let name = path
            .strip_prefix(pipeline)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).map_err(|e| {
            CliError::Usage(format!(
                "cannot send {}: {e} (a submission sends text files only)",
                path.display()
            ))
        })?;
        files.push(json!({ "name": name, "text": text }));
    }
    Ok(files)
}

/// `weir list`.
pub async fn list(server: &str, as_json: bool) -> Result<(), CliError> {
    let answer = call(server, Method::GET, "/api/pipelines", None).await?;
    if as_json {
        return print_json(&answer);
    }
    let empty = Vec::new();
    let pipelines = answer["pipelines"].as_array().unwrap_or(&empty);
    let mut text = format!(
        "{:<24} {:<9} {:>7}  last error",
        "pipeline", "state", "epoch"
    );
    for p in pipelines {
        text.push_str(&format!(
            "\n{:<24} {:<9} {:>7}  {}",
            p["name"].as_str().unwrap_or("?"),
            p["state"].as_str().unwrap_or("?"),
            p["epoch"]
                .as_u64()
                .map_or("-".to_string(), |e| e.to_string()),
            p["error"].as_str().unwrap_or("")
        ));
    }
    println!("{text}");
    Ok(())
}

/// `weir show NAME`.
pub async fn show(server: &str, name: &str, as_json: bool) -> Result<(), CliError> {
    let answer = call(server, Method::GET, &format!("/api/pipelines/{name}"), None).await?;
    if as_json {
        return print_json(&answer);
    }
    let p = &answer["pipeline"];
    let mut text = format!("pipeline {}: {}", name, p["state"].as_str().unwrap_or("?"));
    if let Some(epoch) = p["epoch"].as_u64() {
        text.push_str(&format!(", epoch {epoch}"));
    }
    if let Some(e) = p["error"].as_str() {
        text.push_str(&format!("\nerror: {e}"));
    }
    let latest = &p["latest"];
    if latest.is_object() {
        for (what, key) in [
            ("records read", "rows_in"),
            ("dead letters", "dead_letters"),
            ("rows written", "rows_out"),
            ("position", "positions"),
            ("late rows", "late_rows"),
            ("commit ms", "commit_ms"),
        ] {
            if let Some(map) = latest[key].as_object().filter(|m| !m.is_empty()) {
                let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k} {v}")).collect();
                text.push_str(&format!("\n{what} (last epoch): {}", parts.join(", ")));
            }
        }
        text.push_str(&state_and_lag(latest));
        if let Some(wm) = latest["watermark_ms"].as_i64().filter(|wm| *wm != i64::MAX) {
            let at = chrono::DateTime::from_timestamp_millis(wm)
                .map_or(wm.to_string(), |t| t.to_rfc3339());
            let behind = latest["finished_at_ms"].as_i64().unwrap_or(wm) - wm;
            text.push_str(&format!(
                "\nwatermark: {at} ({} behind the wall clock)",
                duration_text(behind as f64 / 1000.0)
            ));
        }
    }
    if let Some(lines) = answer["progress"].as_array() {
        for line in lines.iter().rev().take(5).rev() {
            text.push_str(&format!("\n  {}", line.as_str().unwrap_or("")));
        }
    }
    println!("{text}");
    Ok(())
}

/// Seconds as a person reads them: `42.0 s`, `12.5 min`, `3.2 h`, `1005.1 d`.
fn duration_text(seconds: f64) -> String {
    let a = seconds.abs();
    if a < 120.0 {
        format!("{seconds:.1} s")
    } else if a < 7200.0 {
        format!("{:.1} min", seconds / 60.0)
    } else if a < 172_800.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else {
        format!("{:.1} d", seconds / 86_400.0)
    }
}

/// The state each operator holds (rows, bytes) and each Kafka partition's lag, as lines.
fn state_and_lag(latest: &Value) -> String {
    let mut text = String::new();
    if let Some(operators) = latest["operators"].as_object().filter(|m| !m.is_empty()) {
        let parts: Vec<String> = operators
            .iter()
            .map(|(name, m)| {
                format!(
                    "{name} {} rows / {} bytes",
                    m["state_rows"].as_u64().unwrap_or(0),
                    m["state_bytes"].as_u64().unwrap_or(0)
                )
            })
            .collect();
        text.push_str(&format!("\nstate held: {}", parts.join(", ")));
    }
    if let Some(sources) = latest["lag"].as_object().filter(|m| !m.is_empty()) {
        for (source, partitions) in sources {
            let parts: Vec<String> = partitions
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let lag = p["end"].as_i64().unwrap_or(0) - p["next"].as_i64().unwrap_or(0);
                    format!(
                        "{}/{} {}",
                        p["topic"].as_str().unwrap_or("?"),
                        p["partition"],
                        lag.max(0)
                    )
                })
                .collect();
            text.push_str(&format!("\nKafka lag of {source}: {}", parts.join(", ")));
        }
    }
    text
}

/// `weir stop NAME` / `weir restart NAME`.
pub async fn control(server: &str, name: &str, action: &str) -> Result<(), CliError> {
    let answer = call(
        server,
        Method::POST,
        &format!("/api/pipelines/{name}/{action}"),
        None,
    )
    .await?;
    errln!(
        "weir: `{name}` is {}",
        answer["state"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// `weir logs NAME [--follow]`: the pipeline's progress lines (with `--follow`, new ones as
/// they come, until the pipeline stops or Ctrl-C).
pub async fn logs(server: &str, name: &str, follow: bool) -> Result<(), CliError> {
    let mut printed: Option<String> = None;
    loop {
        let answer = call(server, Method::GET, &format!("/api/pipelines/{name}"), None).await?;
        let lines = strings(&answer["progress"]);
        let start = printed
            .as_ref()
            .and_then(|last| lines.iter().position(|l| l == last).map(|i| i + 1))
            .unwrap_or(0);
        for line in &lines[start..] {
            println!("{line}");
        }
        if let Some(last) = lines.last() {
            printed = Some(last.clone());
        }
        let state = answer["pipeline"]["state"].as_str().unwrap_or("");
        if !follow || matches!(state, "stopped" | "finished" | "failed") {
            if let Some(e) = answer["pipeline"]["error"].as_str() {
                println!("error: {e}");
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `weir query --server URL SQL`: the rows as a table, or JSON with `--json`.
pub async fn query(server: &str, sql: &str, as_json: bool) -> Result<(), CliError> {
    let answer = call(
        server,
        Method::POST,
        "/api/query",
        Some(json!({ "sql": sql })),
    )
    .await?;
    if as_json {
        return print_json(&answer);
    }
    let columns = strings(&answer["columns"]);
    let empty = Vec::new();
    let rows = answer["rows"].as_array().unwrap_or(&empty);
    let cell = |row: &Value, c: &str| match &row[c] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).len())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let line = |values: Vec<String>| {
        let cells: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        format!("| {} |", cells.join(" | "))
    };
    let rule = format!(
        "+{}+",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    );
    let mut text = vec![rule.clone(), line(columns.clone()), rule.clone()];
    for row in rows {
        text.push(line(columns.iter().map(|c| cell(row, c)).collect()));
    }
    text.push(rule);
    println!("{}", text.join("\n"));
    errln!("({} rows)", rows.len());
    Ok(())
}
