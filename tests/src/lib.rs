//! Harness for black-box tests of the built `simplehttp-prefork` binary (also used by xtask).
//!
//! A test starts the real binary as a subprocess on `127.0.0.1` port 0, reads the port from
//! its `listening on` line, talks HTTP to it, reads `/proc` for its children and `/dev/shm`
//! for its scoreboard, and stops it. Nothing here forks the test process itself: tests run on
//! libtest's threads, and a fork of a multi-threaded process is not a safe copy.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub use nix::sys::signal::Signal as Sig;

/// Generous deadline for conditions that normally hold within milliseconds.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Path of the server binary, built once per test process with the same profile as the tests
/// (or taken from `SIMPLEHTTP_PREFORK_BIN`).
pub fn server_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BINARY.get_or_init(|| build_server_binary().map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow!(e))
}

fn build_server_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SIMPLEHTTP_PREFORK_BIN") {
        return Ok(PathBuf::from(path));
    }
    // Test executables live in target/<profile>/deps/; the binary goes to target/<profile>/.
    let exe = std::env::current_exe()?;
    let profile_dir = exe.parent().and_then(Path::parent).context("test executable has no target/<profile> dir")?;
    let target_dir = profile_dir.parent().context("no target dir")?;
    let profile = profile_dir.file_name().and_then(|p| p.to_str()).unwrap_or("debug");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    // The same selection as `cargo test --workspace` (which builds this binary for the
    // facade's own tests): the same features, so after it this build has nothing to do. A
    // narrower `-p simplehttp-prefork` would resolve features differently and build the
    // server a second time.
    command.args(["build", "--quiet", "--workspace", "--tests", "--examples"]);
    command.arg("--target-dir").arg(target_dir);
    // Without the variables cargo sets for the test it runs: build scripts that watch one
    // (ring's watches CARGO_MANIFEST_DIR) would build again here, and again in the next
    // `cargo test`.
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        let set_by_cargo_test = name.starts_with("CARGO_PKG_")
            || ["CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE"]
                .contains(&&*name)
            || ["CARGO_TARGET_TMPDIR", "CARGO_RUSTC_CURRENT_DIR", "CARGO_BIN_NAME", "OUT_DIR"].contains(&&*name);
        if set_by_cargo_test {
            command.env_remove(&key);
        }
    }
    if profile != "debug" {
        command.args(["--profile", profile]);
    }
    let status = command.status().context("running cargo build for the server binary")?;
    ensure!(status.success(), "cargo build of simplehttp-prefork failed: {status}");
    let binary = profile_dir.join("simplehttp-prefork");
    ensure!(binary.exists(), "{} missing after build", binary.display());
    Ok(binary)
}

/// Path of the workspace example `name` (such as `prefork-supervisor`'s `line_server`), built
/// with the server binary.
pub fn example_binary(name: &str) -> Result<PathBuf> {
    let server = server_binary()?;
    let examples = server.parent().context("server binary has no directory")?.join("examples");
    let binary = examples.join(name);
    ensure!(binary.exists(), "{} missing after build", binary.display());
    Ok(binary)
}

/// Runs `simplehttp-prefork args...` (a subcommand such as `status`) to completion, with a
/// generous deadline, and returns its output.
pub fn run_command(args: &[&str]) -> Result<std::process::Output> {
    let child = Command::new(server_binary()?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = Pid::from_raw(child.id() as i32);
    // Read the output while waiting (a full pipe would stall the command), on a thread, so
    // that the deadline holds.
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(DEADLINE) {
        Ok(output) => Ok(output?),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            bail!("simplehttp-prefork {args:?} did not finish within {DEADLINE:?}")
        }
    }
}

