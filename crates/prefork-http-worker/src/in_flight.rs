//! One request's passage through the worker: counted when it begins and finished exactly once,
//! however it ends (response sent, client gone, HTTP/2 stream reset, handler chose to close).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;

use http::{HeaderValue, Version, header};
use prefork_scoreboard::clock::monotonic_micros;
use prefork_scoreboard::{FinishedRequest, REQUEST_LINE_BYTES, RequestInfo, RequestStart};

use crate::connection_scope::ConnectionScope;

/// A request between service entry and the end of its response. Dropping it unfinished (its
/// future was cancelled, or no body was ever sent) finishes it with no bytes sent, so the
/// worker's in-flight requests, its slot's state and the watchdog's view never keep a request
/// that no longer exists.
pub(crate) struct InFlight {
    scope: Rc<ConnectionScope>,
    start: RequestStart,
    /// This request's line, for the slow-request log: the slot's record shows the request
    /// begun last, which with HTTP/2 or several connections may be another one.
    line: LineBuffer,
    finished: bool,
    /// Counted in the slot's requests and bytes when it ends (a load balancer's probe is not).
    counted: bool,
}

impl InFlight {
    /// Publishes the request in the scoreboard (line, client, protocol, virtual host) and
    /// counts it as running.
    pub(crate) fn begin<B>(request: &hyper::Request<B>, scope: Rc<ConnectionScope>) -> InFlight {
        let protocol = protocol_name(request.version());
        let line = request_line(request.method(), request.uri(), protocol);
        let vhost = request
            .headers()
            .get(header::HOST)
            .map(HeaderValue::as_bytes)
            .or_else(|| request.uri().authority().map(|a| a.as_str().as_bytes()))
            .unwrap_or_default();
        // Published before the request counts as running, so that whoever sees it running
        // (the status page, the watchdog) sees which request it is.
        let start = scope.worker.slot.begin_request(&RequestInfo {
            line: line.as_bytes(),
            client: scope.client.as_bytes(),
            protocol: protocol.as_bytes(),
            vhost,
        });
        scope.request_started(start);
        InFlight { scope, start, line, finished: false, counted: true }
    }

    /// Leaves this request out of the slot's counts (requests, bytes, durations), and so out
    /// of the recycling limits: a load balancer's health or readiness probe. It is still
    /// shown as the slot's request while it runs.
    pub(crate) fn uncounted(&mut self) {
        self.counted = false;
    }

    /// The connection it arrived on.
    pub(crate) fn scope(&self) -> &Rc<ConnectionScope> {
        &self.scope
    }

    /// `METHOD target VERSION`, cut at the scoreboard's field size.
    pub(crate) fn line(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.line.as_bytes())
    }

    /// Ends the request, `body_bytes` sent, and logs it if it was slow. Later calls do nothing.
    pub(crate) fn finish(&mut self, body_bytes: u64) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        if !self.counted {
            let duration = monotonic_micros().saturating_sub(self.start.micros());
            self.scope.request_finished(self.start, duration);
            return;
        }
        let finished: FinishedRequest = self.scope.worker.slot.finish_request(self.start, body_bytes);
        self.scope.request_finished(self.start, finished.duration_micros);
        if finished.slow {
            // Like php-fpm's slowlog: say which request, from whom, and how long it took.
            tracing::warn!(
                duration_ms = finished.duration_micros / 1000,
                request = %self.line(),
                client = %self.scope.client,
                "slow request"
            );
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.finish(0);
    }
}

/// `HTTP/1.1` and friends.
fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// A request line cut at the scoreboard's field size, formatted without allocating.
struct LineBuffer {
    bytes: [u8; REQUEST_LINE_BYTES],
    len: usize,
}

impl Default for LineBuffer {
    fn default() -> Self {
        LineBuffer { bytes: [0; REQUEST_LINE_BYTES], len: 0 }
    }
}

impl LineBuffer {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// `METHOD target VERSION`, piece by piece rather than with `write!`: the formatting machinery
/// costs more than the line's few bytes, on every request.
fn request_line(method: &http::Method, uri: &http::Uri, protocol: &str) -> LineBuffer {
    let mut line = LineBuffer::default();
    let _ = line.write_str(method.as_str());
    let _ = line.write_str(" ");
    match uri.path_and_query().filter(|_| uri.scheme().is_none()) {
        Some(origin_form) => _ = line.write_str(origin_form.as_str()),
        None => _ = write!(line, "{uri}"),
    }
    let _ = line.write_str(" ");
    let _ = line.write_str(protocol);
    line
}

impl std::fmt::Write for LineBuffer {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(REQUEST_LINE_BYTES - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// The requests of one worker between service entry and the end of their response (several on
/// HTTP/2 or with several connections).
#[derive(Debug, Default)]
pub(crate) struct RequestsInFlight(RefCell<Vec<RequestStart>>);

impl RequestsInFlight {
    /// Adds a request; returns the oldest running.
    pub(crate) fn begin(&self, start: RequestStart) -> Option<RequestStart> {
        let mut running = self.0.borrow_mut();
        running.push(start);
        running.iter().copied().min()
    }

    /// Removes a request; returns how many still run, and the oldest of them.
    pub(crate) fn end(&self, start: RequestStart) -> (usize, Option<RequestStart>) {
        let mut running = self.0.borrow_mut();
        if let Some(at) = running.iter().position(|&s| s == start) {
            running.swap_remove(at);
        }
        (running.len(), running.iter().copied().min())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_line_reads_as_the_client_sent_it() {
        for (method, target) in
            [("GET", "/a/b?c=d"), ("OPTIONS", "*"), ("GET", "http://example.com/x?y"), ("CONNECT", "example.com:443")]
        {
            let line = request_line(&method.parse().unwrap(), &target.parse().unwrap(), "HTTP/1.1");
            assert_eq!(String::from_utf8_lossy(line.as_bytes()), format!("{method} {target} HTTP/1.1"));
        }
    }

    #[test]
    fn the_request_line_buffer_cuts_at_the_field_size() {
        let mut line = LineBuffer::default();
        let _ = write!(line, "GET /{} HTTP/1.1", "x".repeat(500));
        assert_eq!(line.as_bytes().len(), REQUEST_LINE_BYTES);
        assert!(line.as_bytes().starts_with(b"GET /xxx"));
    }
}
