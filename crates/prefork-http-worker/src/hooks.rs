//! SimpleHTTP's LOGHANDLER, LOG2HANDLER and ERRORHANDLER, and an access log in Common or
//! Combined Log Format (through `tracing`, target `access`).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::rc::Rc;

use time::OffsetDateTime;
use time::macros::format_description;

use crate::handler::ConnectionInfo;

/// Called with each request (head only) and the client's address, before it is dispatched.
pub type LogHook = Rc<dyn Fn(&http::request::Parts, IpAddr)>;
/// Called with each request and its response (heads) once the response has been written.
pub type Log2Hook = Rc<dyn Fn(&http::request::Parts, &http::response::Parts)>;
/// Called when a connection fails (malformed request, timeout, reset, TLS handshake).
pub type ErrorHook = Rc<dyn Fn(&ConnectionInfo, &str)>;

/// The hooks a worker calls. All optional.
#[derive(Clone, Default)]
pub struct Hooks {
    /// SimpleHTTP's LOGHANDLER: called with each request before it is dispatched.
    pub log: Option<LogHook>,
    /// SimpleHTTP's LOG2HANDLER: called with each request and its response once written.
    pub log2: Option<Log2Hook>,
    /// SimpleHTTP's ERRORHANDLER: called when a connection fails.
    pub error: Option<ErrorHook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("log", &self.log.is_some())
            .field("log2", &self.log2.is_some())
            .field("error", &self.error.is_some())
            .finish()
    }
}

/// Calls a user hook; a panic in it is logged and goes no further: a logging hook must not
/// cost the request, the connection or the worker.
pub(crate) fn call_hook(name: &'static str, hook: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook)).is_err() {
        tracing::error!(hook = name, "hook panicked");
    }
}

/// Access log line formats (Apache's `common` and `combined`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// `host ident authuser [date] "request" status bytes`
    Common,
    /// Common, then `"referer" "user-agent"`.
    Combined,
}

/// One access log line.
pub(crate) fn access_line(
    format: AccessLogFormat,
    client: IpAddr,
    request: &http::request::Parts,
    status: u16,
    bytes: u64,
    when: OffsetDateTime,
) -> String {
    let date = when
        .format(format_description!(
            "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]"
        ))
        .unwrap_or_default();
    let bytes = if bytes == 0 { "-".to_owned() } else { bytes.to_string() };
    let mut line = format!(
        "{client} - - [{date}] \"{} {} {:?}\" {status} {bytes}",
        request.method,
        quoted(request.uri.to_string().as_bytes()),
        request.version
    );
    if format == AccessLogFormat::Combined {
        let header = |name| request.headers.get(name).map_or("-".to_owned(), |v| quoted(v.as_bytes()));
        let _ = write!(line, " \"{}\" \"{}\"", header(http::header::REFERER), header(http::header::USER_AGENT));
    }
    line
}

/// Escapes what a client sent, as Apache does, so that a log line stays one line and quoted
/// fields stay quoted.
fn quoted(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str) -> http::request::Parts {
        let mut request = http::Request::get(uri).body(()).unwrap().into_parts().0;
        request.headers.insert(http::header::USER_AGENT, "curl/8 \"test\"".parse().unwrap());
        request
    }

    #[test]
    fn common_and_combined_lines_look_like_apaches() {
        let when = time::macros::datetime!(2000-10-10 13:55:36 UTC);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            access_line(AccessLogFormat::Common, ip, &request("/apache_pb.gif"), 200, 2326, when),
            "127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] \"GET /apache_pb.gif HTTP/1.1\" 200 2326"
        );
        assert_eq!(
            access_line(AccessLogFormat::Combined, ip, &request("/x"), 404, 0, when),
            "127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] \"GET /x HTTP/1.1\" 404 - \"-\" \"curl/8 \\\"test\\\"\""
        );
    }

    #[test]
    fn control_characters_cannot_break_a_line() {
        assert_eq!(quoted(b"a\nb\x7fc"), "a\\x0ab\\x7fc");
    }
}
