//! SimpleHTTP's `examples/server.pl`: a plain server. Handlers are tried in order against the
//! request path (unanchored regular expressions, the first match answers); no match is a 404.
//!
//! ```text
//! cargo run -p simplehttp-prefork --example server -- 127.0.0.1:8080
//! curl http://127.0.0.1:8080/            # Hello, world!
//! curl http://127.0.0.1:8080/honk/       # ...from the handler for ^/honk/
//! curl http://127.0.0.1:8080/nothing     # 404 Not Found
//! ```

use std::net::SocketAddr;

use simplehttp_prefork::{Handler, Response, Server};

fn main() -> anyhow::Result<()> {
    let listen: SocketAddr = std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:8080").parse()?;
    let server = Server::builder()
        .address(listen.ip())
        .port(listen.port())
        .keepalive(true)
        .handler(
            "^/honk/",
            Handler::new(|request, context| {
                Response::new(format!("honk: {} matched {}\n", request.uri(), context.dir).into())
            }),
        )
        .handler("^/$", Handler::new(|_, _| Response::new("Hello, world!\n".into())))
        .build()?;
    server.bind()?.run_with(|started| println!("listening on {}", started.url()))?;
    Ok(())
}
