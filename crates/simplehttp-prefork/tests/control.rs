//! Control from a handler's own code (SimpleHTTP/PreFork's ISCHILD and SHUTDOWN, and the
//! response object's `connection->dead`): the worker's identity in fork handlers and handlers,
//! none in the parent; a worker retired at its handler's request (it exits after its answer); the whole server stopped
//! from a handler, gracefully or at once; `is_closed` once the client is gone; close handlers
//! removed by their token; the connection's addresses; and the built-in pages, opt-in in the
//! library, so that an application's own routes win.
//!
//! `harness = false`: `main` either runs the scenarios, or (with `CONTROL_TEST_SERVER` set) is
//! the server they start, a fresh single-threaded process that may fork.

use std::cell::RefCell;
use std::io::Write as _;
use std::net::TcpStream;
use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use bytes::Bytes;
use prefork_tests::{DEADLINE, HttpConnection, ServerProcess, Sig, TempPath, wait_for};
use simplehttp_prefork::scoreboard::{AttachedScoreboard, WorkerState};
use simplehttp_prefork::{
    Handler, Reloaded, Reply, Request, RequestContext, Responder, Response, Server, Shutdown, WorkerInfo, pause_server,
    resume_server, retire_this_worker, shutdown_server, worker_info,
};

const ROLE: &str = "CONTROL_TEST_SERVER";
/// While this file exists, the reload hook fails.
const MARKER: &str = "CONTROL_TEST_MARKER";

thread_local! {
    /// What the fork handler was given, in this worker.
    static FORKED_AS: RefCell<Option<WorkerInfo>> = const { RefCell::new(None) };
    /// The responder of the request `/wait-gone` left unanswered.
    static LEFT_WAITING: RefCell<Option<Responder>> = const { RefCell::new(None) };
}

fn main() -> Result<()> {
    prefork_tests::serve_or_run(
        ROLE,
        serve,
        &[
            ("a_worker_knows_who_it_is_and_the_parent_is_no_worker", identity),
            ("a_handler_retires_its_worker_which_is_replaced", retire),
            ("a_handler_stops_the_whole_server_gracefully_or_at_once", shutdown),
            ("a_handler_sees_its_client_gone", client_gone),
            ("close_handlers_are_removed_by_their_token_and_addresses_are_known", close_handlers_and_addresses),
            ("the_library_answers_no_built_in_page_unless_asked_so_routes_win", routes_win),
            ("a_reload_swaps_the_handlers_under_load_and_no_request_fails", reload_swaps_handlers),
            ("a_handler_pauses_and_resumes_the_pool", pause_from_a_handler),
        ],
    )
}

fn text(body: String) -> Response {
    Response::new(Bytes::from(body))
}

/// The server side.
fn serve(role: &str) -> Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).init();
    tracing::info!(in_parent = ?worker_info(), "worker_info in the parent");
    let mut builder =
        Server::builder().start_servers(2).min_spare_servers(1).max_spare_servers(3).max_clients(8).keepalive(true);
    if role == "single" {
        // One worker: whatever the client sends next is served by the worker that ran the
        // request the client left (and runs that worker's spawned tasks meanwhile).
        builder = builder.start_servers(1).min_spare_servers(1).max_spare_servers(1).max_clients(1).keepalive(false);
    }
    if role == "reloadable" {
        // Each reload serves the next version, unless the marker file says the new handlers
        // cannot be built (then the reload is abandoned), or the boot marker says the new
        // version's fork handler fails (then its workers cannot boot, and the reload fails).
        let marker = std::env::var_os(MARKER).map(std::path::PathBuf::from);
        let boot_marker = marker.as_ref().map(|m| m.with_extension("boot"));
        let mut version = 1;
        let retire = || Handler::new(|_, _| text(format!("{} {:?}\n", std::process::id(), retire_this_worker())));
        let server = builder
            .keepalive(true)
            .max_reload_boot_failures(1)
            .status_path(Some("/server-status".into()))
            .handler("^/version$", Handler::new(|_, _| text("version 1\n".into())))
            .handler("^/retire$", retire())
            .on_reload(move || {
                if marker.as_deref().is_some_and(std::path::Path::exists) {
                    return Err("templates broken".into());
                }
                version += 1;
                let body = format!("version {version}\n");
                let reloaded = Reloaded::new()
                    .handler("^/version$", Handler::new(move |_, _| text(body.clone())))
                    .handler("^/retire$", retire());
                if boot_marker.as_deref().is_some_and(std::path::Path::exists) {
                    return Ok(reloaded.fork_handler(|_| Err("database down".into())));
                }
                Ok(reloaded)
            })
            .build()?;
        tracing::info!(handlers = ?server.handlers(), "handlers before any reload");
        let bound = server.bind()?;
        bound.run_with(|started| println!("listening on {}", started.url()))?;
        return Ok(());
    }
    if role == "catch-all" {
        let server = builder.handler("^/", Handler::new(|_, _| text("the application's own\n".into()))).build()?;
        let bound = server.bind()?;
        bound.run_with(|started| println!("listening on {}", started.url()))?;
        return Ok(());
    }
    builder = builder
        .fork_handler(|worker| {
            FORKED_AS.with(|cell| *cell.borrow_mut() = Some(worker.clone()));
            Ok(())
        })
        .handler("^/who$", Handler::new(who))
        .status_path(Some("/server-status".into()))
        .handler("^/retire$", Handler::new(|_, _| text(format!("{} {:?}\n", std::process::id(), retire_this_worker()))))
        .handler(
            "^/shutdown/graceful$",
            Handler::new(|_, _| text(format!("{:?}\n", shutdown_server(Shutdown::Graceful)))),
        )
        .handler(
            "^/shutdown/immediate$",
            Handler::new(|_, _| text(format!("{:?}\n", shutdown_server(Shutdown::Immediate)))),
        )
        .handler("^/pause$", Handler::new(|_, _| text(format!("{:?}\n", pause_server()))))
        .handler("^/resume$", Handler::new(|_, _| text(format!("{:?}\n", resume_server()))))
        .handler("^/wait-gone$", Handler::new(wait_gone))
        .handler("^/is-closed$", Handler::new(is_closed))
        .handler("^/close-handlers$", Handler::new(close_handlers))
        .handler(
            "^/addr$",
            Handler::new(|_, context: RequestContext| {
                let c = &context.connection;
                text(format!("{:?} {:?}\n", c.remote_addr(), c.local_addr()))
            }),
        );
    let server = builder.build()?;
    let bound = server.bind()?;
    bound.run_with(|started| println!("listening on {}", started.url()))?;
    Ok(())
}

