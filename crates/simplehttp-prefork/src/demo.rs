//! The binary's built-in routes: a greeting, and a sleep that keeps a worker busy on purpose.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use simplehttp_prefork::{Handler, Request, RequestContext, Response};

/// Longest `/sleep/<ms>` accepted.
pub const MAX_SLEEP_MS: u64 = 60_000;

/// `(DIR, handler)` pairs, in dispatch order.
pub fn routes() -> Vec<(String, Handler)> {
    vec![("^/sleep/".to_owned(), Handler::new_async(sleep)), ("^/$".to_owned(), Handler::new(hello))]
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

async fn sleep(request: Request, _: RequestContext) -> Response {
    let millis = request.uri().path().trim_start_matches("/sleep/").parse::<u64>();
    match millis {
        Ok(ms) if ms <= MAX_SLEEP_MS => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(Bytes::from(format!("slept {ms} ms in worker {}\n", std::process::id())))
        }
        _ => {
            let mut response =
                Response::new(Bytes::from(format!("400 Bad Request: use /sleep/<0..={MAX_SLEEP_MS}>\n")));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            response
        }
    }
}