/// The status document of the server whose pid file is `pid_file`, from the `status` command
/// (which reads the scoreboard directly, even while every worker is busy).
pub fn status_json(pid_file: &TempPath) -> Result<serde_json::Value> {
    let output = run_command(&["status", "--pid-file", pid_file.as_str(), "--json"])?;
    ensure!(output.status.success(), "status failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// A path in the temporary directory, unique to this process and call, removed on drop.
#[derive(Debug)]
pub struct TempPath(PathBuf);

impl TempPath {
    pub fn new(name: &str) -> TempPath {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        TempPath(std::env::temp_dir().join(format!("prefork-test-{}-{n}-{name}", std::process::id())))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("temp paths are UTF-8")
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `binary --address 127.0.0.1 --port 0 --demo args...`: the tests use the demo routes
/// (`/sleep/`, `/block/`, `/leak/`) to keep workers busy.
pub fn server_command(binary: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command.args(["--address", "127.0.0.1", "--port", "0", "--demo"]).args(args);
    command
}

/// A running server process. Dropping it kills the whole server and removes its segment.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    listening: String,
    stderr: Arc<Mutex<String>>,
    _stdout: Option<BufReader<ChildStdout>>,
    exit: Option<ExitStatus>,
    /// Disconnected once the stderr pipe has been read to its end.
    stderr_read: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl ServerProcess {
    /// Starts the server with `args` (plus `--address 127.0.0.1 --port 0`) and waits for its
    /// `listening on http://ADDR:PORT` line.
    pub fn start(args: &[&str]) -> Result<ServerProcess> {
        ServerProcess::spawn(server_command(&server_binary()?, args))
    }

    /// As [`ServerProcess::start`], with a pool of `start` workers kept between `min_spare`
    /// and `max_spare` idle ones, and `args` besides.
    pub fn start_pool(start: u32, min_spare: u32, max_spare: u32, args: &[&str]) -> Result<ServerProcess> {
        let pool = [start, min_spare, max_spare].map(|n| n.to_string());
        let mut all =
            vec!["--start-servers", &pool[0], "--min-spare-servers", &pool[1], "--max-spare-servers", &pool[2]];
        all.extend_from_slice(args);
        ServerProcess::start(&all)
    }

    /// Waits until the server has logged a line containing `text`.
    pub fn wait_logged(&self, text: &str) -> Result<()> {
        wait_for(&format!("{text:?} in the log"), DEADLINE, || Ok(self.stderr().contains(text).then_some(())))
    }

    /// Starts any program that prints `listening on http://ADDR:PORT` (or `https://…`,
    /// `tcp://…`, or `unix:PATH`) first (a test's own server built on the library, or a
    /// server for another protocol built on the supervisor, for example).
    pub fn spawn(mut command: Command) -> Result<ServerProcess> {
        if !command.get_envs().any(|(key, _)| key == "RUST_LOG") {
            command.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning simplehttp-prefork")?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut pipe = child.stderr.take().expect("piped stderr");
        let (stderr_done, stderr_read) = std::sync::mpsc::channel::<()>();
        thread::spawn(move || {
            let _done = stderr_done; // dropped, and so seen, once the pipe has ended
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = thread::spawn(move || {
            let mut line = String::new();
            let result = stdout.read_line(&mut line).map(|_| line);
            let _ = tx.send(result);
            stdout
        });
        let mut server = ServerProcess {
            child,
            addr: "0.0.0.0:0".parse()?,
            listening: String::new(),
            stderr,
            _stdout: None,
            exit: None,
            stderr_read: Mutex::new(stderr_read),
        };
        let line = match rx.recv_timeout(DEADLINE) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => bail!("reading the server's stdout: {e}"),
            Err(_) => bail!("no `listening on` line within {DEADLINE:?}; stderr:\n{}", server.stderr()),
        };
        server._stdout = reader.join().ok();
        let listening = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line {line:?}; stderr:\n{}", server.stderr()))?;
        server.listening = listening.to_owned();
        let addr = ["http://", "https://", "tcp://"].iter().find_map(|scheme| listening.strip_prefix(scheme));
        if let Some(addr) = addr {
            server.addr = addr.parse().with_context(|| format!("bad address in {line:?}"))?;
        }
        Ok(server)
    }

    /// What the server said it listens on: `http://ADDR:PORT`, `https://…` or `unix:PATH`.
    pub fn listening(&self) -> &str {
        &self.listening
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The supervisor's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server has logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends `signal` to the supervisor.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        kill(Pid::from_raw(self.pid() as i32), signal)?;
        Ok(())
    }

    /// Pids whose parent is the supervisor, from `/proc`.
    pub fn children(&self) -> Vec<u32> {
        children_of(self.pid())
    }

    /// `GET path` on a fresh connection.
    pub fn get(&self, path: &str) -> Result<HttpResponse> {
        http_get(self.addr, path)
    }

    /// A keep-alive connection to the server.
    pub fn connect(&self) -> Result<HttpConnection> {
        HttpConnection::open(self.addr)
    }

    /// The status page as JSON.
    pub fn status(&self) -> Result<serde_json::Value> {
        let response = self.get("/server-status?json")?;
        ensure!(response.status == 200, "status page answered {}", response.status);
        Ok(serde_json::from_str(&response.body)?)
    }

    /// Waits for the supervisor to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.exit = Some(status);
                // Its last lines may still be in the pipe: wait until they are read (the pipe
                // ends once the server and its workers have all gone; an upgraded successor
                // may keep it open, hence the deadline).
                let _ = self.stderr_read.lock().unwrap().recv_timeout(Duration::from_secs(5));
                return Ok(status);
            }
            ensure!(Instant::now() < deadline, "server still running after {timeout:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The scoreboard segment's name, with the default prefix.
    pub fn scoreboard_name(&self) -> String {
        format!("/simplehttp-prefork.{}", self.pid())
    }

    /// The scoreboard segment's path under /dev/shm.
    pub fn segment_path(&self) -> PathBuf {
        Path::new("/dev/shm").join(self.scoreboard_name().trim_start_matches('/'))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let workers = self.children();
            let _ = self.child.kill();
            let _ = self.child.wait();
            // Workers die with the parent (PR_SET_PDEATHSIG); make sure even so.
            for pid in workers {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        // Its segment, whatever its prefix (the supervisor's own examples use theirs): a
        // segment is named `/PREFIX.PID`, and this pid is ours until waited for.
        let suffix = format!(".{}", self.pid());
        for entry in std::fs::read_dir("/dev/shm").into_iter().flatten().flatten() {
            if entry.file_name().to_str().is_some_and(|name| name.ends_with(&suffix)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Pids of the processes whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect();
    pids.sort_unstable();
    pids
}

/// The parent pid of `pid` from `/proc/<pid>/stat`, if it is alive (zombies count as dead).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields resume after the last ')'.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.next()?.parse().ok()
}

/// CPU time (user + system) `pid` has used, in clock ticks (1/100 s), from `/proc/<pid>/stat`;
/// still readable while the process is an unreaped zombie.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name: state(3) ppid(4) ... utime(14) stime(15).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Whether `pid` is a live (non-zombie) process.
pub fn is_alive(pid: u32) -> bool {
    parent_of(pid).is_some()
}

/// An HTTP response read to the end.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A persistent HTTP/1.1 connection for keep-alive tests: one request, one response.
#[derive(Debug)]
pub struct HttpConnection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl HttpConnection {
    /// Connects (with a 5 s connect and 30 s read timeout).
    pub fn open(addr: SocketAddr) -> Result<HttpConnection> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(HttpConnection { stream, buffer: Vec::new() })
    }

    /// Sends raw bytes.
    pub fn send(&mut self, raw: &[u8]) -> Result<()> {
        self.stream.write_all(raw)?;
        Ok(())
    }

    /// `GET path` asking to keep the connection open, and its response.
    pub fn get(&mut self, path: &str) -> Result<HttpResponse> {
        let addr = self.stream.peer_addr()?;
        self.send(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        self.read_response()
    }

    /// Reads exactly one response (its body sized by Content-Length).
    pub fn read_response(&mut self) -> Result<HttpResponse> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = response.parse(&self.buffer)? {
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| String::from_utf8_lossy(h.value).trim().parse::<usize>())
                    .transpose()?
                    .unwrap_or(0);
                if self.buffer.len() >= head + length {
                    let rest = self.buffer.split_off(head + length);
                    let complete = std::mem::replace(&mut self.buffer, rest);
                    return parse_response(&complete);
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk)?;
            ensure!(n > 0, "connection closed before a complete response ({} bytes)", self.buffer.len());
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits up to `timeout` for the server to close the connection; true if it did.
    pub fn closed_by_server_within(&mut self, timeout: Duration) -> Result<bool> {
        self.stream.set_read_timeout(Some(timeout))?;
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => Ok(true),
            Ok(_) => bail!("unexpected data from the server"),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(true),
            Err(e) => Err(e.into()),
        }
    }
}

/// `GET path HTTP/1.1` with `Connection: close`, read to EOF (bounded by a timeout).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(90)))?;
    // One write, as real clients send a request (write! would make one per piece).
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// Parses one complete HTTP/1.1 response (headers by httparse; body up to Content-Length).
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(raw)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            bail!("incomplete response ({} bytes): {:?}", raw.len(), String::from_utf8_lossy(raw))
        }
    };
    let status = response.code.context("no status code")?;
    let headers: Vec<(String, String)> =
        response.headers.iter().map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned())).collect();
    let mut body = &raw[head_len..];
    if let Some((_, len)) = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
        let len: usize = len.trim().parse()?;
        ensure!(body.len() >= len, "body shorter ({}) than Content-Length {len}", body.len());
        body = &body[..len];
    }
    Ok(HttpResponse { status, headers, body: String::from_utf8_lossy(body).into_owned() })
}

/// Polls `condition` every 25 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut condition: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match condition() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            return Err(match last_error {
                Some(e) => e.context(format!("timed out waiting for {what}")),
                None => anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// Worker pids listed by a status JSON document, sorted.
pub fn status_pids(status: &serde_json::Value) -> Vec<u32> {
    let mut pids: Vec<u32> = status["workers"]
        .as_array()
        .map(|ws| ws.iter().filter_map(|w| w["pid"].as_u64()).map(|p| p as u32).collect())
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// Whether a status JSON document lists at least one worker, and only workers of `generation`
/// (a reload has taken over).
pub fn only_generation(status: &serde_json::Value, generation: u64) -> bool {
    let workers = status["workers"].as_array().map(Vec::as_slice).unwrap_or_default();
    !workers.is_empty() && workers.iter().all(|w| w["generation"].as_u64() == Some(generation))
}

/// The worker that answered the demo's `/`: the pid in "Hello from simplehttp-prefork worker
/// `<pid>` ...".
pub fn hello_pid(body: &str) -> Result<u32> {
    let pid =
        body.strip_prefix("Hello from simplehttp-prefork worker ").and_then(|rest| rest.split_whitespace().next());
    pid.and_then(|pid| pid.parse().ok()).with_context(|| format!("not an answer of the demo's `/`: {body:?}"))
}

/// A count field of a status JSON document.
pub fn count(status: &serde_json::Value, field: &str) -> u64 {
    status[field].as_u64().unwrap_or(u64::MAX)
}

/// Whether an optional tool that a test drives (curl, Python's `prometheus_client`) is usable
/// here: `probe` is a command that succeeds only if it is (`["curl", "--version"]`), and
/// `install` says how to get it (`apt-get install curl`).
///
/// Absent, the test should return `Ok(())` at once: this prints why to stderr (uncaptured, so
/// it shows in `cargo test`'s output), so that `cargo test --workspace` passes on a fresh
/// machine. With `PREFORK_REQUIRE_TOOLS` set (CI sets it, and installs every tool), an absent
/// tool is an error instead, so that CI never skips a test silently.
pub fn require_tool(name: &str, probe: &[&str], install: &str) -> Result<bool> {
    let (program, args) = probe.split_first().context("require_tool: empty probe")?;
    let usable = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if usable {
        return Ok(true);
    }
    if std::env::var_os("PREFORK_REQUIRE_TOOLS").is_some_and(|v| !v.is_empty() && v != "0") {
        bail!("{name} is not installed, and PREFORK_REQUIRE_TOOLS is set: `{install}`");
    }
    // libtest names its threads after the tests; a `harness = false` test runs on `main`.
    let test = match thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.file_stem()?.to_string_lossy().into_owned()))
            .unwrap_or_default(),
    };
    // Not eprintln!: libtest captures that, and a skipped test passes, so it would never show.
    let _ = writeln!(std::io::stderr(), "{test}: skipped: {name} is not installed (CI installs it; `{install}`)");
    Ok(false)
}

