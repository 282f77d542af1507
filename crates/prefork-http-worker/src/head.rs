//! Whether the bytes received on a connection hold a request a handler can take at once, or
//! more must arrive first: the test a parked connection passes before it may take a worker.
//!
//! httparse decides where the head ends, with the same limits hyper applies later; hyper
//! parses the request again once a worker serves it. The test only ever answers "ready"
//! *earlier* than hyper would need the bytes, never later: anything it is unsure of
//! (malformed or oversized heads, chunked bodies, `Expect: 100-continue`) is ready, and hyper
//! then answers it or reads the rest itself. So a request hyper would accept is never held
//! back here.

use std::mem::MaybeUninit;

use httparse::{Header, Request, Status};

use crate::parked::MAX_PARKED_BYTES;

/// Headers the test looks at: a request with more is left to hyper (ready at once), which
/// applies the configured limit.
const MAX_HEADERS_SEEN: usize = 128;

/// Bodies up to this size (by `Content-Length`) are received whole before the request takes
/// a worker, so that a client sending its body slowly holds no worker. Larger ones take a
/// worker once their head is complete (their body is read under the minimum-rate rule).
pub(crate) const MAX_PARKED_BODY: usize = 64 * 1024;

/// What a parked connection is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Nothing yet, or part of the request head.
    Head,
    /// The head is complete; `received` of the body's `expected` bytes are in.
    Body { received: usize, expected: usize },
    /// A handler can take it now (or hyper must answer it: a malformed or oversized request).
    Ready,
}

/// The limits the test applies (hyper's own, so that both agree on where a head ends).
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeadLimits {
    pub max_headers: usize,
    pub max_header_size: usize,
}

/// How the first request in some bytes is framed, as far as it can be told without hyper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Its head is not complete yet.
    Head,
    /// It is `head` bytes of head and then `body` bytes of body (`Content-Length`, or none);
    /// `waits_for_continue`: the client sends the body only after `100 Continue`.
    Sized { head: usize, body: usize, waits_for_continue: bool },
    /// hyper must frame it (chunked body, conflicting lengths) or refuse it (malformed, too
    /// long a head): it needs no more bytes from us to do so.
    ForHyper,
}

