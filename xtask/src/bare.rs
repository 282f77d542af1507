//! The benchmark baseline: a bare multi-threaded hyper server answering like `GET /`, and
//! `/block/<ms>` with a `std::thread::sleep` inside the async service (no `spawn_blocking`),
//! as a blocking handler dropped into an async server would behave.

use std::convert::Infallible;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};

/// Serves until killed; prints `listening on http://ADDR:PORT` first.
pub fn serve(port: u16) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on http://{}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let connections = std::sync::Arc::new(AtomicU64::new(0));
        loop {
            let (stream, peer) = listener.accept().await?;
            let id = connections.fetch_add(1, Ordering::Relaxed) + 1;
            tokio::spawn(async move {
                // The same body shape and size as the prefork server's `GET /`.
                let service = service_fn(move |request: Request<hyper::body::Incoming>| async move {
                    if let Some(ms) = request.uri().path().strip_prefix("/block/").and_then(|ms| ms.parse().ok()) {
                        // Blocks this runtime thread, and every connection it serves.
                        std::thread::sleep(std::time::Duration::from_millis(ms));
                    }
                    let body = format!(
                        "Hello from simplehttp-prefork worker {} (connection {id} from {})\n",
                        std::process::id(),
                        peer.ip()
                    );
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
