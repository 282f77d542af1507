//! Property tests of the scoreboard reader against segments it does not control: arbitrary
//! bytes, foreign and truncated segments, a valid header with corrupted fields, a newer
//! layout version, absurd slot counts, sequence counters left odd by a writer killed mid-write.
//!
//! Each case writes a segment under `/dev/shm` with a name of its own, attaches to it as the
//! `status` command does (`AttachedScoreboard::open`), and, if it attaches, takes a snapshot
//! and renders the status report in every format. Refusing the segment must be a clear
//! error; reading it must never panic or hang.

use std::sync::atomic::{AtomicU32, Ordering};

use prefork_scoreboard::{AttachedScoreboard, LAYOUT_VERSION, MAX_SLOTS, ScoreboardError, StatusReport, segment_size};
use proptest::prelude::*;

/// Bytes of the header; slots follow, 512 bytes each (pinned by the layout's own tests).
const HEADER: usize = 384;
const SLOT: usize = 512;
/// Offsets in the header: magic, layout version, header size, slot size, slot count, the
/// last boot error's sequence counter.
const MAGIC: &[u8; 8] = b"SHPFSCBD";
const VERSION_AT: usize = 8;
const HEADER_SIZE_AT: usize = 12;
const SLOT_SIZE_AT: usize = 16;
const SLOT_COUNT_AT: usize = 20;
const BOOT_ERROR_SEQ_AT: usize = 192;
/// Offsets in a slot: pid, state, requests by the slot, the request record's sequence
/// counter, connections parked.
const PID_AT: usize = 0;
const STATE_AT: usize = 4;
const REQUESTS_SLOT_AT: usize = 40;
const RECORD_SEQ_AT: usize = 128;
const PARKED_AT: usize = 440;

/// Slot counters are kept below this in the random segments: the reader adds them up over
/// the slots without overflow checks, which panics in a debug build (see the ignored
/// `counters_that_overflow_when_summed_are_read_without_panicking`).
const SUMMABLE: u64 = 1 << 56;

/// A segment file under `/dev/shm`, removed on drop.
struct Segment {
    name: String,
}

impl Segment {
    fn new(bytes: &[u8]) -> Segment {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("prefork-segment-props-{}-{n}", std::process::id());
        std::fs::write(format!("/dev/shm/{name}"), bytes).expect("writing a segment under /dev/shm");
        Segment { name }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/{}", self.name));
    }
}

/// What reading `bytes` as a segment came to.
#[derive(Debug)]
enum Read {
    Refused(ScoreboardError),
    /// Attached: the snapshot's slot count, and every rendering of its report.
    Attached {
        slots: usize,
        renderings: Vec<String>,
    },
}

/// Attaches to `bytes` as a segment, and renders every format of its report if it attaches.
fn read(bytes: &[u8]) -> Read {
    let segment = Segment::new(bytes);
    let board = match AttachedScoreboard::open(&segment.name) {
        Ok(board) => board,
        Err(error) => return Read::Refused(error),
    };
    let snapshot = board.snapshot();
    let _ = board.is_live();
    let report = StatusReport::new(&snapshot, board.name());
    let renderings = vec![
        report.to_json(),
        report.to_apache_auto(),
        report.to_text(),
        report.to_html(None),
        report.to_html(Some(u32::MAX)),
        report.to_openmetrics(),
    ];
    Read::Attached { slots: snapshot.slots.len(), renderings }
}

/// A well-formed header for `slot_count` slots, followed by those slots (zeroed).
fn valid_segment(slot_count: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; segment_size(slot_count)];
    bytes[..8].copy_from_slice(MAGIC);
    put_u32(&mut bytes, VERSION_AT, LAYOUT_VERSION);
    put_u32(&mut bytes, HEADER_SIZE_AT, HEADER as u32);
    put_u32(&mut bytes, SLOT_SIZE_AT, SLOT as u32);
    put_u32(&mut bytes, SLOT_COUNT_AT, slot_count as u32);
    bytes
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_ne_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_ne_bytes());
}

