//! A slot's current request (line, client, protocol, virtual host, start time), published under
//! a sequence lock: a reader never sees a torn record, and the writer never waits.
//!
//! The owner makes the counter odd, stores the words, and makes it even again. A reader copies
//! the words between two reads of the counter and keeps the copy only if the counter was even
//! and unchanged. Everything is an atomic (relaxed loads and stores fenced by the counter), so
//! the copy is defined behaviour even while the owner writes. A writer killed mid-update leaves
//! the counter odd: readers then give up on that record after a few tries instead of spinning,
//! and the parent resets the record when it clears the dead worker's slot.

use std::borrow::Cow;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::fence;

use crate::layout::{CLIENT_BYTES, PROTOCOL_BYTES, REQUEST_LINE_BYTES, SeqText, Slot, TEXT_WORDS};

/// Reads of one record before a reader decides its writer is mid-update (or dead).
const READ_ATTEMPTS: usize = 64;

/// What a worker publishes when a request begins. Longer values are cut to the field size.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestInfo<'a> {
    /// `METHOD target VERSION`.
    pub line: &'a [u8],
    /// `address:port` of the client.
    pub client: &'a [u8],
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub protocol: &'a [u8],
    /// The `Host` the client asked for.
    pub vhost: &'a [u8],
}

/// One text field of a [`RequestRecord`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Text<'a>(&'a [u8]);

impl<'a> Text<'a> {
    /// The bytes stored.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// The text, with any invalid UTF-8 (a multi-byte character cut at the field's end, or
    /// bytes a client sent) replaced.
    pub fn to_string_lossy(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.0)
    }

    /// Nothing stored.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

/// A slot's current or last request, as one consistent copy (fixed size: copying it out of
/// shared memory allocates nothing).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestRecord {
    /// When it began (`CLOCK_MONOTONIC` µs).
    pub started_micros: u64,
    lengths: u64,
    bytes: [u8; TEXT_WORDS * 8],
}

impl RequestRecord {
    const EMPTY: RequestRecord = RequestRecord { started_micros: 0, lengths: 0, bytes: [0; TEXT_WORDS * 8] };

    fn field(&self, n: usize) -> Text<'_> {
        let len = ((self.lengths >> (8 * n)) & 0xff) as usize;
        let (start, end) = (OFFSETS[n], OFFSETS[n + 1]);
        Text(&self.bytes[start..start + len.min(end - start)])
    }

    /// `METHOD target VERSION`, at most [`REQUEST_LINE_BYTES`].
    pub fn line(&self) -> Text<'_> {
        self.field(0)
    }

    /// The client's `address:port`.
    pub fn client(&self) -> Text<'_> {
        self.field(1)
    }

    /// `HTTP/1.1`, `HTTP/2.0`.
    pub fn protocol(&self) -> Text<'_> {
        self.field(2)
    }

    /// The `Host` the client asked for.
    pub fn vhost(&self) -> Text<'_> {
        self.field(3)
    }
}

impl std::fmt::Debug for RequestRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestRecord")
            .field("started_micros", &self.started_micros)
            .field("line", &self.line())
            .field("client", &self.client())
            .field("protocol", &self.protocol())
            .field("vhost", &self.vhost())
            .finish()
    }
}

/// The outcome of reading a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordRead {
    /// No request has been published in this slot since it was last cleared.
    Empty,
    /// A consistent copy was made.
    Copied,
    /// The owner was mid-update on every attempt (or died mid-update and is not reaped yet).
    Unreadable,
}

const OFFSETS: [usize; 5] = [
    0,
    REQUEST_LINE_BYTES,
    REQUEST_LINE_BYTES + CLIENT_BYTES,
    REQUEST_LINE_BYTES + CLIENT_BYTES + PROTOCOL_BYTES,
    TEXT_WORDS * 8,
];

