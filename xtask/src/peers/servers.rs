//! The servers `bench --peers` compares, each started on 127.0.0.1 with a port of its own and
//! stopped afterwards: the ceiling (`xtask ceiling`), bare hyper (`xtask bare-hyper`), nginx
//! and Apache prefork (Debian's, configured in a temporary directory), and simplehttp-prefork
//! in classic mode and with `--worker-connections 16`.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use prefork_tests::{ServerProcess, children_of, server_command};

pub const NGINX: &str = "/usr/sbin/nginx";
pub const APACHE: &str = "/usr/sbin/apache2";
const APACHE_MODULES: &str = "/usr/lib/apache2/modules";

/// The 12-byte body every static peer serves.
pub const HELLO: &str = "Hello world\n";

/// A server in the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    Ceiling,
    BareHyper,
    Nginx,
    Apache,
    Classic,
    WorkerConnections,
}

impl Peer {
    pub const ALL: [Peer; 6] =
        [Peer::Ceiling, Peer::BareHyper, Peer::Nginx, Peer::Apache, Peer::Classic, Peer::WorkerConnections];

    /// The row name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Peer::Ceiling => "ceiling: 40 forked processes, blocking accept/read/write, canned reply",
            Peer::BareHyper => "bare hyper 1, multi-thread tokio",
            Peer::Nginx => "nginx (2 workers, static file)",
            Peer::Apache => "Apache 2.4 prefork (static file)",
            Peer::Classic => "simplehttp-prefork, classic (40-64 processes)",
            Peer::WorkerConnections => "simplehttp-prefork, `--worker-connections 16` (4 processes)",
        }
    }

    /// The short name, for the chart and the ratios.
    pub fn short(self) -> &'static str {
        match self {
            Peer::Ceiling => "ceiling",
            Peer::BareHyper => "bare hyper",
            Peer::Nginx => "nginx",
            Peer::Apache => "Apache prefork",
            Peer::Classic => "classic",
            Peer::WorkerConnections => "worker-connections 16",
        }
    }

    /// Worker processes to wait for before measuring.
    fn workers(self) -> usize {
        match self {
            Peer::Ceiling | Peer::Apache | Peer::Classic => 40,
            Peer::BareHyper => 0,
            Peer::Nginx => 2,
            Peer::WorkerConnections => 4,
        }
    }

    /// Whether this peer is a process pool whose workers are children of the started process.
    pub fn has_workers(self) -> bool {
        self.workers() > 0
    }

    /// Why this peer cannot run `flavor`, if it cannot.
    pub fn unsupported(self, flavor: Flavor) -> Option<&'static str> {
        match (self, flavor) {
            (_, Flavor::Plain) => None,
            (Peer::Nginx | Peer::Apache, Flavor::Block(_)) => Some("serves files: no handler to block in"),
            (Peer::Ceiling | Peer::BareHyper, Flavor::Tls) => Some("no TLS"),
            (Peer::Ceiling | Peer::BareHyper, Flavor::H2c) => Some("HTTP/1.1 only"),
            (Peer::Apache, Flavor::Tls | Flavor::H2c) => Some("not configured in this bench"),
            _ => None,
        }
    }

    /// Whether this peer needs a program that is not installed, and which.
    pub fn missing(self) -> Option<&'static str> {
        let program = match self {
            Peer::Nginx => NGINX,
            Peer::Apache => APACHE,
            _ => return None,
        };
        (!Path::new(program).exists()).then_some(program)
    }
}

/// What the server is set up to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// HTTP/1.1 on cleartext, the 12-byte hello (or the server's `/`).
    Plain,
    /// A handler that blocks its thread this long.
    Block(Duration),
    /// HTTPS with the bench's self-signed certificate.
    Tls,
    /// HTTP/2 with prior knowledge on cleartext (and HTTP/1.1).
    H2c,
}

/// What every server start needs.
#[derive(Debug)]
pub struct Env {
    /// The release `simplehttp-prefork`.
    pub binary: PathBuf,
    /// This (release) xtask, for `ceiling` and `bare-hyper`.
    pub xtask: PathBuf,
    /// PEM certificate and key shared by every TLS server.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Arguments of simplehttp-prefork in each mode.
pub const CLASSIC_ARGS: &[&str] =
    &["--start-servers", "40", "--min-spare-servers", "40", "--max-spare-servers", "48", "--max-clients", "64"];
pub const WORKER_CONNECTIONS_ARGS: &[&str] = &[
    "--worker-connections",
    "16",
    "--start-servers",
    "4",
    "--min-spare-servers",
    "1",
    "--max-spare-servers",
    "4",
    "--max-clients",
    "4",
];

/// A running server; dropping it stops it and removes its temporary directory.
#[derive(Debug)]
pub struct Running {
    pub peer: Peer,
    /// The URL to load, path included.
    pub url: String,
    /// How it was started, for the report.
    pub command: String,
    /// The configuration file written for it, if any, for the report.
    pub config: Option<String>,
    process: Process,
    dir: Option<TempDir>,
}

#[derive(Debug)]
enum Process {
    /// Prints `listening on …`; killed with its children on drop.
    Harness(ServerProcess),
    /// nginx or Apache: stopped with SIGTERM, as their own tools do.
    Child(Child),
}

impl Running {
    /// The started process (the supervisor, master or parent).
    pub fn pid(&self) -> u32 {
        match &self.process {
            Process::Harness(server) => server.pid(),
            Process::Child(child) => child.id(),
        }
    }

