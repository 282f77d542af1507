//! Log lines say which process wrote them: in text (`supervisor{pid=..}`, then
//! `worker{pid=.. slot=.. generation=..}` in a worker) and as JSON objects (`--log-format
//! json`: one per line, the innermost span in `span`, all of them in `spans`), a worker's access
//! log line included.

use anyhow::{Context as _, Result, ensure};
use prefork_tests::{DEADLINE, ServerProcess, wait_for};
use serde_json::Value;

fn access_line_logged(server: &ServerProcess) -> Result<()> {
    wait_for("an access log line", DEADLINE, || {
        ensure!(server.get("/")?.status == 200);
        Ok(server.stderr().lines().any(|l| l.contains("GET / HTTP/1.1")).then_some(()))
    })
}

#[test]
fn json_lines_carry_the_supervisor_or_the_worker_with_its_slot_and_generation() -> Result<()> {
    let server = ServerProcess::start(&["--log-format", "json", "--access-log", "common", "--start-servers", "2"])?;
    access_line_logged(&server)?;
    let log = server.stderr();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("not JSON: {line:?}")))
        .collect::<Result<_>>()?;
    let supervisor = lines
        .iter()
        .find(|l| l["fields"]["message"].as_str().is_some_and(|m| m.starts_with("supervisor started")))
        .context("no start line")?;
    ensure!(supervisor["span"]["name"] == "supervisor", "{supervisor}");
    ensure!(supervisor["span"]["pid"] == server.pid(), "{supervisor}");
    let access = lines.iter().find(|l| l["target"] == "access").with_context(|| format!("no access line in\n{log}"))?;
    let span = &access["span"];
    ensure!(span["name"] == "worker" && span["generation"] == 1 && span["slot"].is_u64(), "{access}");
    let pid = span["pid"].as_u64().context("no pid")? as u32;
    ensure!(pid != server.pid() && prefork_tests::parent_of(pid) == Some(server.pid()), "{pid} is no worker: {access}");
    let spans: Vec<&str> =
        access["spans"].as_array().context("no spans")?.iter().filter_map(|s| s["name"].as_str()).collect();
    ensure!(spans == ["worker"], "a worker's line in the supervisor's span: {access}");
    Ok(())
}

#[test]
fn text_lines_carry_the_supervisor_or_the_worker_with_its_slot_and_generation() -> Result<()> {
    let server = ServerProcess::start(&["--access-log", "common", "--start-servers", "1"])?;
    access_line_logged(&server)?;
    let log = server.stderr();
    let parent = format!(" supervisor{{pid={}}}: ", server.pid());
    let named = |l: &&str| l.contains(&parent) || l.contains(" worker{pid=");
    ensure!(log.lines().filter(|l| l.contains("INFO") || l.contains("WARN")).all(|l| named(&l)), "{log}");
    let access = log.lines().find(|l| l.contains("GET / HTTP/1.1")).context("no access line")?;
    ensure!(
        access.contains(" worker{pid=") && access.contains(" slot=") && access.contains(" generation=1}"),
        "{access}"
    );
    ensure!(!access.contains("supervisor{"), "{access}");
    Ok(())
}