/// The state letter of `pid` from `/proc/<pid>/stat` (`R`, `S`, `T` stopped, `Z` zombie...),
/// if the process exists.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().next()?.chars().next()
}

/// How many file descriptors `pid` has open, from `/proc/<pid>/fd` (needs the right to read
/// it: the same user, or root).
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Whether this process runs as root (effective uid 0, from `/proc/self/status`).
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uids = status.lines().find_map(|line| line.strip_prefix("Uid:")).unwrap_or_default();
    uids.split_whitespace().nth(1) == Some("0")
}

/// As [`require_tool`], for what a test needs of the machine rather than a tool: root, a
/// private mount namespace, a writable memory cgroup. `usable` says whether it is there and
/// `how` how to get it. Absent, the test should return `Ok(())` at once (a `skipped:` line on
/// stderr), unless `PREFORK_REQUIRE_TOOLS` is set (CI runs as root and sets it): then it is an
/// error, so that CI never skips such a test silently.
pub fn require_machine(what: &str, usable: bool, how: &str) -> Result<bool> {
    if usable {
        return Ok(true);
    }
    if std::env::var_os("PREFORK_REQUIRE_TOOLS").is_some_and(|v| !v.is_empty() && v != "0") {
        bail!("this test needs {what}, and PREFORK_REQUIRE_TOOLS is set: {how}");
    }
    let test = thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stderr(), "{test}: skipped: needs {what} ({how})");
    Ok(false)
}

