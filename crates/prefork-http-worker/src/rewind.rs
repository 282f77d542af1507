//! A stream with a few bytes already read from it put back in front: reading the start of a
//! cleartext connection to tell HTTP/2 prior knowledge from HTTP/1.1 must not lose them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

/// The connection preface every HTTP/2 client sends first (RFC 9113, 3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `inner`, with `prefix` read first.
#[derive(Debug)]
pub(crate) struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    /// Nothing put back.
    pub(crate) fn new(inner: T) -> Rewind<T> {
        Rewind { prefix: Bytes::new(), inner }
    }
}

impl<T: AsyncRead + Unpin> Rewind<T> {
    /// Reads as much of the start of the connection as it takes to decide whether it opens with
    /// the HTTP/2 preface (bounded by `timeout`), and puts it back.
    pub(crate) async fn sniff_h2_preface(mut self, timeout: Duration) -> (bool, Rewind<T>) {
        let mut seen = Vec::with_capacity(H2_PREFACE.len());
        let read = tokio::time::timeout(timeout, async {
            let mut byte = [0u8; 64];
            while seen.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&seen) {
                let want = H2_PREFACE.len() - seen.len();
                match self.inner.read(&mut byte[..want]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&byte[..n]),
                }
            }
        });
        let _ = read.await;
        let is_h2 = seen == H2_PREFACE;
        self.prefix = Bytes::from(seen);
        (is_h2, self)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    fn sniff(sent: &'static [u8]) -> (bool, Vec<u8>) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (mut client, server) = tokio::io::duplex(256);
            client.write_all(sent).await.unwrap();
            drop(client);
            let (is_h2, mut rewound) = Rewind::new(server).sniff_h2_preface(Duration::from_secs(1)).await;
            let mut all = Vec::new();
            rewound.read_to_end(&mut all).await.unwrap();
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
    fn a_short_request_is_not_mistaken_and_not_lost() {
        let (is_h2, all) = sniff(b"PRI");
        assert!(!is_h2);
        assert_eq!(all, b"PRI");
    }
}
