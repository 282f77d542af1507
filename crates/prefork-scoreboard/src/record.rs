//! A slot's current request (line, client, protocol, virtual host, start time), published under
//! the slot's sequence lock (see [`crate::seqlock`]): a reader never sees a torn record, and the
//! writer never waits. A writer killed mid-update leaves the record unreadable until the parent
//! clears the dead worker's slot.

use std::borrow::Cow;

use crate::layout::{CLIENT_BYTES, PROTOCOL_BYTES, RECORD_WORDS, REQUEST_LINE_BYTES, Slot, TEXT_WORDS};

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
    /// The words as published: start time, lengths, texts (native byte order).
    words: [[u8; 8]; RECORD_WORDS],
}

impl RequestRecord {
    const EMPTY: RequestRecord = RequestRecord { words: [[0; 8]; RECORD_WORDS] };

    /// When it began (`CLOCK_MONOTONIC` µs).
    pub fn started_micros(&self) -> u64 {
        u64::from_ne_bytes(self.words[0])
    }

    fn lengths(&self) -> u64 {
        u64::from_ne_bytes(self.words[1])
    }

    fn field(&self, n: usize) -> Text<'_> {
        let len = ((self.lengths() >> (8 * n)) & 0xff) as usize;
        let (start, end) = (OFFSETS[n], OFFSETS[n + 1]);
        Text(&self.words[2..].as_flattened()[start..start + len.min(end - start)])
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
            .field("started_micros", &self.started_micros())
            .field("line", &self.line())
            .field("client", &self.client())
            .field("protocol", &self.protocol())
            .field("vhost", &self.vhost())
            .finish()
    }
}

/// The outcome of reading a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordRead {
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
    let mut words = [[0u8; 8]; RECORD_WORDS];
    let mut lengths = 0u64;
    let text = words[2..].as_flattened_mut();
    for (field, value) in [info.line, info.client, info.protocol, info.vhost].into_iter().enumerate() {
        let (start, end) = (OFFSETS[field], OFFSETS[field + 1]);
        let len = value.len().min(end - start);
        text[start..start + len].copy_from_slice(&value[..len]);
        lengths |= (len as u64) << (8 * field);
    }
    words[0] = started_micros.to_ne_bytes();
    words[1] = lengths.to_ne_bytes();
    slot.record.publish(&words);
}

/// Parent only, after the owner is reaped: forgets the record.
pub(crate) fn clear(slot: &Slot) {
    slot.record.publish(&[[0; 8]; RECORD_WORDS]);
}

/// Any process: copies the record into `out` (in place), retrying while the owner is
/// mid-update. `out` is `Some` exactly when the outcome is [`RecordRead::Copied`].
pub(crate) fn read_into(slot: &Slot, out: &mut Option<RequestRecord>) -> RecordRead {
    let record = out.get_or_insert(RequestRecord::EMPTY);
    let copied = slot.record.read(&mut record.words);
    let outcome = match (copied, record.started_micros() == 0 && record.lengths() == 0) {
        (false, _) => RecordRead::Unreadable,
        (true, true) => RecordRead::Empty,
        (true, false) => return RecordRead::Copied,
    };
    *out = None;
    outcome
}

/// Any process: a copy of the record, if one can be made.
#[cfg(test)]
pub(crate) fn read(slot: &Slot) -> (RecordRead, Option<RequestRecord>) {
    let mut out = None;
    let outcome = read_into(slot, &mut out);
    (outcome, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::VHOST_BYTES;
    use std::sync::atomic::Ordering::Relaxed;

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
        assert_eq!(record.started_micros(), 42);
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
        slot.record.seq.store(slot.record.seq.load(Relaxed) | 1, Relaxed);
        assert_eq!(read(&slot), (RecordRead::Unreadable, None));
        clear(&slot);
        assert_eq!(read(&slot), (RecordRead::Empty, None));
        publish(&slot, 8, &RequestInfo { line: b"GET /new HTTP/1.1", ..Default::default() });
        assert!(matches!(read(&slot), (RecordRead::Copied, Some(r)) if r.started_micros() == 8));
    }
}
