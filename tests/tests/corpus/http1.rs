//! The corpus's HTTP/1 framing families: request smuggling, chunked bodies, control bytes,
//! overlong parts.

use super::*;

/// `POST /` with these header lines and this body.
pub(crate) fn post(headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut request = b"POST / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for header in headers {
        request.extend_from_slice(header.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    request
}

pub(crate) fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

/// Content-Length / Transfer-Encoding conflicts, duplicate and malformed lengths, odd
/// Transfer-Encoding values and header names, obs-fold.
pub(crate) fn smuggling_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    // CL.TE: the whole rest is the body by Content-Length, but chunked ends at once, leaving
    // the hidden request. TE.CL: the hidden request is a chunk's data, but Content-Length
    // ends the body before it.
    let cl_te_body = format!("0\r\n\r\n{SMUGGLED}");
    let chunk = format!("{:x}\r\n", SMUGGLED.len());
    let te_cl_body = format!("{chunk}{SMUGGLED}\r\n0\r\n\r\n");
    let te_values: &[(&str, &str)] = &[
        ("chunked", "chunked"),
        ("Chunked", "Chunked"),
        ("CHUNKED", "CHUNKED"),
        ("chunked_identity", "chunked, identity"),
        ("identity_chunked", "identity, chunked"),
        ("gzip_chunked", "gzip, chunked"),
        ("chunked_gzip", "chunked, gzip"),
        ("chunked_chunked", "chunked, chunked"),
        ("xchunked", "xchunked"),
        ("chunkedx", "chunkedx"),
        ("chunk", "chunk"),
        ("quoted", "\"chunked\""),
        ("chunked_semicolon", "chunked;"),
        ("identity", "identity"),
        ("empty", ""),
        ("comma_chunked", ",chunked"),
        ("chunked_comma", "chunked,"),
        ("chunked_tab", "chunked\t"),
        ("chunked_vtab", "chunked\x0b"),
        ("chunked_nul", "chunked\0"),
    ];
    for (name, value) in te_values {
        for (layout, cl, body) in
            [("cl_te", cl_te_body.len(), cl_te_body.as_str()), ("te_cl", chunk.len(), te_cl_body.as_str())]
        {
            let te = format!("Transfer-Encoding: {value}");
            let cl = format!("Content-Length: {cl}");
            cases.push(Case::new(
                format!("smuggle/{layout}/te_{name}/cl_first"),
                post(&[&cl, &te], body.as_bytes()),
                Want::Smuggle { good: 0 },
            ));
            cases.push(Case::new(
                format!("smuggle/{layout}/te_{name}/te_first"),
                post(&[&te, &cl], body.as_bytes()),
                Want::Smuggle { good: 0 },
            ));
        }
    }
    // Header names and repeats that a front end might read differently.
    let cl = format!("Content-Length: {}", cl_te_body.len());
    let te_headers: &[(&str, &[&str])] = &[
        ("space_before_colon", &["Transfer-Encoding : chunked"]),
        ("tab_before_colon", &["Transfer-Encoding\t: chunked"]),
        ("lower_case_name", &["transfer-encoding: chunked"]),
        ("underscore_name", &["Transfer_Encoding: chunked"]),
        ("no_space_after_colon", &["Transfer-Encoding:chunked"]),
        ("obs_fold_value", &["Transfer-Encoding:", " chunked"]),
        ("leading_space_line", &[" Transfer-Encoding: chunked"]),
        ("two_headers_chunked_identity", &["Transfer-Encoding: chunked", "Transfer-Encoding: identity"]),
        ("two_headers_identity_chunked", &["Transfer-Encoding: identity", "Transfer-Encoding: chunked"]),
        ("two_headers_chunked_chunked", &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"]),
        ("bare_lf_before", &["X-A: b\nTransfer-Encoding: chunked"]),
        ("bare_cr_before", &["X-A: b\rTransfer-Encoding: chunked"]),
    ];
    for (name, lines) in te_headers {
        let mut headers = vec![cl.as_str()];
        headers.extend_from_slice(lines);
        cases.push(Case::new(
            format!("smuggle/te_header/{name}"),
            post(&headers, cl_te_body.as_bytes()),
            Want::Smuggle { good: 0 },
        ));
    }
    cases.push(Case::new(
        "smuggle/te_on_http10",
        format!("POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{cl}\r\n\r\n{cl_te_body}"),
        Want::Reject,
    ));
    // Lengths: the body is exactly the hidden request, so any reading of the length short of
    // all of it would serve the hidden request.
    let n = SMUGGLED.len();
    let lengths: &[(&str, Vec<String>)] = &[
        ("zero_then_n", vec!["0".into(), n.to_string()]),
        ("n_then_zero", vec![n.to_string(), "0".into()]),
        ("list_zero_n", vec![format!("0, {n}")]),
        ("list_n_zero", vec![format!("{n}, 0")]),
        ("list_n_n", vec![format!("{n}, {n}")]),
        ("repeat_n_n", vec![n.to_string(), n.to_string()]),
        ("plus", vec![format!("+{n}")]),
        ("minus", vec![format!("-{n}")]),
        ("decimal_point", vec![format!("{n}.0")]),
        ("hex", vec![format!("0x{n:x}")]),
        ("two_numbers", vec![format!("{n} {n}")]),
        ("leading_zeros", vec![format!("000{n}")]),
        ("empty", vec![String::new()]),
        ("exponent", vec!["3.1e1".into()]),
        ("nul_after", vec![format!("{n}\0")]),
        ("u64_max", vec![u64::MAX.to_string()]),
        ("u64_overflow", vec!["18446744073709551616".into()]),
        ("huge", vec!["9".repeat(40)]),
        ("trailing_comma", vec![format!("{n},")]),
        ("leading_comma", vec![format!(",{n}")]),
    ];
    for (name, values) in lengths {
        let lines: Vec<String> = values.iter().map(|v| format!("Content-Length: {v}")).collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        cases.push(Case::new(
            format!("smuggle/content_length/{name}"),
            post(&lines, SMUGGLED.as_bytes()),
            Want::Smuggle { good: 0 },
        ));
    }
    for (name, lines) in [
        ("space_before_colon", vec![format!("Content-Length : {n}")]),
        ("obs_fold", vec!["Content-Length: 0".into(), format!(" {n}")]),
        ("obs_fold_tab", vec!["Content-Length:".into(), format!("\t{n}")]),
    ] {
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        cases.push(Case::new(
            format!("smuggle/content_length/{name}"),
            post(&lines, SMUGGLED.as_bytes()),
            Want::Smuggle { good: 0 },
        ));
    }
    // Not a length at all: the body is empty, and what follows is a pipelined request.
    cases.push(Case::new(
        "smuggle/content_length/underscore_name_is_not_a_length",
        post(&[&format!("Content_Length: {}", get("/").len())], get("/").as_bytes()),
        Want::Ok(2),
    ));
    // obs-fold elsewhere: a continuation line is refused (RFC 9112 §5.2 allows a 400).
    for (name, head) in [
        ("host_space", "GET / HTTP/1.1\r\nHost: x\r\n y\r\n\r\n"),
        ("host_tab", "GET / HTTP/1.1\r\nHost: x\r\n\ty\r\n\r\n"),
        ("first_line", "GET / HTTP/1.1\r\n X-A: b\r\nHost: x\r\n\r\n"),
        ("after_empty_value", "GET / HTTP/1.1\r\nHost: x\r\nX-A:\r\n b\r\n\r\n"),
        ("folded_request_line", "GET /\r\n HTTP/1.1\r\nHost: x\r\n\r\n"),
    ] {
        cases.push(Case::new(format!("obs_fold/{name}"), head, Want::Reject));
    }
    cases.extend(chunked_cases());
    cases
}

/// Chunked bodies with bad sizes, extensions, data and trailers; the hidden request follows
/// each (and `Connection: close` makes anything after the first request off limits).
fn chunked_cases() -> Vec<Case> {
    let long_extension = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(20_000));
    let many_trailers = format!("0\r\n{}\r\n", "X-T: y\r\n".repeat(2_000));
    let bodies: &[(&str, &str, Want)] = &[
        ("valid", "5\r\nhello\r\n0\r\n\r\n", Want::Smuggle { good: 1 }),
        ("valid_extension", "5;a=b\r\nhello\r\n0\r\n\r\n", Want::Smuggle { good: 1 }),
        ("valid_trailer", "5\r\nhello\r\n0\r\nX-T: y\r\n\r\n", Want::Smuggle { good: 1 }),
        ("negative", "-1\r\nhello\r\n0\r\n\r\n", Want::Reject),
        ("hex_prefix", "0x5\r\nhello\r\n0\r\n\r\n", Want::Reject),
        ("not_hex", "g\r\nhello\r\n0\r\n\r\n", Want::Reject),
        ("overflow", "fffffffffffffffff\r\nhello\r\n0\r\n\r\n", Want::Reject),
        ("u64_max", "ffffffffffffffff\r\nhello\r\n0\r\n\r\n", Want::Reject),
        ("leading_zeros", "0000000000000000000000000005\r\nhello\r\n0\r\n\r\n", Want::Smuggle { good: 0 }),
        ("leading_space", " 5\r\nhello\r\n0\r\n\r\n", Want::Smuggle { good: 0 }),
        ("trailing_space", "5 \r\nhello\r\n0\r\n\r\n", Want::Smuggle { good: 0 }),
        ("empty_size", "\r\nhello\r\n0\r\n\r\n", Want::Reject),
        ("empty_extension", "5;\r\nhello\r\n0\r\n\r\n", Want::Smuggle { good: 0 }),
        ("unterminated_quote_extension", "5;a=\"b\r\nhello\r\n0\r\n\r\n", Want::Smuggle { good: 0 }),
        ("nul_in_extension", "5;a\0b\r\nhello\r\n0\r\n\r\n", Want::Smuggle { good: 0 }),
        ("long_extension", &long_extension, Want::Smuggle { good: 0 }),
        ("data_too_long", "5\r\nhelloXX\r\n0\r\n\r\n", Want::Reject),
        ("data_too_short", "5\r\nhell\r\n0\r\n\r\n", Want::Reject),
        ("bare_lf", "5\nhello\n0\n\n", Want::Smuggle { good: 0 }),
        ("bare_cr", "5\rhello\r0\r\r", Want::Reject),
        ("nul_in_trailer", "0\r\nX-T: a\0b\r\n\r\n", Want::Smuggle { good: 0 }),
        ("content_length_trailer", "0\r\nContent-Length: 99\r\n\r\n", Want::Smuggle { good: 0 }),
        ("many_trailers", &many_trailers, Want::Smuggle { good: 0 }),
        ("missing_last_chunk", "5\r\nhello\r\n\r\n", Want::Reject),
    ];
    let mut cases = Vec::new();
    for (name, body, want) in bodies {
        let body = format!("{body}{SMUGGLED}");
        cases.push(Case::new(
            format!("chunked/{name}"),
            post(&["Transfer-Encoding: chunked", "Connection: close"], body.as_bytes()),
            *want,
        ));
    }
    // Keep-alive: a valid chunked body and a pipelined request after it are both answered.
    let valid_then_next = format!("5\r\nhello\r\n0\r\n\r\n{}", get("/"));
    cases.push(Case::new(
        "chunked/valid_then_pipelined",
        post(&["Transfer-Encoding: chunked"], valid_then_next.as_bytes()),
        Want::Ok(2),
    ));
    // Unfinished: the body's minimum rate (or the client's half-close) ends it.
    cases.push(Case::new("chunked/unfinished", post(&["Transfer-Encoding: chunked"], b"5\r\nhello\r\n"), Want::Reject));
    cases.push(
        Case::new("chunked/unfinished_half_closed", post(&["Transfer-Encoding: chunked"], b"5\r\nhel"), Want::Reject)
            .half_closed(),
    );
    cases
}

