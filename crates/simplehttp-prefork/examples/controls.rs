//! SimpleHTTP/PreFork's runtime events from a handler's code: ISCHILD (which worker am I),
//! SHUTDOWN (the whole server, gracefully; or this worker alone: retire), STOPLISTEN and
//! STARTLISTEN (pause and resume the pool).
//!
//! ```text
//! cargo run -p simplehttp-prefork --example controls -- 127.0.0.1:8080
//! curl http://127.0.0.1:8080/who        # pid, slot, generation, parent, ISCHILD
//! curl http://127.0.0.1:8080/retire     # this worker answers, then is replaced
//! curl http://127.0.0.1:8080/pause      # no new connection is taken...
//! kill -s RTMIN+5 <parent pid>          # ...until resumed (or /resume on a kept connection)
//! curl http://127.0.0.1:8080/shutdown   # the whole server stops gracefully
//! ```

use std::net::SocketAddr;

use simplehttp_prefork::{
    Handler, Response, Server, Shutdown, pause_server, resume_server, retire_this_worker, shutdown_server,
};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let listen: SocketAddr = std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:8080").parse()?;
    // In the parent there is no worker: ISCHILD is false.
    assert!(simplehttp_prefork::worker_info().is_none());
    let server = Server::builder()
        .address(listen.ip())
        .port(listen.port())
        .keepalive(true)
        .handler(
            "^/who$",
            Handler::new(|_, context| {
                let text = match context.worker() {
                    Some(w) => format!(
                        "pid {} slot {} generation {} parent {} is_child {}\n",
                        w.pid, w.slot, w.generation, w.parent_pid, w.is_child
                    ),
                    None => "not a worker\n".to_owned(),
                };
                Response::new(text.into())
            }),
        )
        .handler("^/retire$", Handler::new(|_, _| Response::new(format!("{:?}\n", retire_this_worker()).into())))
        .handler("^/pause$", Handler::new(|_, _| Response::new(format!("{:?}\n", pause_server()).into())))
        .handler("^/resume$", Handler::new(|_, _| Response::new(format!("{:?}\n", resume_server()).into())))
        .handler(
            "^/shutdown$",
            Handler::new(|_, _| Response::new(format!("{:?}\n", shutdown_server(Shutdown::Graceful)).into())),
        )
        .build()?;
    server.bind()?.run_with(|started| println!("listening on {}", started.url()))?;
    Ok(())
}