/// The worker as its fork handler saw it, as the context says, as the free function says.
fn who(_: Request, context: RequestContext) -> Response {
    let forked = FORKED_AS.with(|cell| cell.borrow().clone());
    let same = forked == context.worker() && forked == worker_info();
    let info = forked.map(|w| format!("{} {} {} {} {}", w.pid, w.slot, w.generation, w.parent_pid, w.is_child));
    text(format!("{} {same} {}\n", info.unwrap_or_default(), std::process::id()))
}

/// Answers nothing: its responder is kept for `/is-closed` to look at.
fn wait_gone(_: Request, _: RequestContext) -> Reply {
    let (reply, responder) = Reply::later();
    LEFT_WAITING.with(|cell| *cell.borrow_mut() = Some(responder));
    reply
}

/// Whether the request `/wait-gone` left waiting can still be answered.
fn is_closed(_: Request, _: RequestContext) -> Response {
    let closed = LEFT_WAITING.with(|cell| cell.borrow().as_ref().map(Responder::is_closed));
    text(format!("{closed:?}\n"))
}

/// Two close handlers, one removed again.
fn close_handlers(_: Request, context: RequestContext) -> Response {
    context.on_close(|| tracing::info!("the kept close handler ran"));
    let removed = context.on_close(|| tracing::info!("the removed close handler ran"));
    let was_there = context.remove_close_handler(removed);
    let again = context.remove_close_handler(removed);
    text(format!("{was_there} {again}\n"))
}

// ----- The client side -----

fn start(role: &str) -> Result<ServerProcess> {
    let mut command = Command::new(std::env::current_exe()?);
    command.env(ROLE, role);
    ServerProcess::spawn(command)
}

fn identity() -> Result<()> {
    let server = start("control")?;
    server.wait_logged("worker_info in the parent in_parent=None")?;
    for _ in 0..4 {
        let body = server.get("/who")?.body;
        let words: Vec<&str> = body.split_whitespace().collect();
        ensure!(words.len() == 7, "{body:?}");
        let (pid, generation, parent, is_child, same, serving) =
            (words[0], words[2], words[3], words[4], words[5], words[6]);
        ensure!(pid == serving && same == "true" && is_child == "true", "{body:?}");
        ensure!(generation == "1" && parent == server.pid().to_string(), "{body:?}");
        ensure!(server.children().iter().any(|c| c.to_string() == pid), "{pid} is not a worker: {body:?}");
    }
    ensure!(worker_info().is_none(), "the test process is no worker");
    Ok(())
}

