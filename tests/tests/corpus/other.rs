//! The corpus's other families: versions and other protocols, HTTP/2 frames, request targets,
//! expectations and upgrades, pipelines and half-closes, the built-in routes' parameters.

use super::http1::{get, post};
use super::*;

/// Protocol versions, and bytes of other protocols on the cleartext HTTP/1 port.
pub(crate) fn version_and_protocol_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (name, version) in [
        ("http_0_9", "HTTP/0.9"),
        ("http_1_2", "HTTP/1.2"),
        ("http_2_0", "HTTP/2.0"),
        ("http_2", "HTTP/2"),
        ("http_3_0", "HTTP/3.0"),
        ("http_1_10", "HTTP/1.10"),
        ("http_01_1", "HTTP/01.1"),
        ("http_1_1_1", "HTTP/1.1.1"),
        ("lower_case", "http/1.1"),
        ("https", "HTTPS/1.1"),
        ("http_1_x", "HTTP/1.x"),
        ("http_9_9", "HTTP/9.9"),
        ("http_slash", "HTTP/"),
        ("trailing_space", "HTTP/1.1 "),
        ("extra_word", "HTTP/1.1 extra"),
    ] {
        cases.push(Case::new(format!("version/{name}"), format!("GET / {version}\r\nHost: x\r\n\r\n"), Want::Reject));
    }
    cases.extend([
        Case::new("version/http_0_9_simple_request", "GET /\r\n\r\n", Want::Reject),
        Case::new("version/http_0_9_half_closed", "GET /\r\n", Want::Reject).half_closed(),
        Case::new("version/leading_space", " GET / HTTP/1.1\r\nHost: x\r\n\r\n", Want::Reject),
        Case::new("version/double_spaces", "GET  /  HTTP/1.1\r\nHost: x\r\n\r\n", Want::Reject),
        Case::new("version/tabs", "GET\t/\tHTTP/1.1\r\nHost: x\r\n\r\n", Want::Reject),
        Case::new("version/http_1_0", "GET / HTTP/1.0\r\n\r\n", Want::Ok(1)),
        // RFC 9112 §3.2 wants a 400 for these; hyper serves them (noted, not an attack).
        Case::new("version/http_1_1_without_host", "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", Want::Either),
        Case::new(
            "version/http_1_1_two_hosts",
            "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close\r\n\r\n",
            Want::Either,
        ),
    ]);
    // HTTP/2 on a server without --http2.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let settings = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
    cases.extend([
        Case::new("h2/preface", &preface, Want::Reject),
        Case::new("h2/preface_and_settings", [&preface[..], &settings].concat(), Want::Reject),
        Case::new("h2/preface_half", "PRI * HTTP/2.0\r\n\r\n", Want::Reject),
        Case::new("h2/preface_start", "PRI * HTTP/2", Want::Reject),
        Case::new("h2/preface_bad_tail", "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", Want::Reject),
        Case::new("h2/settings_frame_alone", settings, Want::Reject),
    ]);
    // TLS on the cleartext port.
    cases.extend([
        Case::new("tls/client_hello", client_hello(), Want::Reject),
        Case::new("tls/client_hello_half_closed", client_hello(), Want::Reject).half_closed(),
        Case::new("tls/record_header_only", [0x16u8, 0x03, 0x01, 0x02, 0x00], Want::Reject),
        Case::new("tls/one_byte", [0x16u8], Want::Reject),
        Case::new(
            "tls/sslv2_hello",
            [0x80u8, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10, 0x07, 0x00, 0xc0],
            Want::Reject,
        ),
    ]);
    // Noise.
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    cases.extend([
        Case::new("noise/every_byte", all_bytes, Want::Reject),
        Case::new("noise/ff_1k", [0xffu8; 1024], Want::Reject),
        Case::new("noise/nul_1k", [0u8; 1024], Want::Reject),
        Case::new("noise/empty_lines_only", "\r\n\r\n\r\n", Want::Reject),
        Case::new("noise/utf8_method", "ĞET / HTTP/1.1\r\nHost: x\r\n\r\n", Want::Reject),
    ]);
    cases
}

