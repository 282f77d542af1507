//! The deployment files in `deploy/` agree with the server and with each other: every flag they
//! pass exists, the probes point at the server's probe paths and port, and the timings hold
//! together (a balancer or an orchestrator notices a draining node before it stops; the
//! process manager waits for the drain and the graceful stop before it kills).
//! HAProxy's config is also run for real, by `cargo xtask test-cluster --nodes 3`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use prefork_tests::{require_tool, run_command};
use yaml_rust2::{Yaml, YamlLoader};

fn deploy(path: &str) -> Result<String> {
    let file: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path);
    std::fs::read_to_string(&file).with_context(|| file.display().to_string())
}

/// `--flag value` pairs (and lone `--flag`s, with an empty value) of a command line.
fn flags(args: &[String]) -> BTreeMap<String, String> {
    let mut flags = BTreeMap::new();
    let mut words = args.iter().peekable();
    while let Some(word) = words.next() {
        if let Some(name) = word.strip_prefix("--") {
            let value = words.next_if(|next| !next.starts_with("--")).cloned().unwrap_or_default();
            flags.insert(name.to_owned(), value);
        }
    }
    flags
}

fn duration(flags: &BTreeMap<String, String>, name: &str, default: &str) -> Result<Duration> {
    let text = flags.get(name).map_or(default, String::as_str);
    humantime_like(text).with_context(|| format!("--{name} {text:?}"))
}

/// "5s", "25s", "1m", "500ms": what the deployment files use.
fn humantime_like(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number * 60),
        _ => return None,
    })
}

/// Every flag is one the server's `--help` lists.
fn flags_exist(what: &str, flags: &BTreeMap<String, String>) -> Result<()> {
    let help = String::from_utf8(run_command(&["--help"])?.stdout)?;
    for name in flags.keys() {
        ensure!(help.contains(&format!("--{name}")), "{what} passes --{name}, which the server does not have");
    }
    Ok(())
}

#[test]
fn the_kubernetes_manifest_probes_real_paths_with_timings_that_hold_together() -> Result<()> {
    let docs = YamlLoader::load_from_str(&deploy("kubernetes/deployment.yaml")?)?;
    let deployment = docs.iter().find(|d| d["kind"].as_str() == Some("Deployment")).context("no Deployment")?;
    let service = docs.iter().find(|d| d["kind"].as_str() == Some("Service")).context("no Service")?;
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<String> =
        container["args"].as_vec().context("no args")?.iter().filter_map(|a| a.as_str().map(str::to_owned)).collect();
    let flags = flags(&args);
    flags_exist("the Deployment", &flags)?;
    // The probes: the server's own paths, on the port it listens on.
    let port = container["ports"][0].clone();
    ensure!(port["containerPort"].as_i64().map(|p| p.to_string()) == flags.get("port").cloned(), "{port:?}");
    let port_name = port["name"].as_str().context("the port has no name")?;
    for (probe, path_flag, default) in
        [("livenessProbe", "health-path", "/healthz"), ("readinessProbe", "ready-path", "/readyz")]
    {
        let get = &container[probe]["httpGet"];
        let path = flags.get(path_flag).map_or(default, String::as_str);
        ensure!(get["path"].as_str() == Some(path), "{probe} probes {:?}, the server answers {path}", get["path"]);
        ensure!(get["port"].as_str() == Some(port_name), "{probe} probes port {:?}", get["port"]);
    }
    ensure!(service["spec"]["ports"][0]["targetPort"].as_str() == Some(port_name), "the Service targets another port");
    // Timings: not ready well within the drain; SIGKILL only after drain and graceful stop.
    let drain = duration(&flags, "drain-delay", "0s")?;
    let graceful = duration(&flags, "graceful-timeout", "30s")?;
    let readiness = &container["readinessProbe"];
    let noticed = Duration::from_secs(
        (readiness["periodSeconds"].as_i64().unwrap_or(10) * readiness["failureThreshold"].as_i64().unwrap_or(3))
            as u64,
    );
    ensure!(noticed < drain, "readiness fails after {noticed:?}, but the drain lasts {drain:?}");
    let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(30) as u64);
    ensure!(grace > drain + graceful, "grace period {grace:?} <= drain {drain:?} + graceful timeout {graceful:?}");
    ensure!(
        !matches!(container["lifecycle"]["preStop"], Yaml::Hash(_)) || drain.is_zero(),
        "a preStop hook and a drain delay both"
    );
    Ok(())
}

/// The systemd unit's text, and the flags of its `ExecStart` (continuation lines joined).
fn systemd_unit() -> Result<(String, BTreeMap<String, String>)> {
    let unit = deploy("systemd/simplehttp-prefork.service")?;
    let mut exec = Vec::new();
    for line in unit.lines().skip_while(|l| !l.starts_with("ExecStart=")) {
        exec.push(line.trim_end().trim_end_matches('\\'));
        if !line.trim_end().ends_with('\\') {
            break;
        }
    }
    let words: Vec<String> = exec.join(" ").split_whitespace().skip(1).map(str::to_owned).collect();
    Ok((unit, flags(&words)))
}

