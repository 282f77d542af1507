//! Black-box tests of the transports with real clients: TLS and HTTP/2 (curl), unix domain
//! sockets, IPv6, HTTP/2 with prior knowledge, several connections per worker.

use std::process::Command;
use std::thread;

use anyhow::{Context as _, Result, bail, ensure};
use prefork_tests::{
    DEADLINE, ServerProcess, Sig, TempPath, count, http_get, is_alive, require_tool, status_json, wait_for,
};

/// Whether curl is here (`http2`: with HTTP/2); if not, the test is skipped (see
/// `require_tool`).
fn have_curl(http2: bool) -> Result<bool> {
    if http2 {
        let probe = ["sh", "-c", "curl --version | grep -qw HTTP2"];
        require_tool("curl with HTTP/2", &probe, "apt-get install curl")
    } else {
        require_tool("curl", &["curl", "--version"], "apt-get install curl")
    }
}

/// `curl args...`: (status code, HTTP version, body).
fn curl(args: &[&str]) -> Result<(u16, String, String)> {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20", "--write-out", "\n%{http_code} %{http_version}"])
        .args(args)
        .output()
        .context("running curl")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(output.status.success(), "curl {args:?} failed: {}{text}", String::from_utf8_lossy(&output.stderr));
    let (body, last) = text.rsplit_once('\n').context("no status line")?;
    let (code, version) = last.split_once(' ').context("no version")?;
    Ok((code.parse()?, version.to_owned(), body.to_owned()))
}

/// A self-signed certificate for localhost and 127.0.0.1, as PEM files.
struct Certificate {
    key: TempPath,
    cert: TempPath,
}

fn certificate() -> Result<Certificate> {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let (key, cert) = (TempPath::new("key.pem"), TempPath::new("cert.pem"));
    std::fs::write(key.path(), generated.signing_key.serialize_pem())?;
    std::fs::write(cert.path(), generated.cert.pem())?;
    Ok(Certificate { key, cert })
}

#[test]
fn tls_serves_http1_and_http2_by_alpn_and_survives_a_bad_handshake() -> Result<()> {
    if !have_curl(true)? {
        return Ok(());
    }
    let tls = certificate()?;
    let server = ServerProcess::start(&[
        "--start-servers",
        "2",
        "--min-spare-servers",
        "1",
        "--ssl-key",
        tls.key.as_str(),
        "--ssl-cert",
        tls.cert.as_str(),
    ])?;
    ensure!(server.listening().starts_with("https://127.0.0.1:"), "{}", server.listening());
    let url = format!("https://127.0.0.1:{}/", server.addr().port());
    let (code, version, body) = curl(&["--cacert", tls.cert.as_str(), "--http1.1", &url])?;
    ensure!(
        code == 200 && version == "1.1" && body.starts_with("Hello from simplehttp-prefork"),
        "{code} {version} {body}"
    );
    let (code, version, _) = curl(&["--cacert", tls.cert.as_str(), "--http2", &url])?;
    ensure!(code == 200 && version == "2", "ALPN should pick h2: {code} {version}");
    // Plain HTTP to the TLS port: that connection fails, the worker does not.
    let workers = wait_for("both workers", DEADLINE, || {
        let children = server.children();
        Ok((children.len() == 2).then_some(children))
    })?;
    let garbage = http_get(server.addr(), "/");
    ensure!(garbage.is_err() || garbage.is_ok_and(|r| r.status == 400), "a cleartext request on TLS got an answer");
    // A worker that died of it was dead before its client saw the connection end.
    ensure!(workers.iter().all(|pid| is_alive(*pid)), "a bad handshake cost a worker");
    let (code, _, _) = curl(&["--cacert", tls.cert.as_str(), &url])?;
    ensure!(code == 200);
    Ok(())
}

#[test]
fn http2_with_prior_knowledge_on_cleartext_when_enabled() -> Result<()> {
    if !have_curl(true)? {
        return Ok(());
    }
    let server = ServerProcess::start(&["--start-servers", "1", "--min-spare-servers", "1", "--http2"])?;
    let url = format!("http://127.0.0.1:{}/", server.addr().port());
    let (code, version, _) = curl(&["--http2-prior-knowledge", &url])?;
    ensure!(code == 200 && version == "2", "{code} {version}");
    let (code, version, _) = curl(&["--http1.1", &url])?;
    ensure!(code == 200 && version == "1.1", "HTTP/1.1 still works next to h2c: {code} {version}");
    Ok(())
}