/// A valid segment of 1 to 8 slots whose every byte past the identifying fields is arbitrary:
/// counters, states, pids, request records and their sequence counters, the boot error.
fn corrupt_segment() -> impl Strategy<Value = Vec<u8>> {
    (1usize..=8)
        .prop_flat_map(|slots| {
            let len = segment_size(slots);
            (Just(slots), prop::collection::vec(any::<u8>(), len))
        })
        .prop_map(|(slots, noise)| {
            let mut bytes = valid_segment(slots);
            bytes[SLOT_COUNT_AT + 4..].copy_from_slice(&noise[SLOT_COUNT_AT + 4..]);
            // Every slot word below SUMMABLE: its top byte cleared (native order is little-endian
            // on every target this server runs on).
            for word in bytes[HEADER..].chunks_mut(8) {
                word[7] = 0;
            }
            bytes
        })
}

/// A valid segment whose slots hold live workers with extreme values: every u64 field of the
/// header past the identifying fields set to one of a few extreme values, and every slot field
/// to one of those below [`SUMMABLE`].
fn extreme_segment() -> impl Strategy<Value = Vec<u8>> {
    let header = prop::sample::select(vec![0u64, 1, u64::MAX, u64::MAX / 2, i64::MAX as u64 + 1, 1 << 53]);
    let slot = prop::sample::select(vec![0u64, 1, SUMMABLE - 1, 1 << 53, 1 << 32]);
    (1usize..=8)
        .prop_flat_map(move |slots| {
            (
                Just(slots),
                prop::collection::vec(header.clone(), (HEADER - 24) / 8),
                prop::collection::vec(slot.clone(), slots * SLOT / 8),
                prop::collection::vec(1u8..=8, slots),
            )
        })
        .prop_map(|(slots, header_words, slot_words, states)| {
            let mut bytes = valid_segment(slots);
            for (i, word) in header_words.into_iter().chain(slot_words).enumerate() {
                put_u64(&mut bytes, 24 + i * 8, word);
            }
            for (slot, state) in states.into_iter().enumerate() {
                let at = HEADER + slot * SLOT;
                put_u32(&mut bytes, at + PID_AT, 4242 + slot as u32);
                bytes[at + STATE_AT] = state;
            }
            bytes
        })
}

