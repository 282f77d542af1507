//! The tests' HTTP/1.1 client: raw requests on a connection of their own, and the response read
//! to its end (by `Content-Length`, chunked, or to the close), headers parsed by httparse.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};

/// An HTTP response read to the end.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The connection closed before the chunked body's last chunk (a stream that ended by
    /// closing its connection): `body` is what came.
    pub truncated: bool,
}

impl HttpResponse {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A persistent HTTP/1.1 connection for keep-alive tests: one request, one response.
#[derive(Debug)]
pub struct HttpConnection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl HttpConnection {
    /// Connects (with a 5 s connect and 30 s read timeout).
    pub fn open(addr: SocketAddr) -> Result<HttpConnection> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(HttpConnection { stream, buffer: Vec::new() })
    }

    /// Sends raw bytes.
    pub fn send(&mut self, raw: &[u8]) -> Result<()> {
        self.stream.write_all(raw)?;
        Ok(())
    }

    /// `GET path` asking to keep the connection open, and its response.
    pub fn get(&mut self, path: &str) -> Result<HttpResponse> {
        let addr = self.stream.peer_addr()?;
        self.send(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        self.read_response()
    }

    /// Reads exactly one response: its body sized by `Content-Length`, chunked, or (with
    /// neither) empty, or to the close when the response says `Connection: close`.
    pub fn read_response(&mut self) -> Result<HttpResponse> {
        let mut closed = false;
        loop {
            if let Some((response, consumed)) = complete_response(&self.buffer, closed)? {
                self.buffer.drain(..consumed);
                return Ok(response);
            }
            ensure!(!closed, "connection closed before a complete response ({} bytes)", self.buffer.len());
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk)?;
            closed = n == 0;
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits up to `timeout` for the server to close the connection; true if it did.
    pub fn closed_by_server_within(&mut self, timeout: Duration) -> Result<bool> {
        self.stream.set_read_timeout(Some(timeout))?;
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => Ok(true),
            Ok(_) => bail!("unexpected data from the server"),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(true),
            Err(e) => Err(e.into()),
        }
    }
}

/// `GET path HTTP/1.1` with `Connection: close`, read to EOF (bounded by a timeout).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(90)))?;
    // One write, as real clients send a request (write! would make one per piece).
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// Parses one complete HTTP/1.1 response read to the close (headers by httparse; the body by
/// `Content-Length`, chunked, or to the end).
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    match complete_response(raw, true)? {
        Some((response, _)) => Ok(response),
        None => bail!("incomplete response ({} bytes): {:?}", raw.len(), String::from_utf8_lossy(raw)),
    }
}

/// The first response in `raw` and the bytes it takes, once it is all there (`closed`: nothing
/// more will come, so a body framed by the close ends here).
fn complete_response(raw: &[u8], closed: bool) -> Result<Option<(HttpResponse, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(raw)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.context("no status code")?;
    let headers: Vec<(String, String)> =
        response.headers.iter().map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned())).collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim());
    let rest = &raw[head_len..];
    let mut truncated = false;
    let framed = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let (body, used, complete) = dechunk(rest)?;
        truncated = closed && !complete;
        (complete || closed).then_some((body, used))
    } else if let Some(length) = header("content-length") {
        let length: usize = length.parse()?;
        ensure!(rest.len() >= length || !closed, "body shorter ({}) than Content-Length {length}", rest.len());
        (rest.len() >= length).then(|| (rest[..length].to_vec(), length))
    } else if closed {
        Some((rest.to_vec(), rest.len()))
    } else if header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
        None // framed by the close, still to come
    } else {
        Some((Vec::new(), 0))
    };
    Ok(framed.map(|(body, used)| {
        let body = String::from_utf8_lossy(&body).into_owned();
        (HttpResponse { status, headers, body, truncated }, head_len + used)
    }))
}

/// A chunked body (sizes parsed by httparse), the bytes it takes, and whether it is complete
/// (its last chunk and trailers are all there); incomplete, the whole chunks so far.
fn dechunk(mut raw: &[u8]) -> Result<(Vec<u8>, usize, bool)> {
    let (mut body, mut used) = (Vec::new(), 0);
    loop {
        let (line, size) = match httparse::parse_chunk_size(raw).map_err(|_| anyhow::anyhow!("bad chunk size"))? {
            httparse::Status::Complete(found) => found,
            httparse::Status::Partial => return Ok((body, used, false)),
        };
        let size = usize::try_from(size)?;
        if size == 0 {
            let mut trailers = [httparse::EMPTY_HEADER; 16];
            return Ok(match httparse::parse_headers(&raw[line..], &mut trailers)? {
                httparse::Status::Complete((n, _)) => (body, used + line + n, true),
                httparse::Status::Partial => (body, used, false),
            });
        }
        let Some(chunk) = raw.get(line..line + size + 2) else { return Ok((body, used, false)) };
        ensure!(chunk.ends_with(b"\r\n"), "a chunk not ended by CRLF");
        body.extend_from_slice(&chunk[..size]);
        used += line + size + 2;
        raw = &raw[line + size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_body_is_read_whole_and_what_follows_is_left() {
        let raw =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\nHTTP/1.1";
        let (response, used) = complete_response(raw, false).unwrap().unwrap();
        assert_eq!((response.status, response.body.as_str()), (200, "hello, world"));
        assert_eq!(&raw[used..], b"HTTP/1.1");
        assert!(complete_response(&raw[..40], false).unwrap().is_none(), "a partial chunk is not a response");
        // Closed before the last chunk: what came, marked truncated.
        let cut = parse_response(&raw[..raw.len() - 20]).unwrap();
        assert!(cut.truncated && cut.body == "hello", "{cut:?}");
        assert!(!response.truncated);
    }

    #[test]
    fn bodies_end_by_length_by_close_or_are_empty() {
        let sized = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(complete_response(sized, false).unwrap().unwrap().0.body, "abc");
        let to_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc";
        assert!(complete_response(to_close, false).unwrap().is_none());
        assert_eq!(parse_response(to_close).unwrap().body, "abc");
        assert_eq!(parse_response(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap().body, "");
    }
}
