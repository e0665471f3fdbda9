//! A `weir serve` for tests: started on a free loopback port with a token, reached with the
//! CLI's client commands or plain HTTP, stopped as systemd would.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{assert_success, weir};

/// The token every test server requires.
pub const TOKEN: &str = "test-token-1234";

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `weir serve`, killed if the test ends without stopping it.
pub struct Server {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `weir serve` on `port` with its lake and state in `dir` and `envs` (the example
    /// generator's EVENTS, EVENTS_PER_TRIGGER); returns once it answers.
    pub fn start(dir: &Path, port: u16, envs: &[(&str, &str)]) -> Server {
        Server::start_with(dir, port, envs, &[])
    }

    /// [`Server::start`] with more arguments of `weir serve` (`--pg-addr`).
    pub fn start_with(dir: &Path, port: u16, envs: &[(&str, &str)], args: &[&str]) -> Server {
        let mut child = weir()
            .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--lake"])
            .arg(dir.join("lake"))
            .arg("--state")
            .arg(dir.join("state"))
            .args(args)
            .envs(envs.iter().copied())
            .env("WEIR_TOKEN", TOKEN)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if client(port, &["list"]).status.success() {
                return Server { child, port };
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("weir serve did not answer within 60 s");
    }

    /// Its address as the client commands take it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server as systemd would (SIGTERM) and waits for it to exit cleanly.
    pub fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "weir serve exited with {status}");
    }
}

/// A client command against the server on `port`, with the token.
pub fn client(port: u16, args: &[&str]) -> Output {
    weir()
        .args(args)
        .args(["--server", &format!("http://127.0.0.1:{port}")])
        .env("WEIR_TOKEN", TOKEN)
        .output()
        .unwrap()
}

/// The JSON a successful command printed.
pub fn json(out: &Output) -> serde_json::Value {
    assert_success(out, "the command");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `state` of pipeline `name` as `weir show --json` gives it.
pub fn state_of(port: u16, name: &str) -> String {
    let shown = json(&client(port, &["show", name, "--json"]));
    shown["pipeline"]["state"].as_str().unwrap().to_string()
}

/// One HTTP/1.1 request with the token; the status and body of the answer.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<u8>) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = answer[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = unchunk(&body);
    }
    (status, body)
}

/// The body of a chunked HTTP answer.
fn unchunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = String::from_utf8_lossy(&raw[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// `GET /metrics` without a token (a `weir run --metrics-addr` on loopback): the whole
/// answer, status line included; `None` until it answers.
pub fn scrape_metrics(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// The value of the first series starting with `prefix` in a Prometheus text answer.
pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `weir run PIPELINE --metrics-addr 127.0.0.1:<free port>` into `lake` with `envs`, its
/// output discarded; the running process and the port of its `/metrics`.
pub fn run_with_metrics(pipeline: &Path, lake: &Path, envs: &[(&str, &str)]) -> (Child, u16) {
    let port = free_port();
    let child = weir()
        .arg("run")
        .arg(pipeline)
        .args(["--progress", "quiet", "--metrics-addr"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--lake")
        .arg(lake)
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, port)
}