/// Refused, with a message a person can act on (it names what is wrong).
fn assert_clear(error: &ScoreboardError) {
    let message = error.to_string();
    assert!(
        ["magic", "layout", "version", "slots", "empty", "small", "sizes"].iter().any(|w| message.contains(w)),
        "unclear error: {message}"
    );
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_are_refused_or_read(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        // Without the magic, always refused.
        match read(&bytes) {
            Read::Refused(error) => assert_clear(&error),
            Read::Attached { .. } => prop_assert!(bytes.starts_with(MAGIC), "attached to a foreign segment"),
        }
    }

    #[test]
    fn a_valid_header_with_corrupted_fields_is_read_without_panicking(bytes in corrupt_segment()) {
        match read(&bytes) {
            Read::Refused(error) => panic!("a well-formed header was refused: {error}"),
            Read::Attached { slots, renderings } => {
                prop_assert_eq!(slots, (bytes.len() - HEADER) / SLOT);
                prop_assert!(renderings.iter().all(|r| !r.is_empty()));
            }
        }
    }

    #[test]
    fn extreme_counters_are_read_without_panicking(bytes in extreme_segment()) {
        let attached = matches!(read(&bytes), Read::Attached { .. });
        prop_assert!(attached, "a well-formed segment was refused");
    }

    #[test]
    fn another_layout_version_is_refused(slots in 1usize..=4, version in any::<u32>()) {
        prop_assume!(version != LAYOUT_VERSION);
        let mut bytes = valid_segment(slots);
        put_u32(&mut bytes, VERSION_AT, version);
        match read(&bytes) {
            Read::Refused(error) => {
                let message = error.to_string();
                prop_assert!(message.contains("layout version") && message.contains(&version.to_string()), "{}", message);
            }
            Read::Attached { .. } => panic!("attached to layout version {version}"),
        }
    }

    #[test]
    fn header_and_slot_sizes_must_be_this_builds(
        slots in 1usize..=4,
        header_size in any::<u32>(),
        slot_size in any::<u32>(),
    ) {
        prop_assume!(header_size as usize != HEADER || slot_size as usize != SLOT);
        let mut bytes = valid_segment(slots);
        put_u32(&mut bytes, HEADER_SIZE_AT, header_size);
        put_u32(&mut bytes, SLOT_SIZE_AT, slot_size);
        match read(&bytes) {
            Read::Refused(error) => assert_clear(&error),
            Read::Attached { .. } => panic!("attached with header/slot sizes {header_size}/{slot_size}"),
        }
    }

    #[test]
    fn absurd_slot_counts_are_refused(slots in 0usize..=4, claimed in any::<u32>()) {
        let mut bytes = valid_segment(slots);
        put_u32(&mut bytes, SLOT_COUNT_AT, claimed);
        match read(&bytes) {
            Read::Refused(error) => {
                prop_assert!(claimed as usize > slots, "{} slots fit, yet: {}", claimed, error);
                assert_clear(&error);
            }
            Read::Attached { slots: seen, .. } => {
                prop_assert!(claimed as usize <= slots && claimed as usize <= MAX_SLOTS);
                prop_assert_eq!(seen, claimed as usize);
            }
        }
    }

    #[test]
    fn a_truncated_segment_is_refused_or_read_within_its_length(slots in 1usize..=4, cut in 0usize..=2432) {
        let bytes = valid_segment(slots);
        let cut = cut.min(bytes.len());
        match read(&bytes[..cut]) {
            Read::Refused(error) => {
                prop_assert!(cut < bytes.len());
                assert_clear(&error);
            }
            Read::Attached { slots: seen, .. } => {
                prop_assert_eq!(cut, bytes.len());
                prop_assert_eq!(seen, slots);
            }
        }
    }

    #[test]
    fn a_sequence_counter_left_mid_write_reads_as_unreadable(
        slots in 1usize..=4,
        seq in any::<u64>(),
        boot_seq in any::<u64>(),
    ) {
        let mut bytes = valid_segment(slots);
        put_u64(&mut bytes, BOOT_ERROR_SEQ_AT, boot_seq);
        for slot in 0..slots {
            let at = HEADER + slot * SLOT;
            put_u32(&mut bytes, at + PID_AT, 100 + slot as u32);
            bytes[at + STATE_AT] = 4; // W
            put_u64(&mut bytes, at + RECORD_SEQ_AT, seq);
            put_u64(&mut bytes, at + RECORD_SEQ_AT + 8, 1); // the record's start time
        }
        let Read::Attached { renderings, .. } = read(&bytes) else { panic!("a well-formed segment was refused") };
        let json: serde_json::Value = serde_json::from_str(&renderings[0]).expect("the JSON form parses");
        let unreadable = json["workers"].as_array().expect("workers").iter().all(|w| w["request_unreadable"] == true);
        prop_assert_eq!(unreadable, seq % 2 == 1, "{}", renderings[0]);
    }
}

/// Counters near `u64::MAX` (which only a corrupt segment holds) are added up without overflow
/// checks (`Snapshot::totals`, `Snapshot::parked`, `?auto`'s `ConnsTotal`): a debug build of
/// `simplehttp-prefork status` panics on such a segment, a release build shows wrapped totals.
#[test]
fn counters_that_overflow_when_summed_are_read_without_panicking() {
    let mut bytes = valid_segment(2);
    for slot in 0..2 {
        let at = HEADER + slot * SLOT;
        put_u32(&mut bytes, at + PID_AT, 100 + slot as u32);
        bytes[at + STATE_AT] = 4; // W
        put_u64(&mut bytes, at + REQUESTS_SLOT_AT, u64::MAX);
        put_u64(&mut bytes, at + PARKED_AT, u64::MAX);
    }
    assert!(matches!(read(&bytes), Read::Attached { .. }));
}

#[test]
fn an_empty_segment_is_refused_as_empty() {
    let Read::Refused(error) = read(&[]) else { panic!("attached to an empty segment") };
    assert!(error.to_string().contains("empty"), "{error}");
}

#[test]
fn a_missing_segment_is_a_clear_error() {
    let error = AttachedScoreboard::open(&format!("/prefork-segment-props-missing-{}", std::process::id()))
        .expect_err("attached to nothing");
    let cause = std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default();
    assert!(cause.contains("No such file"), "{error}: {cause}");
}
