//! Pause and resume (SimpleHTTP's STOPLISTEN and STARTLISTEN) and the `ctl` command: while
//! paused no worker takes a new connection, which waits in the listen queue (none refused,
//! none lost) and is served on resume; connections already taken are served; readiness says
//! `paused`. `ctl` confirms every action from the scoreboard, and says clearly when no server
//! runs under the pid file.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Result, ensure};
use prefork_tests::{DEADLINE, ServerProcess, TempPath, count, http_get, run_command, status_json, wait_for};

fn ctl(pid_file: &TempPath, action: &str) -> Result<String> {
    let output = run_command(&["ctl", "--pid-file", pid_file.as_str(), action])?;
    let said = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "ctl {action}: {said}");
    Ok(said)
}

/// A closed-loop client on new connections (no pause between requests) through a pause: its
/// requests wait in the listen queue, and every one is answered once the pool resumes.
#[test]
fn a_paused_pool_leaves_new_connections_waiting_and_serves_them_on_resume() -> Result<()> {
    let pid_file = TempPath::new("pause.pid");
    let server = ServerProcess::start_pool(2, 1, 3, &["--pid-file", pid_file.as_str(), "--keepalive"])?;
    wait_for("ready", DEADLINE, || Ok((server.get("/readyz")?.status == 200).then_some(())))?;
    // A keep-alive connection taken before the pause is still served during it.
    let mut kept = server.connect()?;
    ensure!(kept.get("/readyz")?.body == "ready\n");
    let (stop, answered) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, answered, addr) = (Arc::clone(&stop), Arc::clone(&answered), server.addr());
        std::thread::spawn(move || -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                let response = http_get(addr, "/")?;
                ensure!(response.status == 200, "a request failed: {}", response.status);
                answered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    wait_for("the client served", DEADLINE, || Ok((answered.load(Ordering::Relaxed) > 20).then_some(())))?;
    ensure!(ctl(&pid_file, "pause")?.contains("paused"));
    // The client's next connection waits in the listen queue, taken by nobody.
    wait_for("a connection waiting in the listen queue", DEADLINE, || {
        let status = status_json(&pid_file)?;
        Ok((status["paused"] == true && count(&status, "listen_queue") >= 1).then_some(()))
    })?;
    let waiting_at = answered.load(Ordering::Relaxed);
    let probe = kept.get("/readyz")?;
    ensure!(probe.status == 503 && probe.body == "paused\n", "{} {:?}", probe.status, probe.body);
    ensure!(answered.load(Ordering::Relaxed) == waiting_at, "a new connection was served while paused");
    ensure!(ctl(&pid_file, "resume")?.contains("resumed"));
    wait_for("the client served again", DEADLINE, || {
        Ok((answered.load(Ordering::Relaxed) > waiting_at + 20).then_some(()))
    })?;
    stop.store(true, Ordering::Relaxed);
    client.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
    ensure!(status_json(&pid_file)?["paused"] == false);
    Ok(())
}

/// Every action is confirmed from the scoreboard: spare bounds move, a reload starts the next
/// generation, a stop ends the server.
#[test]
fn ctl_confirms_each_action_from_the_scoreboard() -> Result<()> {
    let pid_file = TempPath::new("ctl.pid");
    let mut server = ServerProcess::start_pool(2, 2, 4, &["--pid-file", pid_file.as_str()])?;
    ensure!(ctl(&pid_file, "ttin")?.contains("spare bounds now 3..5"));
    ensure!(ctl(&pid_file, "ttou")?.contains("spare bounds now 2..4"));
    ensure!(ctl(&pid_file, "reload")?.contains("generation 2"));
    ensure!(ctl(&pid_file, "resume")?.contains("resumed"), "resume of a pool not paused is a no-op");
    ensure!(ctl(&pid_file, "stop")?.contains("stopped"));
    ensure!(server.wait_exit(DEADLINE)?.success());
    Ok(())
}

#[test]
fn ctl_without_a_server_says_so() -> Result<()> {
    let pid_file = TempPath::new("none.pid");
    for (content, says) in [
        (None, "reading pid file"),
        (Some("not a pid\n"), "pid file"),
        (Some("999999999\n"), "no server runs under pid file"),
    ] {
        if let Some(content) = content {
            std::fs::write(pid_file.path(), content)?;
        }
        let output = run_command(&["ctl", "--pid-file", pid_file.as_str(), "pause"])?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(!output.status.success() && stderr.contains(says), "{content:?}: {stderr}");
    }
    Ok(())
}
