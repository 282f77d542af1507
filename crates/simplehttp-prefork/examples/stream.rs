//! SimpleHTTP's `examples/stream.pl`: a response streamed in chunks as they are produced
//! (STREAM), with back-pressure (a slow client slows the sender down), ended by closing the
//! connection (CLOSE), and a close handler that runs when it is closed.
//!
//! ```text
//! cargo run -p simplehttp-prefork --example stream -- 127.0.0.1:8080
//! curl -N http://127.0.0.1:8080/stream      # five chunks, 200 ms apart
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use simplehttp_prefork::{Handler, Reply, Server, http, spawn_local};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let listen: SocketAddr = std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:8080").parse()?;
    let server = Server::builder()
        .address(listen.ip())
        .port(listen.port())
        .handler(
            "^/stream",
            Handler::new(|_, context| {
                context.on_close(|| tracing::info!("the streamed connection closed"));
                let (reply, responder) = Reply::later();
                spawn_local(async move {
                    let head = http::Response::new(()).into_parts().0;
                    let Ok(sender) = responder.stream(head) else { return };
                    for i in 1..=5 {
                        if sender.send(format!("chunk {i}\n")).await.is_err() {
                            return; // the client left
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    let _ = sender.close().await;
                });
                reply
            }),
        )
        .build()?;
    server.bind()?.run_with(|started| println!("listening on {}", started.url()))?;
    Ok(())
}
