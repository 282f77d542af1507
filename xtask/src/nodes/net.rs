//! The nodes' private network: one network namespace per node, joined to the host by a veth
//! pair on a /24 of its own, so that each node is a server on its own address, as on its own
//! machine. Everything made here is removed afterwards: by `Drop` when the run ends (well or
//! not), and by a janitor process if this one dies first (Ctrl-C, SIGKILL).

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

/// One node's namespace and address.
#[derive(Debug)]
pub struct NodeNet {
    pub namespace: String,
    pub address: Ipv4Addr,
    /// The host's end of its veth pair.
    host_link: String,
}

/// The namespaces and links of one run.
#[derive(Debug)]
pub struct Network {
    nodes: Vec<NodeNet>,
    janitor: Option<Child>,
}

/// `ip args...`, its error output in the error.
fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip").args(args).output().context("running ip (iproute2)")?;
    if !output.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

impl Network {
    /// `count` namespaces named after this run, node `i` at `10.<run>.<i>.2`, the host at
    /// `.1`. A machine where namespaces cannot be made is an error that says so.
    pub fn create(count: usize, extra_cleanup: &str) -> Result<Network> {
        let pid = std::process::id();
        let run = format!("spf{}", pid % 100_000);
        let octet = 100 + (pid % 100) as u8;
        let nodes: Vec<NodeNet> = (1..=count)
            .map(|i| NodeNet {
                namespace: format!("{run}-n{i}"),
                address: Ipv4Addr::new(10, octet, i as u8, 2),
                host_link: format!("{run}h{i}"),
            })
            .collect();
        let mut network = Network { nodes, janitor: None };
        network.janitor = Some(network.start_janitor(pid, extra_cleanup)?);
        for (i, node) in network.nodes.iter().enumerate() {
            let (host_link, node_link) = (node.host_link.clone(), format!("{run}n{}", i + 1));
            let host = Ipv4Addr::new(10, octet, i as u8 + 1, 1);
            ip(&["netns", "add", &node.namespace]).context(
                "cannot make a network namespace here: test-cluster --nodes needs root (or CAP_SYS_ADMIN and \
                 CAP_NET_ADMIN) and a kernel that allows network namespaces",
            )?;
            ip(&["link", "add", &host_link, "type", "veth", "peer", "name", &node_link, "netns", &node.namespace])?;
            ip(&["addr", "add", &format!("{host}/24"), "dev", &host_link])?;
            ip(&["link", "set", &host_link, "up"])?;
            let inside = |args: &[&str]| ip(&[&["netns", "exec", &node.namespace, "ip"], args].concat());
            inside(&["addr", "add", &format!("{}/24", node.address), "dev", &node_link])?;
            inside(&["link", "set", &node_link, "up"])?;
            inside(&["link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    pub fn node(&self, index: usize) -> &NodeNet {
        &self.nodes[index]
    }

    /// A shell that waits for this process to end, however it ends, then removes what it
    /// made (the same as `Drop`, which normally does it first). In its own process group, so
    /// that a Ctrl-C on the terminal does not take it down with this process.
    fn start_janitor(&self, pid: u32, extra_cleanup: &str) -> Result<Child> {
        let script = format!("tail --pid={pid} -f /dev/null; {} {extra_cleanup}", self.cleanup_script());
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the cleanup watcher")
    }

    /// Kills whatever runs in the namespaces, then deletes them (which deletes the veth
    /// pairs too). Idempotent.
    fn cleanup_script(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "ip netns pids {ns} 2>/dev/null | xargs -r kill -9; ip netns del {ns} 2>/dev/null;",
                    ns = n.namespace
                )
            })
            .collect()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("sh").args(["-c", &self.cleanup_script()]).status();
        // A veth pair goes once the last process in its namespace has exited: wait for it,
        // so that nothing is left when this returns.
        let gone = || self.nodes.iter().all(|n| !Path::new("/sys/class/net").join(&n.host_link).exists());
        let _ = prefork_tests::wait_for("the nodes' links to go", Duration::from_secs(20), || Ok(gone().then_some(())));
        if let Some(mut janitor) = self.janitor.take() {
            let _ = janitor.kill();
            let _ = janitor.wait();
        }
    }
}
