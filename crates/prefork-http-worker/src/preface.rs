//! Telling HTTP/2 prior knowledge from HTTP/1.1 on a cleartext connection by its first bytes.
//! The bytes read are handed back, for the connection to read them again (see
//! [`crate::io::ObservedIo`]).

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// The connection preface every HTTP/2 client sends first (RFC 9113, 3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads as much more of the start of the connection (after the `received` bytes) as it takes
/// to decide whether it opens with the HTTP/2 preface (bounded by `timeout`); returns the
/// decision and every byte received.
pub(crate) async fn sniff_h2_preface(
    io: &mut (impl AsyncRead + Unpin),
    received: Bytes,
    timeout: Duration,
) -> (bool, Bytes) {
    if received.len() >= H2_PREFACE.len() || !H2_PREFACE.starts_with(&received) {
        return (received.starts_with(H2_PREFACE), received);
    }
    let mut seen = received.to_vec();
    let read = tokio::time::timeout(timeout, async {
        let mut byte = [0u8; 64];
        while seen.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&seen) {
            let want = H2_PREFACE.len() - seen.len();
            match io.read(&mut byte[..want]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&byte[..n]),
            }
        }
    });
    let _ = read.await;
    (seen == H2_PREFACE, Bytes::from(seen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    /// Sniffs `sent`, then reads the whole connection through [`crate::io::ObservedIo`]'s
    /// prefix the way the server does.
    fn sniff(sent: &'static [u8]) -> (bool, Vec<u8>) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (mut client, mut server) = tokio::io::duplex(256);
            client.write_all(sent).await.unwrap();
            drop(client);
            let (is_h2, prefix) = sniff_h2_preface(&mut server, Bytes::new(), Duration::from_secs(1)).await;
            let mut all = prefix.to_vec();
            server.read_to_end(&mut all).await.unwrap();
            (is_h2, all)
        })
    }

    #[test]
    fn the_preface_is_recognised_and_nothing_read_is_lost() {
        let mut sent = H2_PREFACE.to_vec();
        sent.extend_from_slice(b"frames");
        let (is_h2, all) = sniff(Box::leak(sent.into_boxed_slice()));
        assert!(is_h2);
        assert_eq!(&all[..H2_PREFACE.len()], H2_PREFACE);
        assert_eq!(&all[H2_PREFACE.len()..], b"frames");
    }

    #[test]
    fn http1_is_told_apart_at_the_first_differing_byte() {
        let (is_h2, all) = sniff(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(!is_h2);
        assert_eq!(all, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }

    #[test]
    fn bytes_already_received_decide_without_reading_more() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            // Nothing more will come: a read would wait for the whole timeout.
            let (_client, mut server) = tokio::io::duplex(64);
            let http1 = Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(sniff_h2_preface(&mut server, http1.clone(), Duration::from_secs(60)).await, (false, http1));
            let h2 = Bytes::from_static(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nframes");
            assert_eq!(sniff_h2_preface(&mut server, h2.clone(), Duration::from_secs(60)).await, (true, h2));
        });
    }

    #[test]
    fn a_short_request_is_not_mistaken_and_not_lost() {
        let (is_h2, all) = sniff(b"PRI");
        assert!(!is_h2);
        assert_eq!(all, b"PRI");
    }
}
