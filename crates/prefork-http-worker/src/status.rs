//! The built-in status page: the scoreboard as JSON (`?json`), Apache `?auto` lines, or text.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use prefork_scoreboard::StatusReport;

use crate::handler::{ConnectionInfo, Response};
use crate::shared::WorkerShared;

/// The request is for the status page.
pub(crate) fn is_status_request(path: &str, worker: &WorkerShared) -> bool {
    worker.config.status_path.as_deref() == Some(path)
}

/// Answers the status page. Only loopback clients may read it: it shows every worker's pid.
pub(crate) fn respond(query: Option<&str>, connection: &ConnectionInfo, worker: &WorkerShared) -> Response {
    if !connection.remote_ip.is_loopback() {
        return plain(StatusCode::FORBIDDEN, "403 Forbidden\n".into(), "text/plain; charset=utf-8");
    }
    let report = StatusReport::new(&worker.board.snapshot(), &worker.scoreboard_name);
    let has = |key: &str| query.is_some_and(|q| q.split('&').any(|kv| kv.split('=').next() == Some(key)));
    if has("json") {
        plain(StatusCode::OK, report.to_json(), "application/json")
    } else if has("auto") {
        plain(StatusCode::OK, report.to_apache_auto(), "text/plain; charset=ISO-8859-1")
    } else {
        plain(StatusCode::OK, report.to_text(), "text/plain; charset=utf-8")
    }
}

fn plain(status: StatusCode, body: String, content_type: &'static str) -> Response {
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