#[test]
fn a_unix_domain_socket_serves_and_is_removed_at_exit() -> Result<()> {
    if !have_curl(false)? {
        return Ok(());
    }
    let socket = TempPath::new("server.sock");
    let mut server =
        ServerProcess::start(&["--start-servers", "1", "--min-spare-servers", "1", "--unix-socket", socket.as_str()])?;
    ensure!(server.listening() == format!("unix:{}", socket.as_str()), "{}", server.listening());
    let (code, _, body) = curl(&["--unix-socket", socket.as_str(), "http://localhost/"])?;
    ensure!(code == 200 && body.starts_with("Hello from"), "{code} {body}");
    // The status page answers unix-socket clients (the socket's permissions chose them).
    let (code, _, status) = curl(&["--unix-socket", socket.as_str(), "http://localhost/server-status?json"])?;
    ensure!(code == 200 && status.contains("\"processes\""), "{code} {status}");
    server.signal(Sig::SIGTERM)?;
    ensure!(server.wait_exit(DEADLINE)?.success());
    ensure!(!socket.path().exists(), "socket file left behind");
    Ok(())
}

#[test]
fn ipv6_loopback_serves_when_the_machine_has_ipv6() -> Result<()> {
    let has_ipv6 = std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|s| s.contains(" lo"));
    let mut command = Command::new(prefork_tests::server_binary()?);
    command.args(["--address", "::1", "--port", "0", "--start-servers", "1", "--min-spare-servers", "1"]);
    if !has_ipv6 {
        // Without IPv6, binding ::1 must fail with a clear message, not hang or panic.
        let output = command.output()?;
        ensure!(!output.status.success() && String::from_utf8_lossy(&output.stderr).contains("cannot listen on [::1]"));
        return Ok(());
    }
    if !have_curl(false)? {
        return Ok(());
    }
    let server = ServerProcess::spawn(command)?;
    ensure!(server.listening().starts_with("http://[::1]:"), "{}", server.listening());
    let (code, _, body) = curl(&["-g", &format!("http://[::1]:{}/", server.addr().port())])?;
    ensure!(code == 200 && body.contains("from ::1"), "{code} {body}");
    Ok(())
}

#[test]
fn with_worker_connections_one_worker_serves_several_connections_at_once() -> Result<()> {
    let pid_file = TempPath::new("conns.pid");
    let mut server = ServerProcess::start_pool(
        1,
        1,
        1,
        &["--max-clients", "1", "--worker-connections", "4", "--pid-file", pid_file.as_str()],
    )?;
    let addr = server.addr();
    let clients: Vec<_> = (0..4).map(|_| thread::spawn(move || http_get(addr, "/sleep/30000"))).collect();
    // All four are accepted and running together in the only worker.
    wait_for("four connections in one worker", DEADLINE, || {
        let status = status_json(&pid_file)?;
        let worker = &status["workers"][0];
        Ok((count(&status, "processes") == 1
            && worker["connections"] == 4
            && worker["requests"] == 0
            && worker["state"] == "W")
            .then_some(()))
    })?;
    server.signal(Sig::SIGQUIT)?;
    ensure!(server.wait_exit(DEADLINE)?.success());
    for client in clients {
        if client.join().is_err() {
            bail!("client thread panicked");
        }
    }
    Ok(())
}

#[test]
fn with_worker_connections_a_worker_below_its_limit_shows_idle() -> Result<()> {
    let server = ServerProcess::start_pool(1, 1, 1, &["--worker-connections", "3"])?;
    let addr = server.addr();
    // Runs until the test ends, however long the checks take.
    let _sleeper = thread::spawn(move || http_get(addr, "/sleep/60000"));
    // One of three places taken (and the status request a second): still idle, no spare
    // forked for it.
    wait_for("a busy but not full worker", DEADLINE, || {
        let status = server.status()?;
        // Both connections are in the one worker: the sleeper's and this status request's.
        let worker = &status["workers"][0];
        Ok((status["workers"].as_array().is_some_and(|w| w.len() == 1)
            && worker["state"] == "_"
            && worker["connections"].as_u64() >= Some(2)
            && !worker["running_seconds"].is_null())
        .then_some(()))
    })?;
    ensure!(server.children().len() == 1);
    Ok(())
}
