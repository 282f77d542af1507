//! The binary's built-in routes: a greeting, a sleep that keeps a worker busy and a leak that
//! grows one, on purpose.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use simplehttp_prefork::{Handler, Request, RequestContext, Response};

/// Longest `/sleep/<ms>` accepted.
pub const MAX_SLEEP_MS: u64 = 60_000;

/// Most memory one `/leak/<MiB>` request leaks.
pub const MAX_LEAK_MIB: usize = 512;

/// `(DIR, handler)` pairs, in dispatch order.
pub fn routes() -> Vec<(String, Handler)> {
    vec![
        ("^/sleep/".to_owned(), Handler::new_async(sleep)),
        ("^/leak/".to_owned(), Handler::new(leak)),
        ("^/$".to_owned(), Handler::new(hello)),
    ]
}

fn hello(_: Request, context: RequestContext) -> Response {
    let body = format!(
        "Hello from simplehttp-prefork worker {} (connection {} from {})\n",
        std::process::id(),
        context.connection.id,
        context.connection.remote_ip
    );
    Response::new(Bytes::from(body))
}

/// Leaks memory in this worker on purpose, to watch `--max-worker-rss` recycle it.
fn leak(request: Request, _: RequestContext) -> Response {
    match request.uri().path().trim_start_matches("/leak/").parse::<usize>() {
        Ok(mib) if mib <= MAX_LEAK_MIB => {
            // Touch every page so it becomes resident, then never free it.
            let leaked: &'static mut [u8] = Vec::leak(vec![1u8; mib << 20]);
            std::hint::black_box(&leaked);
            Response::new(Bytes::from(format!("leaked {mib} MiB in worker {}\n", std::process::id())))
        }
        _ => bad_request(format!("400 Bad Request: use /leak/<0..={MAX_LEAK_MIB}>\n")),
    }
}

fn bad_request(body: String) -> Response {
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

async fn sleep(request: Request, _: RequestContext) -> Response {
    let millis = request.uri().path().trim_start_matches("/sleep/").parse::<u64>();
    match millis {
        Ok(ms) if ms <= MAX_SLEEP_MS => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(Bytes::from(format!("slept {ms} ms in worker {}\n", std::process::id())))
        }
        _ => bad_request(format!("400 Bad Request: use /sleep/<0..={MAX_SLEEP_MS}>\n")),
    }
}
