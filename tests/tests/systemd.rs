//! systemd integration, without systemd running: the notify protocol against a test's own
//! `NOTIFY_SOCKET` (ready once the first generation is, reloading then ready again, stopping,
//! the pool's status, the watchdog), and socket activation through Debian's
//! `systemd-socket-activate`, which binds, waits for a first connection and execs the server
//! with the socket as descriptor 3: that first connection, made before the server existed, is
//! served, and so is a closed-loop client after it.

use std::io::{Read as _, Write as _};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context as _, Result, ensure};
use nix::sys::signal::Signal;
use prefork_tests::{DEADLINE, ServerProcess, TempPath, http_get, require_tool, server_binary, wait_for};

/// Every datagram the server sent to the test's `NOTIFY_SOCKET`, in order.
struct NotifyListener {
    _path: TempPath,
    received: Arc<Mutex<Vec<String>>>,
}

impl NotifyListener {
    fn bind() -> Result<(NotifyListener, String)> {
        let path = TempPath::new("notify.sock");
        let socket = UnixDatagram::bind(path.path())?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                sink.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        let name = path.as_str().to_owned();
        Ok((NotifyListener { _path: path, received }, name))
    }

    fn messages(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// Waits for a message (after the first `after` ones) with every line of `lines`.
    fn wait_for(&self, after: usize, lines: &[&str]) -> Result<usize> {
        wait_for(&format!("a notification with {lines:?}"), DEADLINE, || {
            let messages = self.messages();
            Ok(messages.iter().enumerate().skip(after).find_map(|(index, message)| {
                lines.iter().all(|line| message.lines().any(|l| l.starts_with(line))).then_some(index + 1)
            }))
        })
        .with_context(|| format!("received: {:?}", self.messages()))
    }
}

/// `sh -c 'WATCHDOG_PID=$$ exec server ...'`: systemd names the main pid it watches, which a
/// test can only know once the shell that becomes the server runs.
fn watched_server(notify_socket: &str, args: &[&str]) -> Result<Command> {
    let mut command = Command::new("sh");
    command
        .args(["-c", "WATCHDOG_PID=$$ exec \"$@\"", "sh"])
        .arg(server_binary()?)
        .args(["--address", "127.0.0.1", "--port", "0", "--demo"])
        .args(args)
        .env("NOTIFY_SOCKET", notify_socket)
        .env("WATCHDOG_USEC", "400000");
    Ok(command)
}

#[test]
fn the_service_manager_hears_ready_reloading_ready_stopping_the_status_and_the_watchdog() -> Result<()> {
    let (notify, socket) = NotifyListener::bind()?;
    let config = TempPath::new("notified.toml");
    std::fs::write(config.path(), "start_servers = 2\nmin_spare_servers = 2\nmax_spare_servers = 4\n")?;
    let mut server = ServerProcess::spawn(watched_server(&socket, &["--config", config.as_str()])?)?;
    let ready = notify.wait_for(0, &["READY=1", "STATUS="])?;
    ensure!(server.get("/readyz")?.status == 200, "READY=1 before the readiness probe says ready");
    // The status sent with READY=1 is the pool as the supervisor saw it then.
    let first = &notify.messages()[ready - 1];
    ensure!(serving(first, 1)? >= 2, "READY=1 before two workers of generation 1 were: {first:?}");
    // The watchdog is fed on and on, not just once (WATCHDOG_USEC 0.4 s: every 0.2 s).
    wait_for("three watchdog pings", DEADLINE, || {
        Ok((notify.messages().iter().filter(|m| m.lines().any(|l| l == "WATCHDOG=1")).count() >= 3).then_some(()))
    })?;

    server.signal(Signal::SIGHUP)?;
    let reloading = notify.wait_for(ready, &["RELOADING=1", "MONOTONIC_USEC="])?;
    let reloaded = notify.wait_for(reloading, &["READY=1", "STATUS="])?;
    let status = &notify.messages()[reloaded - 1];
    ensure!(serving(status, 2)? >= 2, "READY=1 after the reload before generation 2 was ready: {status:?}");

    // A reload whose hook fails (the configuration file no longer reads): ready again at once,
    // as the old generation serves on, and the status says why.
    std::fs::write(config.path(), "start_servers = [\n")?;
    server.signal(Signal::SIGHUP)?;
    let reloading = notify.wait_for(reloaded, &["RELOADING=1", "MONOTONIC_USEC="])?;
    let reloaded = notify.wait_for(reloading, &["READY=1", "STATUS=reload abandoned"])?;

    // A graceful stop waits for a long request: the watchdog is fed meanwhile.
    let addr = server.addr();
    let long = std::thread::spawn(move || http_get(addr, "/sleep/60000"));
    wait_for("the long request running", DEADLINE, || {
        let status = server.status()?;
        let running = status["workers"].as_array().into_iter().flatten();
        Ok(running
            .clone()
            .any(|w| w["request"]["line"].as_str().is_some_and(|l| l.contains("/sleep/60000")))
            .then_some(()))
    })?;
    server.signal(Signal::SIGTERM)?;
    let stopping = notify.wait_for(reloaded, &["STOPPING=1"])?;
    notify.wait_for(stopping, &["WATCHDOG=1"])?;
    ensure!(!long.is_finished(), "the long request ended before the watchdog was fed during the stop");
    server.signal(Signal::SIGQUIT)?; // no need to wait the minute out
    server.wait_exit(DEADLINE)?;
    let _ = long.join();
    let readies = notify.messages().iter().filter(|m| m.lines().any(|l| l == "READY=1")).count();
    ensure!(readies == 3, "READY=1 at start and after each reload only: {:?}", notify.messages());
    Ok(())
}

/// How many workers of `generation` a `STATUS=generation G: I idle, B busy, S starting` line
/// counts as serving (idle or busy).
fn serving(message: &str, generation: u64) -> Result<usize> {
    let status = message.lines().find_map(|l| l.strip_prefix("STATUS=")).context("no STATUS")?;
    let counts = status.strip_prefix(&format!("generation {generation}: ")).with_context(|| status.to_owned())?;
    let number = |word: &str| -> Result<usize> {
        let before = counts.split(&format!(" {word}")).next().context("no count")?;
        Ok(before.rsplit(' ').next().context("no count")?.parse()?)
    };
    Ok(number("idle")? + number("busy")?)
}

#[test]
fn without_notify_socket_nothing_is_sent_and_a_dead_socket_does_not_stop_the_server() -> Result<()> {
    // A NOTIFY_SOCKET nobody listens on: sends fail, the server says so once and serves on.
    let dead = TempPath::new("nobody.sock");
    let mut command = watched_server(dead.as_str(), &["--start-servers", "1"])?;
    command.env_remove("WATCHDOG_USEC");
    let server = ServerProcess::spawn(command)?;
    wait_for("ready", DEADLINE, || Ok((server.get("/readyz")?.status == 200).then_some(())))?;
    server.wait_logged("cannot notify the service manager")?;
    ensure!(server.get("/")?.status == 200);
    ensure!(server.stderr().matches("cannot notify the service manager").count() == 1, "{}", server.stderr());
    Ok(())
}

/// `systemd-socket-activate -l ADDR server ...`: the server serves the socket it is given.
fn activated(listen: &str, args: &[&str]) -> Result<Command> {
    let mut command = Command::new("systemd-socket-activate");
    // --port 0: ignored with a socket passed (were it not, the server would say another port).
    command
        .args(["-l", listen])
        .arg(server_binary()?)
        .args(["--demo", "--address", "127.0.0.1", "--port", "0"])
        .args(args);
    Ok(command)
}

/// Connects (retrying while the socket is not bound yet) and sends a request: the connection
/// that makes `systemd-socket-activate` start the server.
fn first_connection(
    connect: impl Fn() -> std::io::Result<Box<dyn ReadWrite>> + Send + 'static,
) -> JoinHandle<Result<String>> {
    std::thread::spawn(move || -> Result<String> {
        let mut stream = wait_for("the activation socket", DEADLINE, || Ok(connect().ok()))?;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })
}

trait ReadWrite: std::io::Read + std::io::Write + Send {}
impl<T: std::io::Read + std::io::Write + Send> ReadWrite for T {}

#[test]
fn socket_activation_serves_the_passed_tcp_socket_and_the_connection_that_started_it() -> Result<()> {
    if !require_tool("systemd-socket-activate", &["systemd-socket-activate", "--version"], "apt-get install systemd")? {
        return Ok(());
    }
    // A free port, given back at once: systemd-socket-activate needs a number. Another
    // process may take it meanwhile: then try another.
    let (server, listen, addr, first) = {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let listen = format!("127.0.0.1:{port}");
            let addr: std::net::SocketAddr = listen.parse()?;
            let first =
                first_connection(move || Ok(Box::new(std::net::TcpStream::connect(addr)?) as Box<dyn ReadWrite>));
            match ServerProcess::spawn(activated(&listen, &["--start-servers", "2"])?) {
                Ok(server) => break (server, listen, addr, first),
                Err(_) if attempts < 3 => continue, // the port was taken meanwhile
                Err(error) => return Err(error),
            }
        }
    };
    ensure!(server.listening() == format!("http://{listen}"), "listening on {}", server.listening());
    server.wait_logged("serving the socket passed by the service manager")?;
    let answer = first.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
    ensure!(answer.starts_with("HTTP/1.1 200"), "the first connection: {answer:?}");
    for _ in 0..200 {
        let response = http_get(addr, "/")?;
        ensure!(response.status == 200, "{}", response.status);
    }
    Ok(())
}

