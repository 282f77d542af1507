//! Each crate on its own. The supervisor alone serves a protocol that is not HTTP:
//! `prefork-supervisor`'s `line_server` example (one command per line), over the wire, with
//! its pool kept between bounds, recycled, reloaded and stopped gracefully, and its scoreboard
//! read by the generic `simplehttp-prefork status` command. The scoreboard alone is read by a
//! process outside the pool: `prefork-scoreboard`'s `scoreboard_agent` example, which maps
//! the segment read-only.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail, ensure};
use prefork_tests::{
    DEADLINE, ServerProcess, Sig, TempPath, count, example_binary, only_generation, run_command, wait_for,
};

/// The example with its pid file, on an ephemeral port.
fn start(pid_file: &TempPath, args: &[&str]) -> Result<ServerProcess> {
    let mut command = std::process::Command::new(example_binary("line_server")?);
    // Connections held open for a test's checks must not time out on a slow machine.
    command.args(["--listen", "127.0.0.1:0", "--pid-file", pid_file.as_str(), "--idle-timeout", "10m"]).args(args);
    ServerProcess::spawn(command)
}

/// The generic status command on the example's scoreboard (prefix `line-prefork`).
fn status(pid_file: &TempPath) -> Result<serde_json::Value> {
    let output =
        run_command(&["status", "--pid-file", pid_file.as_str(), "--scoreboard-prefix", "line-prefork", "--json"])?;
    ensure!(output.status.success(), "status failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// One connection to the line server.
struct LineClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LineClient {
    fn connect(addr: SocketAddr) -> Result<LineClient> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(DEADLINE))?;
        Ok(LineClient { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    fn send(&mut self, command: &str) -> Result<()> {
        self.writer.write_all(format!("{command}\n").as_bytes())?;
        Ok(())
    }

    fn read_answer(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line)?;
        ensure!(n > 0, "the server closed the connection without an answer");
        Ok(line.trim_end().to_owned())
    }

    fn ask(&mut self, command: &str) -> Result<String> {
        self.send(command)?;
        self.read_answer()
    }

    /// True once the server has closed the connection (EOF), within the deadline.
    fn closed_by_server(&mut self) -> Result<bool> {
        let mut line = String::new();
        Ok(self.reader.read_line(&mut line)? == 0)
    }
}

/// `WHO`'s answer: (pid, slot, generation).
fn who(answer: &str) -> Result<(u32, u64, u64)> {
    let words: Vec<&str> = answer.split(' ').collect();
    match words.as_slice() {
        ["pid", pid, "slot", slot, "generation", generation] => Ok((pid.parse()?, slot.parse()?, generation.parse()?)),
        _ => bail!("not an answer to WHO: {answer:?}"),
    }
}

#[test]
fn it_answers_its_protocol_and_the_status_command_shows_its_workers() -> Result<()> {
    let pid_file = TempPath::new("line.pid");
    let server = start(&pid_file, &["--start-servers", "2", "--min-spare-servers", "1", "--max-spare-servers", "4"])?;
    let mut client = LineClient::connect(server.addr())?;
    ensure!(client.ask("PING")? == "PONG");
    ensure!(client.ask("ECHO hello there")? == "hello there");
    ensure!(client.ask("nonsense")?.starts_with("ERR unknown command"));
    let (pid, slot, generation) = who(&client.ask("WHO")?)?;
    ensure!(server.children().contains(&pid), "WHO named {pid}, not a worker of {}", server.pid());
    ensure!(generation == 1);
    // Held open between commands, the connection keeps its worker in `K`; the status
    // command, which knows nothing of this protocol, shows it, with its last command.
    let shown = wait_for("the connection's worker in K in the status command", DEADLINE, || {
        let status = status(&pid_file)?;
        let workers = status["workers"].as_array().cloned().unwrap_or_default();
        let mine = workers.iter().find(|w| w["pid"].as_u64() == Some(u64::from(pid))).cloned();
        Ok(mine.filter(|w| w["state"] == "K").map(|w| (status, w)))
    })?;
    let (status_doc, worker) = shown;
    ensure!(worker["slot"].as_u64() == Some(slot), "{worker}");
    ensure!(worker["requests"].as_u64() == Some(4), "four commands answered: {worker}");
    ensure!(worker["request"]["line"] == "WHO" && worker["request"]["protocol"] == "LINE", "{worker}");
    ensure!(count(&status_doc, "busy") >= 1 && count(&status_doc, "total_accesses") >= 4, "{status_doc}");
    // The table form reads the same segment.
    let table = run_command(&["status", "--pid-file", pid_file.as_str(), "--scoreboard-prefix", "line-prefork"])?;
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    ensure!(table.contains("/line-prefork.") && table.contains("WHO") && table.contains("LINE"), "{table}");
    ensure!(client.ask("QUIT")? == "BYE" && client.closed_by_server()?);
    Ok(())
}

/// Connections held open take workers out of the spares: the supervisor forks until
/// `min_spare_servers` are idle again, but never past `max_clients` (the pool of 5 stops at 3
/// busy and 2 idle, then at 4 busy and 1 idle, and says it reached the limit); once the
/// connections close, it retires the idle ones above `max_spare_servers`.
#[test]
fn spare_workers_are_kept_between_their_bounds_and_never_past_max_clients() -> Result<()> {
    let pid_file = TempPath::new("line.pid");
    let args = ["--start-servers", "2", "--min-spare-servers", "2", "--max-spare-servers", "3", "--max-clients", "5"];
    let server = start(&pid_file, &args)?;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut client = LineClient::connect(server.addr())?;
        ensure!(client.ask("PING")? == "PONG");
        held.push(client);
    }
    wait_for("3 busy and 2 idle workers", DEADLINE, || {
        let status = status(&pid_file)?;
        Ok((count(&status, "busy") == 3 && count(&status, "idle") == 2).then_some(()))
    })?;
    let mut fourth = LineClient::connect(server.addr())?;
    ensure!(fourth.ask("PING")? == "PONG");
    held.push(fourth);
    let capped = wait_for("the pool capped at max_clients", DEADLINE, || {
        let status = status(&pid_file)?;
        Ok((count(&status, "busy") == 4 && count(&status, "max_clients_reached") > 0).then_some(status))
    })?;
    ensure!(count(&capped, "processes") == 5 && count(&capped, "idle") == 1, "{capped}");
    ensure!(server.children().len() == 5, "{:?}", server.children());
    drop(held);
    wait_for("2 or 3 idle workers and nothing else once the connections close", DEADLINE, || {
        let status = status(&pid_file)?;
        let idle = count(&status, "idle");
        Ok(((2..=3).contains(&idle) && count(&status, "processes") == idle).then_some(()))
    })?;
    Ok(())
}

/// With `--max-requests-per-child 4`, a closed-loop client (no pause: a new connection as soon
/// as the last answer came) sees workers replaced and never a failed command, and no worker
/// answers more than its limit and margin (4 + 1).
#[test]
fn workers_are_recycled_after_their_command_limit_without_a_failed_command() -> Result<()> {
    let pid_file = TempPath::new("line.pid");
    let server = start(&pid_file, &["--start-servers", "2", "--max-requests-per-child", "4"])?;
    let mut answered_by: BTreeMap<u32, u32> = BTreeMap::new();
    for _ in 0..60 {
        let mut client = LineClient::connect(server.addr())?;
        let (pid, _, _) = who(&client.ask("WHO").context("a command failed")?)?;
        *answered_by.entry(pid).or_default() += 1;
    }
    ensure!(answered_by.len() >= 10, "60 commands, limit 4: too few workers {answered_by:?}");
    ensure!(answered_by.values().all(|&n| n <= 5), "a worker answered past its limit and margin: {answered_by:?}");
    let status = status(&pid_file)?;
    ensure!(count(&status, "workers_forked") >= 12, "{status}");
    Ok(())
}

/// HUP forks a new generation and retires the old one; SIGTERM lets the command in hand
/// finish (the worker shows `G` and the server waits for it; its answer arrives) before the
/// server exits.
#[test]
fn hup_reloads_a_new_generation_and_a_graceful_stop_answers_the_command_in_hand() -> Result<()> {
    let pid_file = TempPath::new("line.pid");
    let mut server = start(&pid_file, &["--start-servers", "2"])?;
    let (_, _, generation) = who(&LineClient::connect(server.addr())?.ask("WHO")?)?;
    ensure!(generation == 1);
    server.signal(Sig::SIGHUP)?;
    wait_for("every worker in generation 2", DEADLINE, || Ok(only_generation(&status(&pid_file)?, 2).then_some(())))?;
    let (_, _, generation) = who(&LineClient::connect(server.addr())?.ask("WHO")?)?;
    ensure!(generation == 2, "a new connection after the reload was answered by generation {generation}");

    let release = TempPath::new("release");
    let hold = format!("HOLD {}", release.as_str());
    let mut slow = LineClient::connect(server.addr())?;
    slow.send(&hold)?;
    wait_for("a worker running HOLD", DEADLINE, || {
        let status = status(&pid_file)?;
        let workers = status["workers"].as_array().cloned().unwrap_or_default();
        Ok(workers.iter().any(|w| w["state"] == "W" && w["request"]["line"] == hold.as_str()).then_some(()))
    })?;
    server.signal(Sig::SIGTERM)?;
    wait_for("the worker finishing gracefully (G)", DEADLINE, || {
        let status = status(&pid_file)?;
        let workers = status["workers"].as_array().cloned().unwrap_or_default();
        Ok(workers.iter().any(|w| w["state"] == "G" && w["request"]["line"] == hold.as_str()).then_some(()))
    })?;
    // The idle workers go at once; the server waits for the busy one.
    wait_for("only the busy worker left", DEADLINE, || Ok((server.children().len() == 1).then_some(())))?;
    ensure!(server.wait_exit(std::time::Duration::ZERO).is_err(), "the server did not wait for the command in hand");
    std::fs::write(release.path(), "")?;
    ensure!(slow.read_answer()? == "RELEASED", "the command in hand was not answered");
    ensure!(slow.closed_by_server()?, "the connection stays open after a graceful stop");
    let exit = server.wait_exit(DEADLINE)?;
    ensure!(exit.success(), "{exit:?}\n{}", server.stderr());
    ensure!(!pid_file.path().exists(), "the pid file outlived the server");
    ensure!(server.stderr().contains("all workers stopped"), "{}", server.stderr());
    Ok(())
}

/// A monitoring agent outside the pool reads the scoreboard by pid file, with the segment
/// mapped read-only in its process (`r--s` in `/proc/<agent>/maps`: a stray write would fault
/// in the agent, never reach the pool), and sees what the pool does.
#[test]
fn a_foreign_process_reads_the_scoreboard_through_a_read_only_mapping() -> Result<()> {
    let pid_file = TempPath::new("line.pid");
    let server = start(&pid_file, &["--start-servers", "2", "--min-spare-servers", "1"])?;
    let mut client = LineClient::connect(server.addr())?;
    ensure!(client.ask("PING")? == "PONG");
    let mut agent = KillOnDrop(
        Command::new(example_binary("scoreboard_agent")?)
            .args([
                "--pid-file",
                pid_file.as_str(),
                "--prefix",
                "line-prefork",
                "--interval",
                "50ms",
                "--count",
                "2000",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let agent_pid = agent.0.id();
    let mut lines = BufReader::new(agent.0.stdout.take().context("piped stdout")?).lines();
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut next_line = || -> Result<String> {
        ensure!(std::time::Instant::now() < deadline, "the agent did not see it within {DEADLINE:?}");
        Ok(lines.next().context("the agent ended")??)
    };
    // The held connection's worker is busy (K), and the agent sees it.
    let seen = loop {
        let line = next_line()?;
        if line.contains("busy 1 ") && line.contains('K') {
            break line;
        }
    };
    ensure!(seen.contains("requests 1 "), "{seen}");
    let segment = format!("/dev/shm/line-prefork.{}", server.pid());
    let maps = std::fs::read_to_string(format!("/proc/{agent_pid}/maps"))?;
    let mapping = maps.lines().find(|l| l.ends_with(&segment)).with_context(|| format!("{segment} not in\n{maps}"))?;
    let permissions = mapping.split_whitespace().nth(1).unwrap_or_default();
    ensure!(permissions == "r--s", "the agent maps the segment {permissions}, not read-only: {mapping}");
    ensure!(client.ask("QUIT")? == "BYE");
    let idle_again = loop {
        let line = next_line()?;
        if line.contains("busy 0 ") {
            break line;
        }
    };
    ensure!(idle_again.contains("requests 2 "), "{idle_again}");
    Ok(())
}

/// A helper process, killed and reaped however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
