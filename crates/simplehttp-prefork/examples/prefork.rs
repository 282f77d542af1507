//! SimpleHTTP::PreFork's `examples/prefork.pl`: a preforked pool with its spare bounds, a
//! request limit per worker, and a fork handler that runs in each new worker before it serves
//! (open its database connection, seed its random numbers...). Each answer says which worker
//! gave it, and what the fork handler prepared there.
//!
//! ```text
//! cargo run -p simplehttp-prefork --example prefork -- 127.0.0.1:8080
//! for i in 1 2 3 4 5 6; do curl -s http://127.0.0.1:8080/; done
//! ```

use std::cell::RefCell;
use std::net::SocketAddr;

use simplehttp_prefork::{Handler, Response, Server, WorkerInfo};

thread_local! {
    /// What the fork handler prepared in this worker (a connection, in real life).
    static PREPARED: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn main() -> anyhow::Result<()> {
    let listen: SocketAddr = std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:8080").parse()?;
    let server = Server::builder()
        .address(listen.ip())
        .port(listen.port())
        .start_servers(3)
        .min_spare_servers(2)
        .max_spare_servers(4)
        .max_clients(16)
        // Each worker is replaced after 3 requests, its replacement forked first.
        .max_requests_per_child(Some(3))
        .fork_handler(|worker: &WorkerInfo| {
            let prepared = format!("prepared in worker {} (slot {})", worker.pid, worker.slot);
            PREPARED.with(|cell| *cell.borrow_mut() = Some(prepared));
            Ok(())
        })
        .handler(
            "^/",
            Handler::new(|_, _| {
                let prepared = PREPARED.with(|cell| cell.borrow().clone()).unwrap_or_default();
                Response::new(format!("served by {}: {prepared}\n", std::process::id()).into())
            }),
        )
        .build()?;
    server.bind()?.run_with(|started| println!("listening on {}", started.url()))?;
    Ok(())
}
