//! What a handler sees and does, for what the ported SimpleHTTP suite has no test of: the
//! connection's `ssl` and `ssl_cipher` over TLS set up through the builder, with the
//! intermediate CA's certificate sent on the wire (SSLINTERMEDIATECACERT); a plain CLOSE; and
//! MAXREQUESTPERCHILD 1 with STARTSERVERS 1 (workers replaced request after request, each new
//! one's fork handler run first: PreFork's old test).
//!
//! `harness = false`: `main` either runs the scenarios, or (with `HANDLER_VIEW_SERVER` set) is
//! the server they start, a fresh single-threaded process that may fork.

use std::cell::Cell;
use std::io::Read as _;
use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use bytes::Bytes;
use prefork_tests::{HttpConnection, ServerProcess, TempPath, require_tool};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use simplehttp_prefork::{Handler, Reply, Response, Server};

const ROLE: &str = "HANDLER_VIEW_SERVER";
/// `key.pem cert.pem intermediate.pem` for the TLS role.
const TLS_FILES: &str = "HANDLER_VIEW_TLS";

thread_local! {
    static INITIALISED_IN: Cell<u32> = const { Cell::new(0) };
}

fn main() -> Result<()> {
    prefork_tests::serve_or_run(
        ROLE,
        serve,
        &[
            ("over_tls_a_handler_sees_ssl_and_its_cipher_and_the_chain_is_sent", tls),
            ("a_plain_close_closes_without_an_answer", plain_close),
            ("one_request_per_child_with_one_start_server_forks_a_worker_per_request", one_request_per_child),
        ],
    )
}

fn text(body: String) -> Response {
    Response::new(Bytes::from(body))
}

fn serve(role: &str) -> Result<()> {
    let mut builder = Server::builder().start_servers(1).min_spare_servers(1).max_spare_servers(2).max_clients(4);
    match role {
        "tls" => {
            let files = std::env::var(TLS_FILES)?;
            let files: Vec<&str> = files.split(' ').collect();
            builder = builder.ssl_key_cert(files[0], files[1]).ssl_intermediate_ca(files[2]);
        }
        "one-per-child" => {
            builder = builder.max_spare_servers(1).max_requests_per_child(Some(1)).fork_handler(|_| {
                INITIALISED_IN.with(|cell| cell.set(std::process::id()));
                Ok(())
            });
        }
        _ => {}
    }
    let server = builder
        .handler(
            "^/tls$",
            Handler::new(|_, context| {
                let c = &context.connection;
                text(format!("ssl {} cipher {:?}\n", c.ssl, c.ssl_cipher))
            }),
        )
        .handler("^/close$", Handler::new(|_, _| Reply::Close))
        .handler(
            "^/who$",
            Handler::new(|_, _| text(format!("{} {}\n", std::process::id(), INITIALISED_IN.with(Cell::get)))),
        )
        .build()?;
    let bound = server.bind()?;
    bound.run_with(|started| println!("listening on {}", started.url()))?;
    Ok(())
}

fn start(role: &str, env: &[(&str, String)]) -> Result<ServerProcess> {
    let mut command = Command::new(std::env::current_exe()?);
    command.env(ROLE, role).envs(env.iter().map(|(k, v)| (*k, v)));
    ServerProcess::spawn(command)
}

/// A root CA, an intermediate CA it signed, and a leaf for 127.0.0.1 the intermediate signed:
/// (key, leaf certificate, intermediate certificate) files.
fn chain() -> Result<[TempPath; 3]> {
    let ca_params = {
        let mut params = CertificateParams::new(Vec::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
    };
    let ca = CertifiedIssuer::self_signed(ca_params.clone(), KeyPair::generate()?)?;
    let intermediate = CertifiedIssuer::signed_by(ca_params, KeyPair::generate()?, &ca)?;
    let leaf_key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
        .signed_by(&leaf_key, &intermediate)?;
    let files = [TempPath::new("leaf.key"), TempPath::new("leaf.pem"), TempPath::new("intermediate.pem")];
    std::fs::write(files[0].path(), leaf_key.serialize_pem())?;
    std::fs::write(files[1].path(), leaf.pem())?;
    std::fs::write(files[2].path(), intermediate.pem())?;
    Ok(files)
}

fn tls() -> Result<()> {
    let curl = require_tool("curl", &["curl", "--version"], "apt-get install curl")?;
    let openssl = require_tool("openssl", &["openssl", "version"], "apt-get install openssl")?;
    if !curl || !openssl {
        return Ok(());
    }
    let files = chain()?;
    let names = files.iter().map(TempPath::as_str).collect::<Vec<_>>().join(" ");
    let server = start("tls", &[(TLS_FILES, names)])?;
    let url = server.listening().to_owned() + "/tls";
    ensure!(url.starts_with("https://"), "{url}");
    let output = Command::new("curl").args(["-sS", "-k", "--http1.1", &url]).output()?;
    let body = String::from_utf8_lossy(&output.stdout);
    ensure!(body.starts_with("ssl true cipher Some(\"TLS"), "{body:?} {}", String::from_utf8_lossy(&output.stderr));
    // The chain on the wire: the leaf and the intermediate (SSLINTERMEDIATECACERT).
    let output = Command::new("openssl")
        .args(["s_client", "-connect", &server.addr().to_string(), "-showcerts"])
        .stdin(std::process::Stdio::null())
        .output()?;
    let shown = String::from_utf8_lossy(&output.stdout);
    let certificates = shown.matches("-----BEGIN CERTIFICATE-----").count();
    ensure!(certificates == 2, "{certificates} certificates sent, not the leaf and the intermediate:\n{shown}");
    Ok(())
}

fn plain_close() -> Result<()> {
    let server = start("plain", &[])?;
    let mut connection = HttpConnection::open(server.addr())?;
    connection.send(format!("GET /close HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr()).as_bytes())?;
    ensure!(connection.closed_by_server_within(prefork_tests::DEADLINE)?, "the connection stayed open");
    // Nothing was written before the close.
    let mut stream = std::net::TcpStream::connect(server.addr())?;
    std::io::Write::write_all(&mut stream, b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut received = Vec::new();
    stream.read_to_end(&mut received)?;
    ensure!(received.is_empty(), "CLOSE answered: {:?}", String::from_utf8_lossy(&received));
    ensure!(server.get("/who")?.status == 200, "the worker survives a CLOSE");
    Ok(())
}

/// Every worker is replaced after its request (its replacement forked at once, whose fork
/// handler runs before it serves); one that is not replaced yet when the next request comes
/// answers it too, but never more than the limit and its margin (1 + 1).
fn one_request_per_child() -> Result<()> {
    let server = start("one-per-child", &[])?;
    let mut answered_by = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..8 {
        let body = server.get("/who")?.body;
        let (serving, initialised) = body.trim().split_once(' ').context("two pids")?;
        ensure!(serving == initialised, "the fork handler did not run in {serving}: {body:?}");
        *answered_by.entry(serving.to_owned()).or_default() += 1;
    }
    ensure!(answered_by.values().all(|&n| n <= 2), "past the limit and its margin: {answered_by:?}");
    ensure!(answered_by.len() >= 4, "8 requests, at most 2 per worker: {answered_by:?}");
    Ok(())
}