/// Owner only: publishes a new record.
pub(crate) fn publish(slot: &Slot, started_micros: u64, info: &RequestInfo<'_>) {
    let mut buffer = [0u8; TEXT_WORDS * 8];
    let mut lengths = 0u64;
    for (field, value) in [info.line, info.client, info.protocol, info.vhost].into_iter().enumerate() {
        let (start, end) = (OFFSETS[field], OFFSETS[field + 1]);
        let len = value.len().min(end - start);
        buffer[start..start + len].copy_from_slice(&value[..len]);
        lengths |= (len as u64) << (8 * field);
    }
    write(slot, started_micros, lengths, &buffer);
}

/// Parent only, after the owner is reaped: forgets the record.
pub(crate) fn clear(slot: &Slot) {
    write(slot, 0, 0, &[0u8; TEXT_WORDS * 8]);
}

fn write(slot: &Slot, started_micros: u64, lengths: u64, buffer: &[u8; TEXT_WORDS * 8]) {
    // Whatever a dead previous writer left, make the counter odd (and not equal to anything a
    // reader may hold) for the duration of the update.
    let odd = (slot.seq.load(Relaxed) | 1) + 2;
    slot.seq.store(odd, Relaxed);
    fence(Release);
    slot.request_started_micros.store(started_micros, Relaxed);
    slot.text_lengths.store(lengths, Relaxed);
    for (word, chunk) in slot.text.iter().zip(buffer.chunks_exact(8)) {
        word.store(u64::from_ne_bytes(chunk.try_into().expect("8-byte chunk")), Relaxed);
    }
    slot.seq.store(odd + 1, Release);
}

/// Any process: copies the record into `out` (in place), retrying while the owner is
/// mid-update. `out` is `Some` exactly when the outcome is [`RecordRead::Copied`].
pub(crate) fn read_into(slot: &Slot, out: &mut Option<RequestRecord>) -> RecordRead {
    let record = out.get_or_insert(RequestRecord::EMPTY);
    for _ in 0..READ_ATTEMPTS {
        let before = slot.seq.load(Acquire);
        if before & 1 == 1 {
            std::hint::spin_loop();
            continue;
        }
        record.started_micros = slot.request_started_micros.load(Relaxed);
        record.lengths = slot.text_lengths.load(Relaxed);
        for (word, chunk) in slot.text.iter().zip(record.bytes.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&word.load(Relaxed).to_ne_bytes());
        }
        fence(Acquire);
        if slot.seq.load(Relaxed) != before {
            continue;
        }
        if record.started_micros == 0 && record.lengths == 0 {
            *out = None;
            return RecordRead::Empty;
        }
        return RecordRead::Copied;
    }
    *out = None;
    RecordRead::Unreadable
}

/// Any process: a copy of the record, if one can be made.
#[cfg(test)]
pub(crate) fn read(slot: &Slot) -> (RecordRead, Option<RequestRecord>) {
    let mut out = None;
    let outcome = read_into(slot, &mut out);
    (outcome, out)
}

impl<const WORDS: usize> SeqText<WORDS> {
    /// Writer only (one process): replaces the text, cut to the field size.
    pub(crate) fn publish(&self, text: &[u8]) {
        let len = text.len().min(WORDS * 8);
        let odd = (self.seq.load(Relaxed) | 1) + 2;
        self.seq.store(odd, Relaxed);
        fence(Release);
        self.len.store(len as u64, Relaxed);
        for (i, word) in self.words.iter().enumerate() {
            let mut chunk = [0u8; 8];
            let start = (i * 8).min(len);
            let end = (start + 8).min(len);
            chunk[..end - start].copy_from_slice(&text[start..end]);
            word.store(u64::from_ne_bytes(chunk), Relaxed);
        }
        self.seq.store(odd + 1, Release);
    }