/// NUL and control bytes in each part of a request.
pub(crate) fn control_byte_cases() -> Vec<Case> {
    let bytes: &[(&str, u8)] = &[
        ("nul", 0x00),
        ("soh", 0x01),
        ("backspace", 0x08),
        ("lf", 0x0a),
        ("vtab", 0x0b),
        ("formfeed", 0x0c),
        ("cr", 0x0d),
        ("escape", 0x1b),
        ("del", 0x7f),
        ("x80", 0x80),
        ("xff", 0xff),
    ];
    let mut cases = Vec::new();
    for &(byte_name, byte) in bytes {
        let b = [byte];
        let with = |before: &[u8], after: &[u8]| [before, &b[..], after].concat();
        let parts: [(&str, Vec<u8>, Want); 8] = [
            ("method", with(b"G", b"ET / HTTP/1.1\r\nHost: x\r\n\r\n"), Want::Reject),
            ("target", with(b"GET /", b"x HTTP/1.1\r\nHost: x\r\n\r\n"), Want::Reject),
            ("version", with(b"GET / HTTP/1.", b"1\r\nHost: x\r\n\r\n"), Want::Reject),
            ("header_name", with(b"GET / HTTP/1.1\r\nHost: x\r\nX-", b"A: b\r\n\r\n"), Want::Reject),
            (
                "header_value",
                with(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a", b"b\r\nConnection: close\r\n\r\n"),
                // obs-text (0x80-0xff) is allowed in a field value (RFC 9110 §5.5).
                if byte >= 0x80 { Want::Ok(1) } else { Want::Reject },
            ),
            // A bare LF may end a line (RFC 9112 §2.2): here it ends the head, and the CRLFs
            // after it are the start of a next request, timed out.
            (
                "header_line",
                with(b"GET / HTTP/1.1\r\nHost: x\r\n", b"\r\n\r\n"),
                if byte == b'\n' { Want::OkThenReject(1) } else { Want::Reject },
            ),
            // An empty line before the request line is skipped (RFC 9112 §2.2).
            (
                "before_request_line",
                with(b"", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
                if byte == b'\n' { Want::Ok(1) } else { Want::Reject },
            ),
            (
                "body",
                with(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\na", b"b"),
                Want::Ok(1),
            ),
        ];
        for (part, request, want) in parts {
            cases.push(Case::new(format!("control/{part}/{byte_name}"), request, want));
        }
    }
    cases
}

/// Request lines, header names and values, and heads past 8190 bytes and 64 KiB.
pub(crate) fn overlong_cases() -> Vec<Case> {
    // "GET " + target + " HTTP/1.1" is 13 bytes besides the target.
    let line = |len: usize| format!("GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "a".repeat(len - 14));
    let header =
        |name: &str, value: &str| format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{name}: {value}\r\n\r\n");
    let headers = |n: usize, value_len: usize| {
        let value = "v".repeat(value_len);
        let lines: String = (0..n).map(|i| format!("X-{i}: {value}\r\n")).collect();
        format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{lines}\r\n")
    };
    let mut cases = vec![
        // The request line limit (8190 by default) and hyper's own URI and head limits.
        Case::new("overlong/request_line_8190", line(8190), Want::Status(404)),
        Case::new("overlong/request_line_8191", line(8191), Want::Status(414)),
        Case::new("overlong/request_line_8192", line(8192), Want::Status(414)),
        Case::new("overlong/request_line_9000", line(9000), Want::Status(414)),
        Case::new("overlong/request_line_65536", line(65536), Want::Reject),
        Case::new("overlong/request_line_70000", line(70_000), Want::Reject),
        Case::new("overlong/request_line_200000", line(200_000), Want::Reject),
        Case::new("overlong/method_9000", format!("{} / HTTP/1.1\r\nHost: x\r\n\r\n", "A".repeat(9000)), Want::Reject),
        Case::new(
            "overlong/version_9000",
            format!("GET / HTTP/1.{}\r\nHost: x\r\n\r\n", "1".repeat(9000)),
            Want::Reject,
        ),
        Case::new("overlong/unterminated_line_200000", format!("GET /{}", "a".repeat(200_000)), Want::Reject),
        // Header names and values: only the whole head is limited (64 KiB by default).
        Case::new("overlong/header_name_8191", header(&"N".repeat(8191), "v"), Want::Ok(1)),
        Case::new("overlong/header_name_70000", header(&"N".repeat(70_000), "v"), Want::Reject),
        Case::new("overlong/header_value_8191", header("X-A", &"v".repeat(8191)), Want::Ok(1)),
        Case::new("overlong/header_value_65536", header("X-A", &"v".repeat(65_536)), Want::Reject),
        Case::new("overlong/header_value_200000", header("X-A", &"v".repeat(200_000)), Want::Reject),
        Case::new(
            "overlong/unterminated_header_200000",
            format!("GET / HTTP/1.1\r\nHost: x\r\nX-A: {}", "v".repeat(200_000)),
            Want::Reject,
        ),
        Case::new("overlong/head_60000", headers(50, 1200), Want::Ok(1)),
        Case::new("overlong/head_72000", headers(60, 1200), Want::Status(431)),
        // The header count (100 by default, Host and Connection included).
        Case::new("overlong/headers_100", headers(98, 1), Want::Ok(1)),
        Case::new("overlong/headers_101", headers(99, 1), Want::Status(431)),
        Case::new("overlong/headers_1000", headers(1000, 1), Want::Status(431)),
        Case::new("overlong/headers_10000_empty", headers(10_000, 0), Want::Reject),
        Case::new(
            "overlong/leading_empty_lines_70000",
            format!("{}GET / HTTP/1.1\r\nHost: x\r\n\r\n", "\r\n".repeat(35_000)),
            Want::Reject,
        ),
        // A body declared over the limit: 413 from its length alone, nothing read.
        Case::new("overlong/body_over_limit", post(&["Content-Length: 20000000"], b""), Want::Status(413)),
    ];
    cases.push(Case::new("overlong/leading_empty_line", format!("\r\n{}", get("/")), Want::Ok(1)));
    cases
}