#[test]
fn the_systemd_unit_and_the_container_image_pass_real_flags_and_wait_long_enough() -> Result<()> {
    let (unit, unit_flags) = systemd_unit()?;
    flags_exist("the systemd unit", &unit_flags)?;
    let stop_timeout = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(humantime_like)
        .context("no TimeoutStopSec")?;
    let (drain, graceful) =
        (duration(&unit_flags, "drain-delay", "0s")?, duration(&unit_flags, "graceful-timeout", "30s")?);
    ensure!(stop_timeout > drain + graceful, "TimeoutStopSec {stop_timeout:?} <= {drain:?} + {graceful:?}");

    let image = deploy("Containerfile")?;
    let cmd = image.lines().find_map(|l| l.strip_prefix("CMD ")).context("no CMD")?;
    let words: Vec<String> =
        cmd.trim_matches(['[', ']']).split(',').map(|w| w.trim().trim_matches('"').to_owned()).collect();
    let image_flags = flags(&words);
    flags_exist("the Containerfile", &image_flags)?;
    let exposed = image.lines().find_map(|l| l.strip_prefix("EXPOSE ")).map(str::trim);
    ensure!(exposed == image_flags.get("port").map(String::as_str), "EXPOSE {exposed:?} and --port differ");
    Ok(())
}

/// The service tells systemd when it is ready (`Type=notify`), with a watchdog that leaves the
/// supervisor room for a reload hook between two feeds, and its socket unit listens where the
/// service would itself.
#[test]
fn the_systemd_units_use_the_notify_protocol_and_agree_on_the_socket() -> Result<()> {
    let (unit, unit_flags) = systemd_unit()?;
    let setting =
        |text: &str, key: &str| text.lines().find_map(|l| l.strip_prefix(key).map(str::trim).map(str::to_owned));
    ensure!(setting(&unit, "Type=").as_deref() == Some("notify"), "the service is not Type=notify");
    ensure!(setting(&unit, "NotifyAccess=").as_deref() == Some("main"), "workers may notify: NotifyAccess is not main");
    let watchdog = setting(&unit, "WatchdogSec=").and_then(|t| humantime_like(&t)).context("no WatchdogSec")?;
    ensure!(watchdog >= Duration::from_secs(2), "WatchdogSec {watchdog:?} leaves no room for a reload hook");
    let socket = deploy("systemd/simplehttp-prefork.socket")?;
    let listen = setting(&socket, "ListenStream=").context("no ListenStream")?;
    let address = format!("{}:{}", unit_flags.get("address").map_or("127.0.0.1", String::as_str), unit_flags["port"]);
    ensure!(listen == address, "the socket unit listens on {listen}, the service on {address}");
    ensure!(socket.lines().filter(|l| l.starts_with("Listen")).count() == 1, "a server serves one socket");
    Ok(())
}

/// HAProxy's checks take a node out faster than the deployment files' drain delays, on the
/// server's readiness path; and HAProxy itself accepts the file.
#[test]
fn the_haproxy_config_checks_readiness_faster_than_nodes_drain() -> Result<()> {
    let config = deploy("haproxy/haproxy.cfg")?;
    ensure!(config.contains("http-check send meth GET uri /readyz"), "the checks are not on /readyz");
    let default_server =
        config.lines().find(|l| l.trim_start().starts_with("default-server")).context("no default-server")?;
    let words: Vec<&str> = default_server.split_whitespace().collect();
    let after = |key: &str| words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).copied();
    let inter = after("inter").and_then(humantime_like).context("no inter")?;
    let fall: u32 = after("fall").and_then(|f| f.parse().ok()).context("no fall")?;
    let check_timeout = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("timeout check "))
        .and_then(|t| humantime_like(t.trim()))
        .unwrap_or(inter);
    // The slowest the balancer notices: `fall` checks `inter` apart, the last one timing out.
    let noticed = inter * (fall - 1) + check_timeout;
    // The drains it is paired with: the systemd unit's, and test-cluster's (which runs it).
    let unit_drain = duration(&systemd_unit()?.1, "drain-delay", "0s")?;
    let xtask = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../xtask/src/nodes/mod.rs"))?;
    let xtask_drain = xtask
        .lines()
        .find_map(|l| l.strip_prefix("const DRAIN_DELAY: &str = \""))
        .and_then(|rest| humantime_like(rest.trim_end_matches("\";")))
        .context("no DRAIN_DELAY in xtask/src/nodes/mod.rs")?;
    for (who, drain) in [("the systemd unit", unit_drain), ("test-cluster --nodes", xtask_drain)] {
        ensure!(noticed < drain, "HAProxy may take {noticed:?} to notice, {who} drains {drain:?}");
    }
    if !require_tool("haproxy", &["haproxy", "-v"], "apt-get install haproxy")? {
        return Ok(());
    }
    let socket = prefork_tests::TempPath::new("haproxy.sock");
    let output = std::process::Command::new("haproxy")
        .args(["-c", "-q", "-f"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy/haproxy.cfg"))
        .env("LB_BIND", "127.0.0.1:8080")
        .env("HAPROXY_STATS_SOCKET", socket.path())
        .envs((1..=4).map(|i| (format!("NODE{i}"), format!("10.0.0.{i}:8080"))))
        .output()?;
    let said = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success(), "haproxy -c (a check only: nothing is bound): {said}");
    Ok(())
}

/// nginx accepts the upstream config (in an `http` block, as it is meant to be included).
#[test]
fn the_nginx_config_is_valid() -> Result<()> {
    if !require_tool("nginx", &["nginx", "-v"], "apt-get install nginx")? {
        return Ok(());
    }
    let dir = prefork_tests::TempPath::new("nginx");
    std::fs::create_dir_all(dir.path().join("logs"))?;
    let upstream = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx/upstream.conf").canonicalize()?;
    let conf = dir.path().join("nginx.conf");
    let text = format!(
        "pid {dir}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n    access_log off;\n    include {};\n}}\n",
        upstream.display(),
        dir = dir.as_str()
    );
    std::fs::write(&conf, text)?;
    let output =
        std::process::Command::new("nginx").arg("-t").arg("-p").arg(dir.path()).arg("-c").arg(&conf).output()?;
    let _ = std::fs::remove_dir_all(dir.path());
    ensure!(output.status.success(), "nginx -t: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}
