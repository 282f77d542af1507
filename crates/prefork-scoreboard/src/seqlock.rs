//! The sequence lock: words one process rewrites while others read them, never torn and never
//! waited for.
//!
//! The writer makes the counter odd, stores the words, and makes it even again. A reader copies
//! the words between two reads of the counter and keeps the copy only if the counter was even
//! and unchanged. Everything is an atomic (relaxed loads and stores fenced by the counter), so
//! the copy is defined behaviour even while the writer writes. A writer killed mid-update leaves
//! the counter odd: readers then give up after a few tries instead of spinning, and the next
//! write (by the parent, which clears a dead worker's slot) starts from a fresh odd value.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::fence;

use crate::layout::SeqWords;

/// Reads before a reader decides the writer is mid-update (or dead).
const READ_ATTEMPTS: usize = 64;

impl<const N: usize> SeqWords<N> {
    /// Writer only (one process at a time): replaces the words (each in native byte order,
    /// as [`SeqWords::read`] gives them back).
    pub(crate) fn publish(&self, words: &[[u8; 8]; N]) {
        // Whatever a dead previous writer left, make the counter odd (and not equal to anything
        // a reader may hold) for the duration of the update.
        let odd = (self.seq.load(Relaxed) | 1) + 2;
        self.seq.store(odd, Relaxed);
        fence(Release);
        for (word, bytes) in self.words.iter().zip(words) {
            word.store(u64::from_ne_bytes(*bytes), Relaxed);
        }
        self.seq.store(odd + 1, Release);
    }

    /// Any process: copies a consistent state into `out` (each word in native byte order, so
    /// that texts read as bytes); false if the writer was mid-update on every attempt (`out`
    /// then holds garbage).
    pub(crate) fn read(&self, out: &mut [[u8; 8]; N]) -> bool {
        for _ in 0..READ_ATTEMPTS {
            let before = self.seq.load(Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            for (word, bytes) in self.words.iter().zip(out.iter_mut()) {
                *bytes = word.load(Relaxed).to_ne_bytes();
            }
            fence(Acquire);
            if self.seq.load(Relaxed) == before {
                return true;
            }
        }
        false
    }

    /// Writer only: stores a text (cut to `N - 1` words), its length in the first word.
    pub(crate) fn publish_text(&self, text: &[u8]) {
        let mut words = [[0u8; 8]; N];
        let len = text.len().min((N - 1) * 8);
        words[0] = (len as u64).to_ne_bytes();
        words[1..].as_flattened_mut()[..len].copy_from_slice(&text[..len]);
        self.publish(&words);
    }

    /// Any process: the text (lossy UTF-8), or `None` while the writer is mid-update.
    pub(crate) fn read_text(&self) -> Option<String> {
        let mut words = [[0u8; 8]; N];
        if !self.read(&mut words) {
            return None;
        }
        let text = words[1..].as_flattened();
        let len = (u64::from_ne_bytes(words[0]) as usize).min(text.len());
        Some(String::from_utf8_lossy(&text[..len]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zeroed<const N: usize>() -> Box<SeqWords<N>> {
        // SAFETY: atomics only; all-zero is valid.
        Box::new(unsafe { std::mem::zeroed() })
    }

    #[test]
    fn a_text_reads_back_what_was_published_last() {
        let text = zeroed::<3>();
        assert_eq!(text.read_text().as_deref(), Some(""));
        text.publish_text(b"database unreachable");
        assert_eq!(text.read_text().as_deref(), Some("database unreach"), "cut to the field's 16 bytes");
        text.publish_text(b"short");
        assert_eq!(text.read_text().as_deref(), Some("short"));
    }

    #[test]
    fn a_writer_that_died_mid_update_makes_the_words_unreadable_until_the_next_write() {
        let words = zeroed::<2>();
        words.publish(&[[1; 8], [2; 8]]);
        // Simulate a SIGKILL between the two counter updates.
        words.seq.store(words.seq.load(Relaxed) | 1, Relaxed);
        let mut out = [[0; 8]; 2];
        assert!(!words.read(&mut out));
        words.publish(&[[3; 8], [4; 8]]);
        assert!(words.read(&mut out));
        assert_eq!(out, [[3; 8], [4; 8]]);
    }
}
