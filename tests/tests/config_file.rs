//! `--config FILE` (TOML) and `check-config FILE`: the file's options apply, the command line's
//! win over them, the defaults fill the rest; an unknown key, a wrong value or an impossible
//! combination is an error naming the key and its line, and the server does not start.

use anyhow::{Result, ensure};
use nix::sys::signal::Signal;
use prefork_tests::{
    DEADLINE, ServerProcess, TempPath, only_generation, run_command, server_binary, server_command, wait_for,
};

fn file(name: &str, text: &str) -> Result<TempPath> {
    let path = TempPath::new(name);
    std::fs::write(path.path(), text)?;
    Ok(path)
}

#[test]
fn the_files_options_apply_and_the_command_line_wins() -> Result<()> {
    let config = file(
        "options.toml",
        "# a node's settings\nstart_servers = 3\nmin_spare_servers = 2\nmax_spare_servers = 4\n\
         max_requests_per_child = 500\nkeepalive_timeout = \"3s\"\nstatus_allow = [\"127.0.0.0/8\"]\n",
    )?;
    let server = ServerProcess::spawn(server_command(
        &server_binary()?,
        &["--config", config.as_str(), "--max-spare-servers", "5"],
    ))?;
    let status = server.status()?;
    let config_in_force = &status["config"];
    ensure!(config_in_force["start_servers"] == 3 && config_in_force["min_spare_servers"] == 2, "{config_in_force}");
    ensure!(config_in_force["max_requests_per_child"] == 500, "{config_in_force}");
    ensure!(config_in_force["max_spare_servers"] == 5, "the command line did not win: {config_in_force}");
    ensure!(config_in_force["max_clients"] == 256, "the default did not fill in: {config_in_force}");
    Ok(())
}

#[test]
fn a_bad_file_is_an_error_naming_the_key_and_its_line_and_nothing_starts() -> Result<()> {
    for (name, text, said) in [
        ("unknown.toml", "start_servers = 2\n\nmax_clientz = 4\n", "line 3: unknown key `max_clientz`"),
        ("type.toml", "# x\nstart_servers = \"many\"\n", "line 2: `start_servers`: invalid value 'many'"),
        ("bool.toml", "demo = \"yes\"\n", "line 1: `demo` is true or false"),
        ("table.toml", "[pool]\nstart_servers = 2\n", "unknown key `pool`"),
        ("list.toml", "port = [1, 2]\n", "line 1: `port` takes one value, not a list"),
        ("duplicate.toml", "port = 1\nport = 2\n", "line 2"),
        ("syntax.toml", "port = [\n", "line 1"),
        (
            "impossible.toml",
            "start_servers = 20\nmax_clients = 4\n",
            "start_servers (20) cannot exceed max_clients (4)",
        ),
    ] {
        let config = file(name, text)?;
        let output = run_command(&["--port", "0", "--config", config.as_str()])?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        ensure!(!output.status.success() && !stdout.contains("listening on"), "{name} started: {stdout}{stderr}");
        ensure!(stderr.contains(config.as_str()) && stderr.contains(said), "{name}: {stderr}");
        let checked = run_command(&["check-config", config.as_str()])?;
        let checked_said = String::from_utf8_lossy(&checked.stderr);
        ensure!(!checked.status.success() && checked_said.contains(said), "check-config {name}: {checked_said}");
    }
    Ok(())
}

#[test]
fn check_config_prints_every_effective_value_and_where_it_came_from() -> Result<()> {
    let config = file(
        "checked.toml",
        "port = 9090\nno_keepalive = true\nhostname = \"-odd-but-valid\"\nstatus_allow = [\"10.0.0.0/8\", \"::1/128\"]\n",
    )?;
    let output = run_command(&["check-config", config.as_str()])?;
    let said = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success(), "{said}{}", String::from_utf8_lossy(&output.stderr));
    for line in [
        "port = 9090  # file",
        "hostname = \"-odd-but-valid\"  # file",
        "no_keepalive = true  # file",
        "status_allow = [\"10.0.0.0/8\", \"::1/128\"]  # file",
        "max_clients = 256  # default",
    ] {
        ensure!(said.lines().any(|l| l == line), "no {line:?} in\n{said}");
    }
    ensure!(said.trim_end().ends_with(": ok"), "{said}");
    Ok(())
}

/// A request with `headers` headers besides Host, on a new connection: its status.
fn status_with_headers(server: &ServerProcess, headers: usize) -> Result<u16> {
    let mut request = String::from("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for n in 0..headers {
        request.push_str(&format!("X-Header-{n}: {n}\r\n"));
    }
    request.push_str("\r\n");
    let mut connection = server.connect()?;
    connection.send(request.as_bytes())?;
    Ok(connection.read_response()?.status)
}

#[test]
fn hup_reads_the_file_again_applies_what_it_can_and_keeps_the_running_configuration_when_it_no_longer_reads()
-> Result<()> {
    let config =
        file("reloaded.toml", "start_servers = 2\nmin_spare_servers = 1\nmax_spare_servers = 3\nmax_headers = 50\n")?;
    let server = ServerProcess::spawn(server_command(&server_binary()?, &["--config", config.as_str()]))?;
    ensure!(status_with_headers(&server, 8)? == 200, "8 headers refused before the reload");
    let first = server.status()?["workers"][0]["generation"].as_u64().unwrap_or_default();

    // New pool and worker settings, and one that needs a restart.
    std::fs::write(
        config.path(),
        "start_servers = 2\nmin_spare_servers = 2\nmax_spare_servers = 4\nmax_headers = 6\nno_defer_accept = true\n",
    )?;
    server.signal(Signal::SIGHUP)?;
    let next = first + 1;
    wait_for("only the next generation serving", DEADLINE, || {
        Ok(only_generation(&server.status()?, next).then_some(()))
    })?;
    let in_force = server.status()?["config"].clone();
    ensure!(in_force["min_spare_servers"] == 2 && in_force["max_spare_servers"] == 4, "{in_force}");
    ensure!(status_with_headers(&server, 8)? == 431, "the new max_headers does not hold");
    ensure!(status_with_headers(&server, 2)? == 200, "a request within the new limits failed");
    let log = server.stderr();
    ensure!(log.contains("the configuration file was read again"), "{log}");
    ensure!(log.contains("defer_accept") && log.contains("changes only with a restart"), "{log}");

    // A file that no longer reads: the reload is abandoned, logged, and nothing changes.
    std::fs::write(config.path(), "start_servers = 2\nmax_clientz = 4\n")?;
    server.signal(Signal::SIGHUP)?;
    server.wait_logged("unknown key `max_clientz`")?;
    let log = server.stderr();
    ensure!(log.lines().any(|l| l.contains("reload abandoned") && l.contains("max_clientz")), "{log}");
    let status = server.status()?;
    ensure!(only_generation(&status, next), "the abandoned reload changed the workers: {status}");
    ensure!(status["config"] == in_force, "the configuration changed: {}", status["config"]);
    ensure!(status_with_headers(&server, 8)? == 431 && status_with_headers(&server, 2)? == 200);
    Ok(())
}