fn retire() -> Result<()> {
    let server = start("control")?;
    let mut connection = HttpConnection::open(server.addr())?;
    let answer = connection.get("/retire")?;
    let (retiring, result) = answer.body.trim().split_once(' ').context("no pid")?;
    ensure!(answer.status == 200 && result == "Ok(())", "{:?}", answer.body);
    ensure!(connection.closed_by_server_within(DEADLINE)?, "the retiring worker kept the connection");
    server.wait_logged("retiring at the handler's request")?;
    // Gone; the pool is kept between its bounds as ever (a replacement if it needs one).
    wait_for("the retired worker gone", DEADLINE, || {
        let children = server.children();
        Ok((!children.iter().any(|c| c.to_string() == retiring) && !children.is_empty()).then_some(()))
    })?;
    server.wait_logged(&format!("worker exited on its own pid={retiring}"))?;
    ensure!(server.get("/who")?.status == 200);
    Ok(())
}

fn shutdown() -> Result<()> {
    let mut graceful = start("control")?;
    let answer = graceful.get("/shutdown/graceful")?;
    ensure!(answer.status == 200 && answer.body == "Ok(())\n", "the request in hand: {:?}", answer.body);
    let exit = graceful.wait_exit(DEADLINE)?;
    ensure!(exit.success(), "{exit:?}");
    ensure!(graceful.stderr().contains("graceful stop requested"), "{}", graceful.stderr());

    let mut immediate = start("control")?;
    let _ = immediate.get("/shutdown/immediate"); // killed with its worker, perhaps before it answers
    immediate.wait_exit(DEADLINE)?;
    ensure!(immediate.stderr().contains("immediate stop requested"), "{}", immediate.stderr());
    Ok(())
}