/// HTTP/2 with prior knowledge on a server started with `--http2`: broken frames, a rapid-reset
/// burst, and HTTP/1 on the same port. A connection the client leaves open after its frames
/// is half-closed here: an idle one is never closed (the known bug of
/// `an_idle_http2_connection_does_not_hold_its_worker`).
pub(crate) fn h2_cases() -> Vec<Case> {
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    };
    let settings = frame(4, 0, 0, &[]);
    // GET / with authority "x", from HPACK's static table; END_STREAM | END_HEADERS.
    let request = |stream: u32| frame(1, 5, stream, &[0x82, 0x86, 0x84, 0x41, 0x01, b'x']);
    let rst = |stream: u32| frame(3, 0, stream, &8u32.to_be_bytes());
    let with = |frames: &[Vec<u8>]| [&[preface.clone(), settings.clone()][..], frames].concat().concat();
    let rapid_reset: Vec<Vec<u8>> = (0..200u32).flat_map(|i| [request(2 * i + 1), rst(2 * i + 1)]).collect();
    vec![
        Case::new("h2c/a_request_half_closed", with(&[request(1)]), Want::Closed).half_closed(),
        Case::new("h2c/settings_half_closed", with(&[]), Want::Closed).half_closed(),
        Case::new("h2c/bad_hpack", with(&[frame(1, 5, 1, &[0xff; 5])]), Want::Closed),
        Case::new("h2c/data_on_stream_0", with(&[frame(0, 1, 0, b"hello")]), Want::Closed),
        Case::new("h2c/headers_on_stream_0", with(&[frame(1, 5, 0, &[0x82])]), Want::Closed),
        Case::new("h2c/even_stream", with(&[request(2)]), Want::Closed),
        Case::new("h2c/oversized_frame", with(&[vec![0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1]]), Want::Closed),
        Case::new("h2c/zero_window_update", with(&[frame(8, 0, 0, &[0; 4])]), Want::Closed),
        Case::new("h2c/settings_bad_length", with(&[frame(4, 0, 0, &[0; 5])]), Want::Closed),
        Case::new("h2c/unknown_frame_type", with(&[frame(0xfe, 0, 1, b"?"), request(1)]), Want::Closed).half_closed(),
        Case::new("h2c/continuation_without_headers", with(&[frame(9, 4, 1, &[0x82])]), Want::Closed),
        Case::new("h2c/rapid_reset_200", with(&rapid_reset), Want::Closed),
        Case::new("h2c/preface_bad_tail", "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", Want::Closed),
        Case::new("h2c/preface_only_half_closed", preface.clone(), Want::Closed).half_closed(),
        Case::new("h2c/http1_still_served", get("/"), Want::Ok(1)),
        Case::new("h2c/http1_with_nul", "GET /\0 HTTP/1.1\r\nHost: x\r\n\r\n", Want::Reject),
    ]
}

