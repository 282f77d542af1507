//! The `simplehttp-prefork status` command against segments and pid files it does not control:
//! foreign, empty, truncated, corrupt and newer-layout segments, absurd slot counts, a
//! sequence counter left mid-write, names that are not segments, pid files without a pid.
//! Each must end in a clear error (or, for a well-formed segment, its report), never a panic
//! or a hang.

use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Result, ensure};
use prefork_scoreboard::{LAYOUT_VERSION, segment_size};
use prefork_tests::{TempPath, run_command};
use proptest::prelude::*;

/// A file under `/dev/shm` (a segment, or something else), removed on drop.
struct ShmFile {
    name: String,
}

impl ShmFile {
    fn name() -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        format!("prefork-status-fuzz-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
    }

    fn with(bytes: &[u8]) -> Result<ShmFile> {
        let file = ShmFile { name: ShmFile::name() };
        std::fs::write(file.path(), bytes)?;
        Ok(file)
    }

    fn path(&self) -> String {
        format!("/dev/shm/{}", self.name)
    }
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        let path = self.path();
        let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir(&path));
    }
}

/// What `status --json` did with a segment.
struct Outcome {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn status(args: &[&str]) -> Result<Outcome> {
    let mut all = vec!["status"];
    all.extend_from_slice(args);
    all.push("--json");
    let output = run_command(&all)?;
    Ok(Outcome {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// The command refused, with exit code 1 and an error line containing `words` (any of them).
fn assert_refused(what: &str, outcome: &Outcome, words: &[&str]) -> Result<()> {
    ensure!(!outcome.stderr.contains("panicked"), "{what}: the status command panicked:\n{}", outcome.stderr);
    ensure!(!outcome.success && outcome.code == Some(1), "{what}: exit code {:?}, want 1", outcome.code);
    ensure!(
        outcome.stderr.contains("ERROR") && words.iter().any(|w| outcome.stderr.contains(w)),
        "{what}: unclear error:\n{}",
        outcome.stderr
    );
    Ok(())
}

/// A well-formed header for `slots` zeroed slots.
fn valid_segment(slots: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; segment_size(slots)];
    bytes[..8].copy_from_slice(b"SHPFSCBD");
    bytes[8..12].copy_from_slice(&LAYOUT_VERSION.to_ne_bytes());
    bytes[12..16].copy_from_slice(&384u32.to_ne_bytes());
    bytes[16..20].copy_from_slice(&512u32.to_ne_bytes());
    bytes[20..24].copy_from_slice(&(slots as u32).to_ne_bytes());
    bytes
}

#[test]
fn segments_that_are_not_this_builds_are_refused_clearly() -> Result<()> {
    let mut newer = valid_segment(2);
    newer[8..12].copy_from_slice(&(LAYOUT_VERSION + 1).to_ne_bytes());
    let mut absurd = valid_segment(2);
    absurd[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
    let mut bad_sizes = valid_segment(2);
    bad_sizes[16..20].copy_from_slice(&1024u32.to_ne_bytes());
    let foreign: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    let cases: [(&str, Vec<u8>, &[&str]); 7] = [
        ("empty", Vec::new(), &["empty"]),
        ("foreign", foreign, &["magic"]),
        ("truncated_header", valid_segment(2)[..100].to_vec(), &["too small"]),
        ("truncated_slots", valid_segment(4)[..1000].to_vec(), &["do not fit"]),
        ("newer_layout", newer, &["layout version"]),
        ("absurd_slot_count", absurd, &["do not fit"]),
        ("other_slot_size", bad_sizes, &["sizes"]),
    ];
    for (what, bytes, words) in cases {
        let segment = ShmFile::with(&bytes)?;
        assert_refused(what, &status(&["--scoreboard", &segment.name])?, words)?;
    }
    Ok(())
}

#[test]
fn names_that_are_not_segments_are_refused_clearly() -> Result<()> {
    let missing = ShmFile::name();
    assert_refused("missing", &status(&["--scoreboard", &missing])?, &["No such file"])?;
    assert_refused("escaping /dev/shm", &status(&["--scoreboard", "../../etc/passwd"])?, &["Invalid argument"])?;
    assert_refused("empty name", &status(&["--scoreboard", ""])?, &["Invalid argument"])?;
    let directory = ShmFile { name: ShmFile::name() };
    std::fs::create_dir(directory.path())?;
    assert_refused("a directory", &status(&["--scoreboard", &directory.name])?, &["is not a shared memory segment"])?;
    Ok(())
}

#[test]
fn pid_files_without_a_live_server_are_refused_clearly() -> Result<()> {
    let pid_file = TempPath::new("status-fuzz.pid");
    for (what, text, words) in [
        ("not a number", "abc\n", &["holds no pid"][..]),
        ("negative", "-1\n", &["holds no pid"]),
        ("too large", "99999999999\n", &["holds no pid"]),
        ("empty", "", &["holds no pid"]),
        ("binary", "\0\u{7f}\n", &["holds no pid"]),
        ("pid without a segment", "4194999\n", &["No such file"]),
    ] {
        std::fs::write(pid_file.path(), text)?;
        assert_refused(what, &status(&["--pid-file", pid_file.as_str()])?, words)?;
    }
    assert_refused("missing pid file", &status(&["--pid-file", "/nonexistent/prefork.pid"])?, &["reading pid file"])?;
    Ok(())
}

#[test]
fn a_well_formed_segment_with_a_record_left_mid_write_is_reported() -> Result<()> {
    let mut bytes = valid_segment(2);
    for slot in 0..2 {
        let at = 384 + slot * 512;
        bytes[at..at + 4].copy_from_slice(&(100 + slot as u32).to_ne_bytes());
        bytes[at + 4] = 4; // W
        bytes[at + 128..at + 136].copy_from_slice(&7u64.to_ne_bytes()); // an odd sequence counter
    }
    let segment = ShmFile::with(&bytes)?;
    let outcome = status(&["--scoreboard", &segment.name])?;
    ensure!(outcome.success, "status failed:\n{}", outcome.stderr);
    ensure!(outcome.stderr.contains("no running server holds this scoreboard"), "no warning:\n{}", outcome.stderr);
    let report: serde_json::Value = serde_json::from_str(&outcome.stdout)?;
    let workers = report["workers"].as_array().map(Vec::len).unwrap_or(0);
    ensure!(workers == 2, "{workers} workers in {report}");
    ensure!(report["workers"][0]["request_unreadable"] == true, "record not unreadable: {report}");
    Ok(())
}

/// Two live slots whose request counters add up past `u64::MAX`: the debug build's status
/// command panics (`attempt to add with overflow` in `Snapshot::totals`).
#[test]
fn a_segment_whose_totals_overflow_is_reported_without_panicking() -> Result<()> {
    let mut bytes = valid_segment(2);
    for slot in 0..2 {
        let at = 384 + slot * 512;
        bytes[at..at + 4].copy_from_slice(&(100 + slot as u32).to_ne_bytes());
        bytes[at + 4] = 4;
        bytes[at + 40..at + 48].copy_from_slice(&u64::MAX.to_ne_bytes()); // requests by the slot
    }
    let segment = ShmFile::with(&bytes)?;
    let outcome = status(&["--scoreboard", &segment.name])?;
    ensure!(outcome.success && !outcome.stderr.contains("panicked"), "status failed:\n{}", outcome.stderr);
    Ok(())
}

/// A FIFO where the segment should be: `shm_open` opens it without `O_NONBLOCK`, so the
/// command waits for a writer that never comes.
#[test]
fn a_fifo_in_place_of_a_segment_is_refused_not_waited_on() -> Result<()> {
    let fifo = ShmFile { name: ShmFile::name() };
    let made = std::process::Command::new("mkfifo").arg(fifo.path()).status()?;
    ensure!(made.success(), "mkfifo failed");
    assert_refused("a FIFO", &status(&["--scoreboard", &fifo.name])?, &["segment"])
}

proptest! {
    // Each case runs the command once: a few dozen runs in all.
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// A well-formed header over arbitrary slots and header fields: reported, never a panic.
    #[test]
    fn arbitrary_slots_behind_a_valid_header_are_reported(
        slots in 1usize..=4,
        noise in prop::collection::vec(any::<u8>(), segment_size(4)),
    ) {
        let mut bytes = valid_segment(slots);
        let len = bytes.len();
        bytes[24..].copy_from_slice(&noise[24..len]);
        // Slot counters below 2^56, so that their sums cannot overflow (the known bug above).
        for word in bytes[384..].chunks_mut(8) {
            word[7] = 0;
        }
        let segment = ShmFile::with(&bytes).expect("writing a segment");
        let outcome = status(&["--scoreboard", &segment.name]).expect("running status");
        prop_assert!(!outcome.stderr.contains("panicked"), "{}", outcome.stderr);
        prop_assert!(outcome.success, "{}", outcome.stderr);
        let report: serde_json::Value = serde_json::from_str(&outcome.stdout).expect("the JSON report");
        prop_assert_eq!(report["max_clients"].as_u64(), Some(slots as u64));
    }
}
