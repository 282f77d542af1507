//! The built-in status page: HTML for people (`?refresh=N` reloads it), `?json`, Apache's
//! `?auto`, `?openmetrics` (or `Accept: application/openmetrics-text`), and `?text`.

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use prefork_scoreboard::StatusReport;
use prefork_scoreboard::report::OPENMETRICS_CONTENT_TYPE;

use crate::handler::{ConnectionInfo, Response};
use crate::shared::WorkerShared;

/// The request is for the status page.
pub(crate) fn is_status_request(path: &str, worker: &WorkerShared) -> bool {
    worker.config.status_path.as_deref() == Some(path)
}

/// Answers the status page, to allowed client networks only: it shows every worker's pid,
/// clients and requests.
pub(crate) fn respond(
    query: Option<&str>,
    headers: &HeaderMap,
    connection: &ConnectionInfo,
    worker: &WorkerShared,
) -> Response {
    if !connection.unix_socket && !allowed(connection.remote_ip, worker) {
        return plain(StatusCode::FORBIDDEN, "403 Forbidden\n".into(), "text/plain; charset=utf-8");
    }
    let report = StatusReport::new(&worker.board.snapshot(), &worker.scoreboard_name);
    let value = |key: &str| {
        query.and_then(|q| q.split('&').map(|kv| kv.split_once('=').unwrap_or((kv, ""))).find(|(k, _)| *k == key))
    };
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if value("json").is_some() {
        plain(StatusCode::OK, report.to_json(), "application/json")
    } else if value("auto").is_some() {
        plain(StatusCode::OK, report.to_apache_auto(), "text/plain; charset=ISO-8859-1")
    } else if value("openmetrics").is_some() || wants_openmetrics {
        plain(StatusCode::OK, report.to_openmetrics(), OPENMETRICS_CONTENT_TYPE)
    } else if value("text").is_some() {
        plain(StatusCode::OK, report.to_text(), "text/plain; charset=utf-8")
    } else {
        // Apache's `?refresh` without a value means 1 second; keep it within reason.
        let refresh = value("refresh").map(|(_, v)| v.parse::<u32>().unwrap_or(1).clamp(1, 3600));
        plain(StatusCode::OK, report.to_html(refresh), "text/html; charset=utf-8")
    }
}

fn allowed(ip: IpAddr, worker: &WorkerShared) -> bool {
    // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    worker.config.status_allow.iter().any(|net| net.contains(&ip))
}

fn plain(status: StatusCode, body: String, content_type: &'static str) -> Response {
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
