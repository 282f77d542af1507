//! HAProxy in front of the nodes, run from `deploy/haproxy/haproxy.cfg` itself (its addresses
//! from the environment), and read through its runtime API: each node's state as the balancer
//! sees it, and the responses it got from each.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use prefork_tests::wait_for;

/// The `server` lines of the config: one per node, `node1` ...
pub const SERVERS: usize = 4;

/// One node as HAProxy sees it (a row of `show stat`).
#[derive(Clone, Debug, Default)]
pub struct ServerStat {
    /// `UP`, `DOWN`, `UP 1/2` (going down), `DOWN 1/2` (coming up), `MAINT`...
    pub status: String,
    /// Responses with a 2xx status it answered.
    pub responses_2xx: u64,
    /// Requests sent to it again after a failure (`wretr`), and sent elsewhere (`wredis`).
    pub retries: u64,
    pub redispatches: u64,
}

/// A running HAProxy.
#[derive(Debug)]
pub struct Balancer {
    child: Child,
    pub address: SocketAddr,
    stats_socket: PathBuf,
}

impl Balancer {
    /// Starts HAProxy on a free loopback port with `nodes` (address:port of `node1`...), its
    /// runtime API on `stats_socket`, its pid in `pid_file`; waits until the API answers.
    pub fn start(config: &Path, stats_socket: &Path, pid_file: &Path, nodes: &[String; SERVERS]) -> Result<Balancer> {
        // A free port: bound and released at once (HAProxy binds it again right away).
        let address = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let stats_socket = stats_socket.to_path_buf();
        let mut command = Command::new("haproxy");
        command
            .args(["-db", "-q"])
            .arg("-f")
            .arg(config)
            .env("LB_BIND", address.to_string())
            .env("HAPROXY_STATS_SOCKET", &stats_socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (i, node) in nodes.iter().enumerate() {
            command.env(format!("NODE{}", i + 1), node);
        }
        let child = command.spawn().context("starting haproxy (apt-get install haproxy)")?;
        // For the cleanup watcher, should this process die first (in the foreground, HAProxy
        // writes no pid file of its own).
        std::fs::write(pid_file, child.id().to_string())?;
        let mut balancer = Balancer { child, address, stats_socket };
        wait_for("haproxy's runtime API", Duration::from_secs(20), || {
            if let Some(status) = balancer.child.try_wait()? {
                bail!("haproxy exited: {status}");
            }
            Ok(balancer.servers().ok())
        })?;
        Ok(balancer)
    }

    /// A runtime API command's answer.
    fn ask(&self, command: &str) -> Result<String> {
        let mut socket = UnixStream::connect(&self.stats_socket)?;
        socket.set_read_timeout(Some(Duration::from_secs(10)))?;
        socket.write_all(format!("{command}\n").as_bytes())?;
        let mut answer = String::new();
        socket.read_to_string(&mut answer)?;
        Ok(answer)
    }

    /// `node1`... in order, as HAProxy sees them now.
    pub fn servers(&self) -> Result<Vec<ServerStat>> {
        let csv = self.ask("show stat")?;
        let mut lines = csv.lines();
        let header = lines.next().context("empty show stat")?.trim_start_matches("# ");
        let columns: Vec<&str> = header.split(',').collect();
        let column = |name: &str| columns.iter().position(|c| *c == name).with_context(|| format!("no {name}"));
        let (px, sv, status) = (column("pxname")?, column("svname")?, column("status")?);
        let (ok, retries, redispatches) = (column("hrsp_2xx")?, column("wretr")?, column("wredis")?);
        let mut servers = vec![ServerStat::default(); SERVERS];
        for line in lines {
            let fields: Vec<&str> = line.split(',').collect();
            let index = fields.get(sv).and_then(|name| name.strip_prefix("node")).and_then(|n| n.parse::<usize>().ok());
            if fields.get(px) != Some(&"nodes") {
                continue;
            }
            if let Some(server) = index.and_then(|n| n.checked_sub(1)).and_then(|i| servers.get_mut(i)) {
                let number = |i: usize| fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
                *server = ServerStat {
                    status: fields.get(status).unwrap_or(&"").to_string(),
                    responses_2xx: number(ok),
                    retries: number(retries),
                    redispatches: number(redispatches),
                };
            }
        }
        Ok(servers)
    }

    /// Waits until HAProxy sees node `index` (0-based) fully up (`up`) or down.
    pub fn wait_node(&self, index: usize, up: bool, timeout: Duration) -> Result<()> {
        let want = if up { "UP" } else { "DOWN" };
        wait_for(&format!("haproxy to see node{} {want}", index + 1), timeout, || {
            Ok((self.servers()?[index].status == want).then_some(()))
        })
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