    /// Any process: a consistent copy (lossy UTF-8), or `None` while the writer is mid-update.
    pub(crate) fn read(&self) -> Option<String> {
        for _ in 0..READ_ATTEMPTS {
            let before = self.seq.load(Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let len = (self.len.load(Relaxed) as usize).min(WORDS * 8);
            let mut words = [[0u8; 8]; WORDS];
            for (word, chunk) in self.words.iter().zip(words.iter_mut()) {
                *chunk = word.load(Relaxed).to_ne_bytes();
            }
            fence(Acquire);
            if self.seq.load(Relaxed) == before {
                return Some(String::from_utf8_lossy(&words.as_flattened()[..len]).into_owned());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::VHOST_BYTES;

    #[test]
    fn a_sequenced_text_reads_back_what_was_published_last() {
        // SAFETY: atomics only; all-zero is valid.
        let text: Box<SeqText<2>> = Box::new(unsafe { std::mem::zeroed() });
        assert_eq!(text.read().as_deref(), Some(""));
        text.publish(b"database unreachable");
        assert_eq!(text.read().as_deref(), Some("database unreach"), "cut to the field's 16 bytes");
        text.publish(b"short");
        assert_eq!(text.read().as_deref(), Some("short"));
    }

    fn slot() -> Box<Slot> {
        // SAFETY: a Slot is only atomics, for which all-zero bytes are valid.
        Box::new(unsafe { std::mem::zeroed() })
    }

    #[test]
    fn a_published_record_reads_back_whole() {
        let slot = slot();
        assert_eq!(read(&slot), (RecordRead::Empty, None));
        publish(
            &slot,
            42,
            &RequestInfo {
                line: b"GET /x HTTP/1.1",
                client: b"127.0.0.1:5000",
                protocol: b"HTTP/1.1",
                vhost: b"example.org",
            },
        );
        let (RecordRead::Copied, Some(record)) = read(&slot) else { panic!("no record") };
        assert_eq!(record.started_micros, 42);
        assert_eq!(record.line().to_string_lossy(), "GET /x HTTP/1.1");
        assert_eq!(record.client().to_string_lossy(), "127.0.0.1:5000");
        assert_eq!(record.protocol().to_string_lossy(), "HTTP/1.1");
        assert_eq!(record.vhost().to_string_lossy(), "example.org");
    }

    #[test]
    fn long_values_are_cut_to_their_field() {
        let slot = slot();
        let long = vec![b'a'; 500];
        publish(&slot, 1, &RequestInfo { line: &long, client: &long, protocol: &long, vhost: &long });
        let (_, Some(record)) = read(&slot) else { panic!("no record") };
        assert_eq!(record.line().as_bytes().len(), REQUEST_LINE_BYTES);
        assert_eq!(record.client().as_bytes().len(), CLIENT_BYTES);
        assert_eq!(record.protocol().as_bytes().len(), PROTOCOL_BYTES);
        assert_eq!(record.vhost().as_bytes().len(), VHOST_BYTES);
    }

    #[test]
    fn a_cut_multibyte_character_reads_as_a_replacement_not_a_panic() {
        let slot = slot();
        let mut line = vec![b'a'; REQUEST_LINE_BYTES - 1];
        line.extend_from_slice("é".as_bytes());
        publish(&slot, 1, &RequestInfo { line: &line, ..Default::default() });
        let (_, Some(record)) = read(&slot) else { panic!("no record") };
        assert!(record.line().to_string_lossy().ends_with('\u{FFFD}'));
    }

    #[test]
    fn a_writer_that_died_mid_update_makes_the_record_unreadable_not_torn_or_a_hang() {
        let slot = slot();
        publish(&slot, 7, &RequestInfo { line: b"GET /old HTTP/1.1", ..Default::default() });
        // Simulate a SIGKILL between the two counter updates.
        slot.seq.store(slot.seq.load(Relaxed) | 1, Relaxed);
        assert_eq!(read(&slot), (RecordRead::Unreadable, None));
        clear(&slot);
        assert_eq!(read(&slot), (RecordRead::Empty, None));
        publish(&slot, 8, &RequestInfo { line: b"GET /new HTTP/1.1", ..Default::default() });
        assert!(matches!(read(&slot), (RecordRead::Copied, Some(r)) if r.started_micros == 8));
    }
}
