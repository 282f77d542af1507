//! SimpleHTTP's `examples/proxy.pl`: a forward HTTP proxy in PROXYMODE, where handlers see the
//! request's full URI (`http://host:port/path`) and match DIR against all of it. The handler
//! fetches the URI itself with a plain blocking socket: in a preforked worker, blocking code
//! holds only its own worker, while idle siblings take the other clients.
//!
//! ```text
//! cargo run -p simplehttp-prefork --example proxy -- 127.0.0.1:3128
//! curl -x http://127.0.0.1:3128 http://example.org/
//! ```

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use simplehttp_prefork::bytes::Bytes;
use simplehttp_prefork::http::{HeaderName, HeaderValue, Method, StatusCode};
use simplehttp_prefork::{Handler, Request, RequestContext, Response, Server};

fn main() -> anyhow::Result<()> {
    let listen: SocketAddr = std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:3128").parse()?;
    let server = Server::builder()
        .address(listen.ip())
        .port(listen.port())
        .proxy_mode(true)
        .handler("^http://", Handler::new(forward))
        .build()?;
    server.bind()?.run_with(|started| println!("listening on {}", started.url()))?;
    Ok(())
}

fn error(status: StatusCode, why: String) -> Response {
    let mut response = Response::new(Bytes::from(format!("{why}\n")));
    *response.status_mut() = status;
    response
}

/// Fetches the request's URI (GET and HEAD) over HTTP/1.0 and relays the answer.
fn forward(request: Request, _: RequestContext) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return error(StatusCode::NOT_IMPLEMENTED, format!("{} is not proxied here", request.method()));
    }
    let uri = request.uri();
    let (Some(host), path) = (uri.host(), uri.path_and_query().map_or("/", |p| p.as_str())) else {
        return error(StatusCode::BAD_REQUEST, "not an absolute http:// URI".into());
    };
    let port = uri.port_u16().unwrap_or(80);
    match fetch(request.method(), host, port, path) {
        Ok(response) => response,
        Err(why) => error(StatusCode::BAD_GATEWAY, format!("{host}:{port}: {why}")),
    }
}

fn fetch(method: &Method, host: &str, port: u16, path: &str) -> Result<Response, Box<dyn std::error::Error>> {
    let mut upstream = TcpStream::connect((host, port))?;
    upstream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(upstream, "{method} {path} HTTP/1.0\r\nHost: {host}:{port}\r\nVia: 1.0 simplehttp-prefork\r\n\r\n")?;
    let mut raw = Vec::new();
    upstream.read_to_end(&mut raw)?;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = parsed.parse(&raw)? else { return Err("a truncated answer".into()) };
    let mut response = Response::new(Bytes::copy_from_slice(&raw[head_len..]));
    *response.status_mut() = StatusCode::from_u16(parsed.code.unwrap_or(502))?;
    for header in parsed.headers.iter() {
        // Hop-by-hop headers are this connection's, not the client's.
        if ["connection", "keep-alive", "transfer-encoding"].contains(&header.name.to_ascii_lowercase().as_str()) {
            continue;
        }
        response
            .headers_mut()
            .append(HeaderName::from_bytes(header.name.as_bytes())?, HeaderValue::from_bytes(header.value)?);
    }
    Ok(response)
}