/// How the first request in `bytes` is framed.
pub(crate) fn framing(bytes: &[u8], limits: HeadLimits) -> Framing {
    // Uninitialised: this runs on every new connection, and most heads have a few headers.
    let mut headers = [const { MaybeUninit::<Header<'_>>::uninit() }; MAX_HEADERS_SEEN];
    let mut request = Request::new(&mut []);
    let seen = limits.max_headers.clamp(1, MAX_HEADERS_SEEN);
    let head = match request.parse_with_uninit_headers(bytes, &mut headers[..seen]) {
        Ok(Status::Complete(len)) if len <= limits.max_header_size => len,
        // Too long a head: hyper answers 431 (it needs no more bytes to do so).
        Ok(Status::Complete(_)) => return Framing::ForHyper,
        Ok(Status::Partial) if bytes.len() > limits.max_header_size => return Framing::ForHyper,
        Ok(Status::Partial) => return Framing::Head,
        // Malformed (or HTTP/2's preface, which is not HTTP/1 at all): hyper answers it, or the
        // HTTP/2 sniffing takes it.
        Err(_) => return Framing::ForHyper,
    };
    match body_length(request.headers) {
        // A length whose end cannot be counted in memory: hyper refuses it.
        Some((body, _)) if head.checked_add(body).is_none() => Framing::ForHyper,
        Some((body, waits_for_continue)) => Framing::Sized { head, body, waits_for_continue },
        None => Framing::ForHyper,
    }
}

/// Whether the first request in some bytes can go to a handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// Not yet: part of its head, or of a small body.
    Waiting(Progress),
    /// Now: `len` bytes are its own (`None`: hyper frames it, or refuses it).
    Ready { len: Option<usize> },
}

/// Whether the first request in `bytes` can go to a handler, and how long it is. One rule for
/// a new connection, a parked one and the next request of a keep-alive one: its head, and a
/// body of at most [`MAX_PARKED_BODY`] that the client sends without waiting for `100
/// Continue`; anything past [`MAX_PARKED_BYTES`] is hyper's to take.
pub(crate) fn readiness(bytes: &[u8], limits: HeadLimits) -> Readiness {
    match framing(bytes, limits) {
        Framing::Head if bytes.len() >= MAX_PARKED_BYTES => Readiness::Ready { len: None },
        Framing::Head => Readiness::Waiting(Progress::Head),
        Framing::ForHyper => Readiness::Ready { len: None },
        Framing::Sized { head, body, waits_for_continue } => {
            let len = Some(head + body);
            let received = bytes.len() - head;
            if waits_for_continue || body > MAX_PARKED_BODY || received >= body || bytes.len() >= MAX_PARKED_BYTES {
                Readiness::Ready { len }
            } else {
                Readiness::Waiting(Progress::Body { received, expected: body })
            }
        }
    }
}

/// Where the request in `bytes` stands.
pub(crate) fn progress(bytes: &[u8], limits: HeadLimits) -> Progress {
    if bytes.is_empty() {
        return Progress::Head;
    }
    match readiness(bytes, limits) {
        Readiness::Waiting(progress) => progress,
        Readiness::Ready { .. } => Progress::Ready,
    }
}

/// The body's length if the request says it plainly, and whether the client waits for
/// `100 Continue`: one `Content-Length` (repeats must agree), no `Transfer-Encoding`. `None`
/// hands the body to hyper: chunked, conflicting or invalid framing.
fn body_length(headers: &[Header<'_>]) -> Option<(usize, bool)> {
    let mut length = None;
    let mut waits_for_continue = false;
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        if header.name.eq_ignore_ascii_case("expect") {
            waits_for_continue = true;
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value).ok()?.trim();
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let value: usize = value.parse().ok()?;
            match length {
                Some(seen) if seen != value => return None,
                _ => length = Some(value),
            }
        }
    }
    Some((length.unwrap_or(0), waits_for_continue))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits { max_headers: 100, max_header_size: 8192 };

    fn of(bytes: &[u8]) -> Progress {
        progress(bytes, LIMITS)
    }

    #[test]
    fn a_head_is_ready_at_its_blank_line_and_not_before() {
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..request.len() {
            assert_eq!(of(&request[..cut]), Progress::Head, "{:?}", String::from_utf8_lossy(&request[..cut]));
        }
        assert_eq!(of(request), Progress::Ready);
        // A pipelined second request does not matter: the first is ready.
        assert_eq!(of(b"GET / HTTP/1.1\r\n\r\nGET /b HTT"), Progress::Ready);
    }

    #[test]
    fn a_small_body_is_waited_for_whole() {
        let head = b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(of(head), Progress::Body { received: 0, expected: 5 });
        let mut partial = head.to_vec();
        partial.extend_from_slice(b"abc");
        assert_eq!(of(&partial), Progress::Body { received: 3, expected: 5 });
        partial.extend_from_slice(b"de");
        assert_eq!(of(&partial), Progress::Ready);
    }

    #[test]
    fn what_hyper_must_decide_is_ready_at_once() {
        for request in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"PRI * HTTP/2",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            assert_eq!(of(request), Progress::Ready, "{:?}", String::from_utf8_lossy(request));
        }
        // A length that overflows a count is hyper's to refuse.
        assert_eq!(of(b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n"), Progress::Ready);
        // Repeats that agree are a plain length.
        assert_eq!(
            of(b"POST / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\n"),
            Progress::Body { received: 0, expected: 2 }
        );
    }

    #[test]
    fn framing_gives_each_pipelined_request_its_length() {
        let two = b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(framing(two, LIMITS), Framing::Sized { head: 19, body: 0, waits_for_continue: false });
        assert_eq!(framing(&two[19..], LIMITS), Framing::Sized { head: 39, body: 3, waits_for_continue: false });
        assert_eq!(framing(&two[19..30], LIMITS), Framing::Head);
        let expect = b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n";
        assert!(matches!(framing(expect, LIMITS), Framing::Sized { body: 9, waits_for_continue: true, .. }));
        assert_eq!(framing(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", LIMITS), Framing::ForHyper);
    }

    #[test]
    fn an_oversized_or_overfull_head_is_left_to_hyper() {
        let long = format!("GET /{} HTTP/1.1\r\n", "x".repeat(9000));
        assert_eq!(of(long.as_bytes()), Progress::Ready);
        let many: String = (0..101).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(of(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()), Progress::Ready);
    }
}