// Helpers of the hostile-machine tests (tests/tests/hostile.rs).

/// The parent's CPU time over a stretch: a busy loop would use most of it.
#[derive(Debug)]
pub struct CpuWatch {
    pid: u32,
    ticks: u64,
    since: Instant,
}

impl CpuWatch {
    pub fn start(pid: u32) -> Result<CpuWatch> {
        Ok(CpuWatch { pid, ticks: cpu_ticks(pid).context("reading the CPU time")?, since: Instant::now() })
    }

    /// At most a fifth of the elapsed time (ticks are 10 ms), and a few ticks of slack: a
    /// busy loop uses all of it, even on a loaded machine a good part.
    pub fn ensure_quiet(&self, what: &str) -> Result<()> {
        let used = cpu_ticks(self.pid).context("reading the CPU time")?.saturating_sub(self.ticks);
        let elapsed = self.since.elapsed();
        let allowed = 10 + elapsed.as_millis() as u64 / 10 / 5;
        ensure!(
            used <= allowed,
            "{what}: pid {} used {used} ticks of CPU in {elapsed:?} (at most {allowed}): a busy loop",
            self.pid
        );
        Ok(())
    }
}

/// Runs `command` to its end (killed past `timeout`) and returns its output.
pub fn run_to_end(mut command: Command, timeout: Duration) -> Result<std::process::Output> {
    let child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(timeout) {
        Ok(output) => Ok(output?),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            bail!("{command:?} still running after {timeout:?}")
        }
    }
}