/// A TLS 1.2 ClientHello record with a server name, as a browser's would start.
pub(crate) fn client_hello() -> Vec<u8> {
    let server_name = b"localhost";
    let mut sni = vec![0x00, 0x00]; // extension type: server_name
    let list_len = server_name.len() + 3;
    sni.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
    sni.extend_from_slice(&(list_len as u16).to_be_bytes());
    sni.push(0); // host_name
    sni.extend_from_slice(&(server_name.len() as u16).to_be_bytes());
    sni.extend_from_slice(server_name);
    let mut hello = vec![0x03, 0x03];
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // session id
    hello.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2f, 0x13, 0x01]); // cipher suites
    hello.extend_from_slice(&[0x01, 0x00]); // compression: null
    hello.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    hello.extend_from_slice(&sni);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&(hello.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Absolute-form, asterisk-form and authority-form targets, and odd methods.
pub(crate) fn target_cases() -> Vec<Case> {
    let request =
        |method: &str, target: &str| format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    vec![
        Case::new("target/absolute_form", request("GET", "http://x/"), Want::Ok(1)),
        Case::new("target/absolute_form_other_host", request("GET", "https://evil.example/"), Want::Ok(1)),
        Case::new("target/absolute_form_no_path", request("GET", "http://x"), Want::Either),
        Case::new("target/absolute_form_userinfo", request("GET", "http://user:pw@x/"), Want::Either),
        Case::new("target/absolute_form_bad_port", request("GET", "http://x:99999/"), Want::Either),
        Case::new("target/absolute_form_missing_path", request("GET", "http://x/nothing-here"), Want::Status(404)),
        Case::new("target/scheme_only", request("GET", "http:"), Want::Reject),
        Case::new("target/asterisk_get", request("GET", "*"), Want::Reject),
        Case::new("target/asterisk_options", request("OPTIONS", "*"), Want::Reject),
        Case::new("target/connect_authority", request("CONNECT", "x:443"), Want::Reject),
        Case::new("target/connect_loopback_ssh", request("CONNECT", "127.0.0.1:22"), Want::Reject),
        // Served by `/` (hyper takes a 2xx to CONNECT as the tunnel, then closes it).
        Case::new("target/connect_path", request("CONNECT", "/"), Want::Either),
        Case::new(
            "target/connect_path_then_smuggled",
            format!("CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n{SMUGGLED}"),
            Want::Smuggle { good: 0 },
        ),
        Case::new("target/authority_form_get", request("GET", "x:443"), Want::Reject),
        Case::new("target/double_slash", request("GET", "//x/"), Want::Reject),
        Case::new("target/dot_segments", request("GET", "/../../etc/passwd"), Want::Reject),
        Case::new("target/relative", request("GET", "../"), Want::Reject),
        Case::new("target/percent_nul", request("GET", "/%00"), Want::Reject),
        Case::new("target/bad_percent", request("GET", "/%zz"), Want::Reject),
        Case::new("target/fragment", request("GET", "/#x"), Want::Either),
        Case::new("target/query_only", request("GET", "?x"), Want::Reject),
        Case::new("target/empty", "GET  HTTP/1.1\r\nHost: x\r\n\r\n", Want::Reject),
        Case::new("target/backslash", request("GET", "/\\"), Want::Reject),
        Case::new("target/empty_query", request("GET", "/?"), Want::Ok(1)),
        Case::new("method/head", request("HEAD", "/"), Want::Ok(1)),
        Case::new("method/lower_case", request("get", "/"), Want::Either),
        Case::new("method/unknown", request("FOO", "/"), Want::Either),
        Case::new("method/trace", request("TRACE", "/"), Want::Either),
        Case::new("method/bad_token", request("GE(T", "/"), Want::Reject),
    ]
}

/// `Expect` and `Upgrade` variants.
pub(crate) fn expect_and_upgrade_cases() -> Vec<Case> {
    let ws = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13";
    let h2c = "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA";
    let upgrade_get = |headers: &str| format!("GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n\r\n");
    let preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    vec![
        Case::new(
            "expect/100_continue_with_body",
            post(&["Expect: 100-continue", "Content-Length: 5", "Connection: close"], b"hello"),
            Want::Ok(1),
        ),
        Case::new(
            "expect/100_continue_no_body",
            post(&["Expect: 100-continue", "Content-Length: 5"], b""),
            Want::Reject,
        ),
        Case::new(
            "expect/100_continue_no_body_half_closed",
            post(&["Expect: 100-continue", "Content-Length: 5"], b""),
            Want::Reject,
        )
        .half_closed(),
        Case::new(
            "expect/100_continue_mixed_case",
            post(&["Expect: 100-Continue", "Content-Length: 5", "Connection: close"], b"hello"),
            Want::Ok(1),
        ),
        Case::new(
            "expect/100_continue_chunked",
            post(
                &["Expect: 100-continue", "Transfer-Encoding: chunked", "Connection: close"],
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
            Want::Ok(1),
        ),
        // 413 at once, without the `100 Continue` that would invite the upload.
        Case::new(
            "expect/100_continue_over_limit",
            post(&["Expect: 100-continue", "Content-Length: 20000000"], b""),
            Want::Status(413),
        ),
        Case::new(
            "expect/100_continue_get",
            "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            Want::Ok(1),
        ),
        // Unknown expectations: RFC 9110 §10.1.1 allows a 417, or serving the request.
        Case::new(
            "expect/unknown",
            post(&["Expect: foo", "Content-Length: 5", "Connection: close"], b"hello"),
            Want::Either,
        ),
        Case::new(
            "expect/100_continue_and_unknown",
            post(&["Expect: 100-continue, foo", "Content-Length: 5", "Connection: close"], b"hello"),
            Want::Either,
        ),
        Case::new("expect/empty", post(&["Expect:", "Content-Length: 5", "Connection: close"], b"hello"), Want::Either),
        Case::new(
            "expect/http_1_0",
            "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
            Want::Either,
        ),
        Case::new(
            "expect/100_continue_then_smuggled",
            post(
                &["Expect: 100-continue", "Content-Length: 5", "Connection: close"],
                format!("hello{SMUGGLED}").as_bytes(),
            ),
            Want::Smuggle { good: 1 },
        ),
        // Upgrades: none is supported, so the request is served as plain HTTP/1.1 (or refused).
        Case::new("upgrade/h2c", upgrade_get(h2c), Want::Either),
        Case::new("upgrade/h2c_post", post(&[h2c, "Content-Length: 5"], b"hello"), Want::Either),
        Case::new("upgrade/h2c_then_preface", format!("{}{preface}", upgrade_get(h2c)), Want::OkThenReject(1)),
        Case::new("upgrade/websocket", upgrade_get(ws), Want::Either),
        Case::new(
            "upgrade/websocket_then_frame",
            [upgrade_get(ws).as_bytes(), &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]].concat(),
            Want::OkThenReject(1),
        ),
        Case::new("upgrade/websocket_http_1_0", format!("GET / HTTP/1.0\r\n{ws}\r\n\r\n"), Want::Either),
        Case::new("upgrade/connection_upgrade_only", upgrade_get("Connection: Upgrade"), Want::Either),
        Case::new("upgrade/nul_protocol", upgrade_get("Upgrade: h\0c\r\nConnection: Upgrade"), Want::Reject),
        Case::new(
            "upgrade/connect_with_upgrade",
            "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            Want::Reject,
        ),
        Case::new(
            "upgrade/websocket_then_smuggled",
            format!("{}{SMUGGLED}", upgrade_get(&format!("{ws}\r\nContent-Length: {}", SMUGGLED.len()))),
            Want::Smuggle { good: 0 },
        ),
    ]
}

/// Long pipelines, pipelines with a bad or ambiguous request in the middle, and half-closed
/// and unfinished requests.
pub(crate) fn pipeline_and_half_closed_cases() -> Vec<Case> {
    let keep = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let pipeline = |n: usize| format!("{}{}", keep.repeat(n - 1), get("/"));
    let ambiguous = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}",
        5 + SMUGGLED.len()
    );
    let differing_lengths = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    let posts: String =
        (0..100).map(|_| "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").collect::<String>();
    // Sent in 3-byte writes.
    let trickled: Vec<Step> = pipeline(20).as_bytes().chunks(3).map(|c| Step::Send(c.to_vec())).collect();
    vec![
        Case::new("pipeline/1000_gets", pipeline(1000), Want::Ok(1000)),
        Case::new("pipeline/5000_gets_past_the_parking_cap", pipeline(5000), Want::Ok(5000)),
        Case::new("pipeline/100_posts", format!("{posts}{}", get("/")), Want::Ok(101)),
        Case::new("pipeline/trickled_in_3_byte_writes", "", Want::Ok(20)).with_steps(trickled),
        Case::new(
            "pipeline/nul_request_in_the_middle",
            format!("{}GET /\0 HTTP/1.1\r\nHost: x\r\n\r\n{}", keep.repeat(50), pipeline(50)),
            Want::OkThenReject(50),
        ),
        Case::new(
            "pipeline/http_0_9_in_the_middle",
            format!("{}GET /\r\n\r\n{}", keep.repeat(10), pipeline(10)),
            Want::OkThenReject(10),
        ),
        Case::new(
            "pipeline/cl_te_smuggle_in_the_middle",
            format!("{}{ambiguous}{}", keep.repeat(10), pipeline(10)),
            Want::Smuggle { good: 10 },
        ),
        Case::new(
            "pipeline/differing_lengths_in_the_middle",
            format!("{}{differing_lengths}{}", keep.repeat(10), pipeline(10)),
            Want::Smuggle { good: 10 },
        ),
        Case::new("pipeline/after_connection_close", format!("{}{}", get("/"), pipeline(10)), Want::Ok(1)),
        Case::new("pipeline/http_1_0_without_keep_alive", "GET / HTTP/1.0\r\n\r\n".repeat(3), Want::Ok(1)),
        // Half-closed: the client shuts its write side after its request.
        Case::new("half_closed/complete_get", keep, Want::Either).half_closed(),
        Case::new("half_closed/complete_post", post(&["Content-Length: 5"], b"hello"), Want::Either).half_closed(),
        Case::new("half_closed/three_pipelined", keep.repeat(3), Want::Ok(3)).half_closed(),
        Case::new("half_closed/async_handler", "GET /sleep/50 HTTP/1.1\r\nHost: x\r\n\r\n", Want::Either).half_closed(),
        Case::new("half_closed/nothing", "", Want::Reject).half_closed(),
        Case::new("half_closed/partial_request_line", "GET / HT", Want::Reject).half_closed(),
        Case::new("half_closed/partial_head", "GET / HTTP/1.1\r\nHost: x\r\n", Want::Reject).half_closed(),
        Case::new("half_closed/partial_body", post(&["Content-Length: 10"], b"hello"), Want::Reject).half_closed(),
        Case::new("half_closed/empty_line", "\r\n", Want::Reject).half_closed(),
        // Unfinished, the client still there: 408 at the header timeout (or the body's rate).
        Case::new("unfinished/one_byte", "G", Want::Status(408)),
        Case::new("unfinished/request_line", "GET / HTTP/1.1\r\n", Want::Status(408)),
        Case::new("unfinished/head", "GET / HTTP/1.1\r\nHost: x\r\nX-A: b", Want::Status(408)),
        Case::new("unfinished/body", post(&["Content-Length: 10"], b"hello"), Want::Status(408)),
        Case::new("unfinished/large_body", post(&["Content-Length: 1000000"], b"hello"), Want::Reject),
    ]
}

