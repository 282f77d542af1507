//! An axum application, preforked: a `Router` with path parameters, per-worker state built by
//! a fork handler (a database connection, in real life), request and response bodies streamed
//! both ways, a large body with its `Content-Length`, and
//! tower-http layers (request tracing, gzip compression, a timeout), served by
//! simplehttp-prefork's workers next to a SimpleHTTP-style handler. The scoreboard and the
//! status page (`/server-status`) see its requests as any others.
//!
//! ```text
//! cargo run -p simplehttp-prefork --example axum -- 127.0.0.1:8080
//! curl http://127.0.0.1:8080/users/42
//! curl -d 'hello' http://127.0.0.1:8080/echo
//! curl -N http://127.0.0.1:8080/stream
//! curl -N -T - http://127.0.0.1:8080/echo-stream   # each line comes back as it is typed
//! curl -sI http://127.0.0.1:8080/large             # Content-Length: 1048576
//! curl -H 'Accept-Encoding: gzip' -o /dev/null -w '%{size_download}\n' http://127.0.0.1:8080/big
//! curl -i 'http://127.0.0.1:8080/slow?ms=2000'      # 408: past the 1 s timeout layer
//! ```

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query};
use axum::routing::{get, post};
use simplehttp_prefork::{Handler, Response, Server, WorkerInfo};
use tower_http::compression::CompressionLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// What the fork handler opened in this worker: one per process, never shared between them.
static CONNECTION: OnceLock<String> = OnceLock::new();

fn connection() -> &'static str {
    CONNECTION.get().map_or("none", String::as_str)
}

async fn user(Path(id): Path<u64>) -> String {
    format!("user {id}, looked up by worker {} on {}\n", std::process::id(), connection())
}

async fn echo(body: Bytes) -> Bytes {
    body
}

/// Five chunks, a little apart: the client sees each as it is sent.
async fn stream() -> Body {
    let chunks = futures_util::stream::unfold(0, |n| async move {
        if n == 5 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        Some((Ok::<_, std::convert::Infallible>(format!("chunk {n}\n")), n + 1))
    });
    Body::from_stream(chunks)
}

/// The request body, back as it arrives: streamed both ways.
async fn echo_stream(body: Body) -> Body {
    body
}

/// A body larger than the worker sends in one piece, of a size known up front: streamed, with
/// its `Content-Length`.
async fn large() -> Bytes {
    Bytes::from(vec![b'x'; 1 << 20])
}

async fn big() -> String {
    "all work and no play makes a dull server\n".repeat(256)
}

#[derive(serde::Deserialize)]
struct Slow {
    ms: u64,
}

async fn slow(Query(Slow { ms }): Query<Slow>) -> String {
    tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    format!("slept {ms} ms\n")
}

fn app() -> Router {
    Router::new()
        .route("/users/{id}", get(user))
        .route("/echo", post(echo))
        .route("/stream", get(stream))
        .route("/echo-stream", post(echo_stream))
        .route("/large", get(large))
        .route("/big", get(big))
        .route("/slow", get(slow))
        .layer(TimeoutLayer::with_status_code(http::StatusCode::REQUEST_TIMEOUT, Duration::from_secs(1)))
        .layer(CompressionLayer::new())
        .layer(TraceLayer::new_for_http())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let listen: SocketAddr = std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:8080").parse()?;
    let server = Server::builder()
        .address(listen.ip())
        .port(listen.port())
        .start_servers(2)
        .min_spare_servers(1)
        .max_spare_servers(3)
        .max_clients(8)
        .keepalive(true)
        .max_body_size(64 * 1024)
        .status_path(Some("/server-status".into()))
        .fork_handler(|worker: &WorkerInfo| {
            let _ = CONNECTION.set(format!("connection #{} of worker {}", worker.slot, worker.pid));
            Ok(())
        })
        // A SimpleHTTP handler first; the axum app answers whatever it does not.
        .handler("^/hello$", Handler::new(|_, _| Response::new("hello from a SimpleHTTP handler\n".into())))
        .service(app())
        .build()?;
    server.bind()?.run_with(|started| println!("listening on {}", started.url()))?;
    Ok(())
}