/// Without keep-alive hyper does not read while a request runs: the worker watches the socket
/// itself, and drops the handler's future once the client hangs up; its `Responder` then says
/// `is_closed`.
fn client_gone() -> Result<()> {
    let server = start("single")?;
    let mut client = TcpStream::connect(server.addr())?;
    client.write_all(format!("GET /wait-gone HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr()).as_bytes())?;
    // The request is in a handler: then the client leaves.
    // (From the scoreboard: the only worker is busy, so no status page.)
    let scoreboard = AttachedScoreboard::open(&server.scoreboard_name())?;
    wait_for("the request to be running", DEADLINE, || {
        let running = scoreboard.snapshot().live().any(|slot| {
            let line = slot.request.as_ref().map(|r| r.line().to_string_lossy().into_owned()).unwrap_or_default();
            slot.state == WorkerState::Writing && line == "GET /wait-gone HTTP/1.1"
        });
        Ok(running.then_some(()))
    })?;
    drop(client);
    wait_for("the handler's responder to say its client is gone", DEADLINE, || {
        Ok((server_is_closed(&server)? == "Some(true)").then_some(()))
    })?;
    Ok(())
}

/// `/is-closed` on the only worker (while it runs `/wait-gone`, its status answers from the
/// scoreboard only: this request waits in the backlog until the worker is free).
fn server_is_closed(server: &ServerProcess) -> Result<String> {
    Ok(server.get("/is-closed")?.body.trim().to_owned())
}

fn close_handlers_and_addresses() -> Result<()> {
    let server = start("control")?;
    let mut connection = HttpConnection::open(server.addr())?;
    let answer = connection.get("/close-handlers")?;
    ensure!(answer.body == "true false\n", "{:?}", answer.body);
    drop(connection);
    server.wait_logged("the kept close handler ran")?;
    ensure!(!server.stderr().contains("the removed close handler ran"), "{}", server.stderr());

    let body = server.get("/addr")?.body;
    ensure!(body.contains(&format!("Some({})", server.addr())), "the local address: {body:?}");
    ensure!(body.starts_with("Some(127.0.0.1:"), "the remote address: {body:?}");
    Ok(())
}

fn routes_win() -> Result<()> {
    let server = start("catch-all")?;
    for path in ["/server-status", "/healthz", "/readyz", "/anything"] {
        let answer = server.get(path)?;
        ensure!(answer.status == 200 && answer.body == "the application's own\n", "{path}: {:?}", answer.body);
    }
    Ok(())
}

/// A closed-loop client on fresh connections (no pause) while HUP swaps the handlers: every
/// request answered, by the old handlers or the new; then only the new. A reload whose hook
/// fails is abandoned, and the handlers in force stay.
fn reload_swaps_handlers() -> Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let marker = TempPath::new("reload-marker");
    let mut command = Command::new(std::env::current_exe()?);
    command.env(ROLE, "reloadable").env(MARKER, marker.path());
    let server = ServerProcess::spawn(command)?;
    server.wait_logged("handlers before any reload handlers=[\"^/version$\", \"^/retire$\"]")?;
    let stop = Arc::new(AtomicBool::new(false));
    let new_answers = Arc::new(AtomicUsize::new(0));
    let client = {
        let (stop, new_answers, addr) = (Arc::clone(&stop), Arc::clone(&new_answers), server.addr());
        std::thread::spawn(move || -> Result<Vec<String>> {
            let mut bodies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let answer = prefork_tests::http_get(addr, "/version")?;
                ensure!(answer.status == 200, "a request failed during the reload: {}", answer.status);
                if answer.body == "version 2\n" {
                    new_answers.fetch_add(1, Ordering::Relaxed);
                }
                bodies.push(answer.body);
            }
            Ok(bodies)
        })
    };
    let version = |server: &ServerProcess| -> Result<String> { Ok(server.get("/version")?.body) };
    wait_for("version 1 served", DEADLINE, || Ok((version(&server)? == "version 1\n").then_some(())))?;
    server.signal(Sig::SIGHUP)?;
    wait_for("only generation 2, serving version 2", DEADLINE, || {
        let new = prefork_tests::only_generation(&server.status()?, 2);
        Ok((new && version(&server)? == "version 2\n").then_some(()))
    })?;
    for _ in 0..20 {
        ensure!(version(&server)? == "version 2\n", "the old handlers answer after the reload");
    }
    wait_for("the load to meet the new handlers", DEADLINE, || {
        Ok((new_answers.load(Ordering::Relaxed) > 0 || client.is_finished()).then_some(()))
    })?;
    stop.store(true, Ordering::Relaxed);
    let bodies = client.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
    ensure!(bodies.iter().all(|b| b == "version 1\n" || b == "version 2\n"), "{bodies:?}");
    ensure!(bodies.iter().any(|b| b == "version 2\n"), "the load never met the new handlers");

    std::fs::write(marker.path(), "")?;
    server.signal(Sig::SIGHUP)?;
    server.wait_logged("reload abandoned: its hook failed")?;
    ensure!(server.stderr().contains("templates broken"), "{}", server.stderr());
    ensure!(version(&server)? == "version 2\n");
    ensure!(server.status()?["server"]["generation"] == 2, "the failed reload started a generation");

    // A reload whose new workers cannot boot is abandoned: a worker of the old generation
    // replaced afterwards is forked with the old generation's handlers, not the rejected ones.
    std::fs::remove_file(marker.path())?;
    let boot_marker = TempPath::new("boot-marker");
    let boot_marker_path = marker.path().with_extension("boot");
    std::fs::write(&boot_marker_path, "")?;
    server.signal(Sig::SIGHUP)?;
    server.wait_logged("reload failed")?;
    let _ = std::fs::remove_file(&boot_marker_path);
    drop(boot_marker);
    let retired = server.get("/retire")?.body;
    let retired = retired.split_whitespace().next().unwrap_or_default().to_owned();
    wait_for("the retired worker replaced", DEADLINE, || {
        let status = server.status()?;
        let pids: Vec<String> =
            status["workers"].as_array().into_iter().flatten().map(|w| w["pid"].to_string()).collect();
        Ok((!pids.contains(&retired) && prefork_tests::only_generation(&status, 2)).then_some(()))
    })?;
    for _ in 0..10 {
        ensure!(version(&server)? == "version 2\n", "a worker serves the rejected handlers");
    }
    let failures = server.stderr().matches("worker failed to boot").count();
    ensure!(failures == 1, "the rejected fork handler ran {failures} times:\n{}", server.stderr());
    Ok(())
}

/// A handler pauses the pool (STOPLISTEN): the scoreboard says so, and a new connection waits;
/// a keep-alive connection already taken resumes it (STARTLISTEN), and the waiting one is served.
fn pause_from_a_handler() -> Result<()> {
    let server = start("control")?;
    let scoreboard = AttachedScoreboard::open(&server.scoreboard_name())?;
    let mut kept = HttpConnection::open(server.addr())?;
    ensure!(kept.get("/pause")?.body == "Ok(())\n");
    // Paused once every worker past its fork handlers says it no longer accepts.
    wait_for("paused, and followed by every worker", DEADLINE, || {
        let snapshot = scoreboard.snapshot();
        let followed = snapshot.live().filter(|s| s.state != WorkerState::Starting).all(|s| !s.accepting());
        Ok((snapshot.header.paused && followed).then_some(()))
    })?;
    let waiting = std::thread::spawn({
        let addr = server.addr();
        move || prefork_tests::http_get(addr, "/who")
    });
    wait_for("a connection waiting", DEADLINE, || Ok((scoreboard.snapshot().header.listen_queue >= 1).then_some(())))?;
    ensure!(kept.get("/resume")?.body == "Ok(())\n");
    let answer = waiting.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
    ensure!(answer.status == 200, "the waiting connection: {}", answer.status);
    ensure!(!scoreboard.snapshot().header.paused);
    Ok(())
}
