//! SimpleHTTP's SETHANDLERS and GETHANDLERS, done so that new handlers reach every worker: on
//! HUP the parent runs the reload hook, which builds the next generation's handlers (here:
//! from a file), and forks that generation with them while the old one finishes; no request
//! fails. A hook that fails abandons the reload, and the handlers in force stay.
//!
//! ```text
//! echo 'first' > /tmp/greeting
//! cargo run -p simplehttp-prefork --example reload_handlers -- 127.0.0.1:8080 /tmp/greeting
//! curl http://127.0.0.1:8080/           # first
//! echo 'second' > /tmp/greeting; kill -HUP <parent pid>
//! curl http://127.0.0.1:8080/           # second
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use simplehttp_prefork::{Handler, Reloaded, Response, Server};

/// The handler serving the greeting read now from `file`.
fn greeting_handler(file: &PathBuf) -> Result<Handler, std::io::Error> {
    let greeting = std::fs::read_to_string(file)?;
    Ok(Handler::new(move |_, _| Response::new(greeting.clone().into())))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:8080").parse()?;
    let file = PathBuf::from(args.next().unwrap_or_else(|| "/tmp/greeting".to_owned()));
    let server = Server::builder()
        .address(listen.ip())
        .port(listen.port())
        .handler("^/", greeting_handler(&file)?)
        .on_reload(move || Ok(Reloaded::new().handler("^/", greeting_handler(&file)?)))
        .build()?;
    tracing::info!(handlers = ?server.handlers(), "GETHANDLERS");
    server.bind()?.run_with(|started| println!("listening on {}", started.url()))?;
    Ok(())
}