    /// The processes that serve requests: the children of a pool, or the server itself.
    pub fn workers(&self) -> Vec<u32> {
        if self.peer.has_workers() { children_of(self.pid()) } else { vec![self.pid()] }
    }

    /// The listening address.
    pub fn addr(&self) -> Result<SocketAddr> {
        let rest = self.url.split_once("://").map(|(_, rest)| rest).context("url")?;
        Ok(rest.split('/').next().unwrap_or_default().parse()?)
    }

    /// The simplehttp-prefork process, for its status page.
    pub fn server_process(&self) -> Option<&ServerProcess> {
        match &self.process {
            Process::Harness(server) => Some(server),
            Process::Child(_) => None,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Process::Child(child) = &mut self.process {
            let workers = children_of(child.id());
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            for pid in workers {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        // A harness process is killed, with its children, by its own drop.
    }
}

/// Starts `peer` set up for `flavor` and waits until its workers are up.
pub fn start(peer: Peer, flavor: Flavor, env: &Env) -> Result<Running> {
    let running = match peer {
        Peer::Ceiling => {
            let mut command = Command::new(&env.xtask);
            command.args(["ceiling", "--workers", "40"]);
            if let Flavor::Block(delay) = flavor {
                command.args(["--delay", &format!("{}ms", delay.as_millis())]);
            }
            harness(peer, command, flavor)?
        }
        Peer::BareHyper => {
            let mut command = Command::new(&env.xtask);
            command.args(["bare-hyper", "--port", "0"]);
            harness(peer, command, flavor)?
        }
        Peer::Classic | Peer::WorkerConnections => {
            let mut args: Vec<&str> =
                if peer == Peer::Classic { CLASSIC_ARGS.to_vec() } else { WORKER_CONNECTIONS_ARGS.to_vec() };
            let (cert, key) = (path_str(&env.cert)?, path_str(&env.key)?);
            match flavor {
                Flavor::Tls => args.extend(["--ssl-key", key, "--ssl-cert", cert]),
                Flavor::H2c => args.push("--http2"),
                Flavor::Plain | Flavor::Block(_) => {}
            }
            let mut command = server_command(&env.binary, &args);
            command.env("RUST_LOG", "warn");
            harness(peer, command, flavor)?
        }
        Peer::Nginx => nginx(flavor, env)?,
        Peer::Apache => apache()?,
    };
    wait_ready(&running)?;
    Ok(running)
}

/// Starts a server that prints `listening on …`; it is loaded at `/`, or at `/block/<ms>` for
/// a blocking handler (the ceiling blocks on every request instead).
fn harness(peer: Peer, command: Command, flavor: Flavor) -> Result<Running> {
    let line = command_line(&command);
    let server = ServerProcess::spawn(command).with_context(|| format!("starting {}", peer.short()))?;
    let path = match flavor {
        Flavor::Block(delay) if peer != Peer::Ceiling => format!("/block/{}", delay.as_millis()),
        _ => "/".to_owned(),
    };
    Ok(Running {
        peer,
        url: format!("{}{path}", server.listening()),
        command: line,
        config: None,
        process: Process::Harness(server),
        dir: None,
    })
}

fn nginx(flavor: Flavor, env: &Env) -> Result<Running> {
    let dir = TempDir::new("nginx")?;
    let port = free_port()?;
    let (listen, tls) = match flavor {
        Flavor::Tls => (
            " ssl",
            // No resumption: wrk resumes a session whenever the server allows it, and then the
            // run would count abbreviated handshakes for nginx and full ones for the others.
            format!(
                "        ssl_certificate {};\n        ssl_certificate_key {};\n        \
                 ssl_session_tickets off;\n        ssl_session_cache off;\n",
                env.cert.display(),
                env.key.display()
            ),
        ),
        Flavor::H2c => (" http2", String::new()),
        Flavor::Plain | Flavor::Block(_) => ("", String::new()),
    };
    let d = dir.path().display();
    let config = format!(
        "daemon off;\nmaster_process on;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{\n    worker_connections 4096;\n}}\n\
         http {{\n    access_log off;\n    default_type text/plain;\n    keepalive_requests 1000000;\n    \
         open_file_cache max=64;\n    \
         client_body_temp_path {d}/client_body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    \
         uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n    \
         server {{\n        listen 127.0.0.1:{port}{listen};\n{tls}        root {d}/htdocs;\n        location / {{ }}\n    }}\n}}\n"
    );
    let conf = dir.write("nginx.conf", &config)?;
    let mut command = Command::new(NGINX);
    command.arg("-p").arg(dir.path()).arg("-c").arg(&conf).arg("-e").arg(dir.path().join("error.log"));
    let scheme = if flavor == Flavor::Tls { "https" } else { "http" };
    spawn_child(Peer::Nginx, command, dir, config, format!("{scheme}://127.0.0.1:{port}/hello.txt"))
}

fn apache() -> Result<Running> {
    let dir = TempDir::new("apache")?;
    let port = free_port()?;
    // Run as root, Apache switches its children to `User`; it refuses to serve as root.
    let (user, group) = if passwd_has("www-data") { ("www-data", "www-data") } else { ("nobody", "nogroup") };
    let d = dir.path().display();
    let mut config = String::new();
    for (module, file) in [("mpm_prefork_module", "mod_mpm_prefork.so"), ("authz_core_module", "mod_authz_core.so")] {
        writeln!(config, "LoadModule {module} {APACHE_MODULES}/{file}")?;
    }
    write!(
        config,
        "ServerRoot {d}\nDefaultRuntimeDir {d}\nPidFile {d}/apache2.pid\nErrorLog {d}/error.log\nLogLevel warn\n\
         ServerName 127.0.0.1\nListen 127.0.0.1:{port}\nUser {user}\nGroup {group}\n\
         KeepAlive On\nMaxKeepAliveRequests 0\nKeepAliveTimeout 5\nTimeout 30\n\
         StartServers 40\nMinSpareServers 40\nMaxSpareServers 48\nServerLimit 64\nMaxRequestWorkers 64\n\
         MaxConnectionsPerChild 0\n\
         DocumentRoot {d}/htdocs\n<Directory {d}/htdocs>\n    Require all granted\n</Directory>\n"
    )?;
    let conf = dir.write("apache2.conf", &config)?;
    let mut command = Command::new(APACHE);
    command.arg("-f").arg(&conf).arg("-DFOREGROUND");
    spawn_child(Peer::Apache, command, dir, config, format!("http://127.0.0.1:{port}/hello.txt"))
}

fn spawn_child(peer: Peer, mut command: Command, dir: TempDir, config: String, url: String) -> Result<Running> {
    let line = command_line(&command);
    let child = command
        // Apache prefork stops by signalling its whole process group: not this one.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {line}"))?;
    Ok(Running { peer, url, command: line, config: Some(config), process: Process::Child(child), dir: Some(dir) })
}

/// Waits until the server's workers are up and it accepts connections.
fn wait_ready(running: &Running) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = running.addr()?;
    loop {
        let workers = if running.peer.has_workers() { children_of(running.pid()).len() } else { 0 };
        if workers >= running.peer.workers() && TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            break;
        }
        if !crate::peers::alive(running.pid()) || Instant::now() > deadline {
            let log = running
                .dir
                .as_ref()
                .and_then(|d| std::fs::read_to_string(d.path().join("error.log")).ok())
                .or_else(|| running.server_process().map(ServerProcess::stderr))
                .unwrap_or_default();
            bail!("{} did not come up ({workers} workers) on {addr}: {log}", running.peer.short());
        }
        thread::sleep(Duration::from_millis(50));
    }
    // Let the pool settle (workers report ready, the first maintenance round passes).
    thread::sleep(Duration::from_millis(500));
    Ok(())
}

/// A port that was free a moment ago on 127.0.0.1 (for servers that cannot be told port 0).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn passwd_has(user: &str) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .map(|p| p.lines().any(|l| l.split(':').next() == Some(user)))
        .unwrap_or(false)
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().context("temporary paths are UTF-8")
}

fn command_line(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// A temporary directory readable by unprivileged workers (nginx's `nobody`, Apache's
/// `www-data`), with `htdocs/hello.txt`; removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Result<TempDir> {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("xtask-bench-{}-{n}-{name}", std::process::id()));
        std::fs::create_dir_all(path.join("htdocs"))?;
        for dir in [path.clone(), path.join("htdocs")] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        }
        let dir = TempDir(path);
        dir.write("htdocs/hello.txt", HELLO)?;
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` in the directory (mode 0644) and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let path = self.0.join(name);
        std::fs::write(&path, contents)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
