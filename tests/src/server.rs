//! A server under test as a subprocess: started, listened to (its `listening on` line and its
//! log), signalled, and stopped; and the temporary paths tests give it.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::binary::{run_command, server_binary, server_command};
use crate::http::{HttpConnection, HttpResponse, http_get};
use crate::procfs::children_of;
use crate::{DEADLINE, wait_for};

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
        let status = wait_for("the server to exit", timeout, || Ok(self.child.try_wait()?))?;
        self.exit = Some(status);
        // Its last lines may still be in the pipe: wait until they are read (the pipe ends once
        // the server and its workers have all gone; an upgraded successor may keep it open,
        // hence the deadline).
        let _ = self.stderr_read.lock().unwrap().recv_timeout(Duration::from_secs(5));
        Ok(status)
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

/// Lines of `log` containing `text`.
pub fn lines_with(log: &str, text: &str) -> usize {
    log.lines().filter(|l| l.contains(text)).count()
}