/// The soft limit named `name` ("Max processes", "Max open files") of `pid`.
pub fn soft_limit(pid: u32, name: &str) -> Result<String> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} in limits"))?;
    line[name.len()..].split_whitespace().next().map(str::to_owned).context("no soft limit")
}

/// Tasks (threads included) of the real uid `uid`, as `RLIMIT_NPROC` counts them.
pub fn tasks_of_uid(uid: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|status| {
            let uid_line = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap_or_default();
            uid_line.split_whitespace().next() == Some(uid)
        })
        .filter_map(|status| status.lines().find_map(|l| l.strip_prefix("Threads:"))?.trim().parse::<usize>().ok())
        .sum()
}

/// The `RLIMIT_NOFILE` that leaves `pid` exactly `free` more descriptors: new ones take the
/// lowest free numbers, and the limit bounds the number (descriptors it already has above
/// the limit stay open, such as a build tool's inherited jobserver pipe).
pub fn fd_limit_leaving(pid: u32, free: usize) -> Result<String> {
    let open: std::collections::BTreeSet<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect();
    let mut left = free;
    let mut number = 0;
    loop {
        if !open.contains(&number) {
            if left == 0 {
                return Ok(number.to_string());
            }
            left -= 1;
        }
        number += 1;
    }
}