impl Case {
    fn with_steps(mut self, steps: Vec<Step>) -> Case {
        self.steps = steps;
        self
    }
}

/// The built-in routes' own parameters: status page queries, `/sleep/`, `/block/`, `/leak/`.
pub(crate) fn route_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for query in [
        "json&auto",
        "auto&json",
        "json=1&json=2",
        "openmetrics&text",
        "text",
        "auto",
        "openmetrics",
        "refresh=-1",
        "refresh=0",
        "refresh=",
        "refresh",
        "refresh=abc",
        "refresh=1e9",
        "refresh=4294967296",
        "refresh=99999999999999999999999999999999",
        "&&&&",
        "=",
        "%00",
        "json%00",
    ] {
        cases.push(Case::new(format!("status/?{query}"), get(&format!("/server-status?{query}")), Want::Ok(1)));
    }
    cases.extend([
        Case::new("status/long_query", get(&format!("/server-status?{}", "a".repeat(8000))), Want::Ok(1)),
        Case::new("status/many_params", get(&format!("/server-status?{}", "refresh=1&".repeat(700))), Want::Ok(1)),
        Case::new("status/trailing_slash", get("/server-status/"), Want::Status(404)),
        Case::new("status/upper_case", get("/SERVER-STATUS"), Want::Status(404)),
        Case::new("status/encoded_query", get("/server-status%3Fjson"), Want::Status(404)),
        Case::new(
            "status/openmetrics_accept_garbage",
            "GET /server-status HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;\0\r\nConnection: close\r\n\r\n",
            Want::Reject,
        ),
        Case::new(
            "status/post_with_body",
            "POST /server-status?json HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            Want::Ok(1),
        ),
    ]);
    let bad = [
        ("negative", "-1"),
        ("non_numeric", "abc"),
        ("empty", ""),
        ("u64_max", "18446744073709551615"),
        ("u64_overflow", "18446744073709551616"),
        ("huge", "99999999999999999999999999999999"),
        ("fraction", "1.5"),
        ("hex", "0x10"),
        ("encoded_digit", "%31"),
        ("trailing_path", "1/2"),
        ("exponent", "1e3"),
        ("space_encoded", "%201"),
    ];
    for route in ["sleep", "block", "leak"] {
        for (name, value) in bad {
            cases.push(Case::new(format!("{route}/{name}"), get(&format!("/{route}/{value}")), Want::Status(400)));
        }
        cases.push(Case::new(format!("{route}/zero"), get(&format!("/{route}/0")), Want::Ok(1)));
        cases.push(Case::new(format!("{route}/plus_zero"), get(&format!("/{route}/+0")), Want::Ok(1)));
        cases.push(Case::new(
            format!("{route}/leading_zeros"),
            get(&format!("/{route}/0000000000000000000000000")),
            Want::Ok(1),
        ));
        cases.push(Case::new(format!("{route}/zero_with_query"), get(&format!("/{route}/0?x=1")), Want::Ok(1)));
        cases.push(Case::new(format!("{route}/no_slash"), get(&format!("/{route}")), Want::Status(404)));
    }
    cases.extend([
        Case::new("sleep/over_limit", get("/sleep/60001"), Want::Status(400)),
        Case::new("block/over_limit", get("/block/60001"), Want::Status(400)),
        Case::new("leak/over_limit", get("/leak/513"), Want::Status(400)),
    ]);
    cases
}
