//! The binary's built-in routes: a greeting, and (only with `--demo`) routes that let any
//! client keep a worker busy or grow it, on purpose: a sleep, a blocking sleep and a leak.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use simplehttp_prefork::{Handler, Request, RequestContext, Response};

/// Longest `/sleep/<ms>` accepted.
pub const MAX_SLEEP_MS: u64 = 60_000;

/// Most memory one `/leak/<MiB>` request leaks.
pub const MAX_LEAK_MIB: usize = 512;

/// `(DIR, handler)` pairs, in dispatch order: `/` always, the others with `demo`.
pub fn routes(demo: bool) -> Vec<(String, Handler)> {
    let mut routes = vec![("^/$".to_owned(), Handler::new(hello))];
    if demo {
        routes.extend([
            ("^/sleep/".to_owned(), Handler::new_async(sleep)),
            ("^/block/".to_owned(), Handler::new(block)),
            ("^/leak/".to_owned(), Handler::new(leak)),
        ]);
    }
    routes
}

/// This worker's pid, read once per process: `getpid` is a system call on every call, and
/// `/` is the route benchmarks hammer.
fn worker_pid() -> u32 {
    thread_local! {
        static PID: u32 = std::process::id();
    }
    PID.with(|pid| *pid)
}

fn hello(_: Request, context: RequestContext) -> Response {
    let body = format!(
        "Hello from simplehttp-prefork worker {} (connection {} from {})\n",
        worker_pid(),
        context.connection.id,
        context.connection.remote_ip
    );
    Response::new(Bytes::from(body))
}

/// Blocks this worker's only thread, as a blocking handler (a database driver, a C library)
/// does: nothing but a signal can interrupt it.
fn block(request: Request, _: RequestContext) -> Response {
    match request.uri().path().trim_start_matches("/block/").parse::<u64>() {
        Ok(ms) if ms <= MAX_SLEEP_MS => {
            std::thread::sleep(Duration::from_millis(ms));
            Response::new(Bytes::from(format!("blocked {ms} ms in worker {}\n", worker_pid())))
        }
        _ => bad_request(format!("400 Bad Request: use /block/<0..={MAX_SLEEP_MS}>\n")),
    }
}

/// Leaks memory in this worker on purpose, to watch `--max-worker-rss` recycle it.
fn leak(request: Request, _: RequestContext) -> Response {
    match request.uri().path().trim_start_matches("/leak/").parse::<usize>() {
        Ok(mib) if mib <= MAX_LEAK_MIB => {
            // Touch every page so it becomes resident, then never free it.
            let leaked: &'static mut [u8] = Vec::leak(vec![1u8; mib << 20]);
            std::hint::black_box(&leaked);
            Response::new(Bytes::from(format!("leaked {mib} MiB in worker {}\n", worker_pid())))
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
            Response::new(Bytes::from(format!("slept {ms} ms in worker {}\n", worker_pid())))
        }
        _ => bad_request(format!("400 Bad Request: use /sleep/<0..={MAX_SLEEP_MS}>\n")),
    }
}