/// Lines of `log` containing `text`.
pub fn lines_with(log: &str, text: &str) -> usize {
    log.lines().filter(|l| l.contains(text)).count()
}

/// A memory cgroup (v1) of the server's own, removed on drop (once its processes are gone).
#[derive(Debug)]
pub struct MemoryCgroup(pub PathBuf);

impl MemoryCgroup {
    /// Under this process's own memory cgroup, if the v1 controller is mounted and writable.
    pub fn create(limit: u64) -> Option<MemoryCgroup> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let path = own.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_owned()))?;
        let dir = PathBuf::from(format!("/sys/fs/cgroup/memory{path}/prefork-test-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        let cgroup = MemoryCgroup(dir);
        std::fs::write(cgroup.0.join("memory.limit_in_bytes"), limit.to_string()).ok()?;
        // Without swap accounting the file is absent; with it, swap must not save the leak.
        let _ = std::fs::write(cgroup.0.join("memory.memsw.limit_in_bytes"), limit.to_string());
        Some(cgroup)
    }

    pub fn oom_kills(&self) -> u64 {
        let control = std::fs::read_to_string(self.0.join("memory.oom_control")).unwrap_or_default();
        control.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = wait_for("the cgroup to empty", DEADLINE, || Ok(std::fs::remove_dir(&self.0).is_ok().then_some(())));
    }
}

/// Removes what libfaketime left in /dev/shm for the process `pid`.
#[derive(Debug)]
pub struct FaketimeShm(pub u32);

impl Drop for FaketimeShm {
    fn drop(&mut self) {
        for name in [format!("faketime_shm_{}", self.0), format!("sem.faketime_sem_{}", self.0)] {
            let _ = std::fs::remove_file(Path::new("/dev/shm").join(name));
        }
    }
}

/// A scenario of a `harness = false` test target.
pub type Scenario = fn() -> Result<()>;

/// The `main` of a `harness = false` test target that re-runs itself as its own server (a
/// fresh single-threaded process that may fork): `serve(role)` when the environment variable
/// `role_variable` is set, else each scenario in turn, named as libtest names its tests,
/// stopping at the first failure.
pub fn serve_or_run(role_variable: &str, serve: fn(&str) -> Result<()>, scenarios: &[(&str, Scenario)]) -> Result<()> {
    if let Ok(role) = std::env::var(role_variable) {
        return serve(&role);
    }
    for (name, scenario) in scenarios {
        scenario().with_context(|| format!("test {name} failed"))?;
        println!("test {name} ... ok");
    }
    Ok(())
}