#[test]
fn socket_activation_serves_a_passed_unix_socket_and_leaves_its_file_to_its_owner() -> Result<()> {
    if !require_tool("systemd-socket-activate", &["systemd-socket-activate", "--version"], "apt-get install systemd")? {
        return Ok(());
    }
    let path = TempPath::new("activated.sock");
    let connect_to = path.path().to_path_buf();
    let first = first_connection(move || Ok(Box::new(UnixStream::connect(&connect_to)?) as Box<dyn ReadWrite>));
    let mut server = ServerProcess::spawn(activated(path.as_str(), &["--start-servers", "1"])?)?;
    ensure!(server.listening() == format!("unix:{}", path.as_str()), "listening on {}", server.listening());
    let answer = first.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
    ensure!(answer.starts_with("HTTP/1.1 200"), "the first connection: {answer:?}");
    server.signal(Signal::SIGTERM)?;
    ensure!(server.wait_exit(DEADLINE)?.success(), "{}", server.stderr());
    ensure!(Path::new(path.as_str()).exists(), "the server removed a socket file it did not create");
    Ok(())
}

#[test]
fn two_passed_sockets_are_refused_with_a_clear_error() -> Result<()> {
    if !require_tool("systemd-socket-activate", &["systemd-socket-activate", "--version"], "apt-get install systemd")? {
        return Ok(());
    }
    let (a, b) = (TempPath::new("two-a.sock"), TempPath::new("two-b.sock"));
    let mut command = Command::new("systemd-socket-activate");
    command.args(["-l", a.as_str(), "-l", b.as_str()]).arg(server_binary()?);
    let connect_to = a.path().to_path_buf();
    let first = first_connection(move || Ok(Box::new(UnixStream::connect(&connect_to)?) as Box<dyn ReadWrite>));
    let output = prefork_tests::run_to_end(command, DEADLINE)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.code() == Some(1), "{:?}: {stderr}", output.status);
    ensure!(stderr.contains("2 sockets passed"), "{stderr}");
    let _ = first.join(); // its connection is closed unanswered
    Ok(())
}
