//! Reading a server's status document and its demo answers.

use anyhow::{Context as _, Result};

/// Worker pids listed by a status JSON document, sorted.
pub fn status_pids(status: &serde_json::Value) -> Vec<u32> {
    let mut pids: Vec<u32> = status["workers"]
        .as_array()
        .map(|ws| ws.iter().filter_map(|w| w["pid"].as_u64()).map(|p| p as u32).collect())
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// Whether a status JSON document lists at least one worker, and only workers of `generation`
/// (a reload has taken over).
pub fn only_generation(status: &serde_json::Value, generation: u64) -> bool {
    let workers = status["workers"].as_array().map(Vec::as_slice).unwrap_or_default();
    !workers.is_empty() && workers.iter().all(|w| w["generation"].as_u64() == Some(generation))
}

/// The worker that answered the demo's `/`: the pid in "Hello from simplehttp-prefork worker
/// `<pid>` ...".
pub fn hello_pid(body: &str) -> Result<u32> {
    let pid =
        body.strip_prefix("Hello from simplehttp-prefork worker ").and_then(|rest| rest.split_whitespace().next());
    pid.and_then(|pid| pid.parse().ok()).with_context(|| format!("not an answer of the demo's `/`: {body:?}"))
}

/// A count field of a status JSON document.
pub fn count(status: &serde_json::Value, field: &str) -> u64 {
    status[field].as_u64().unwrap_or(u64::MAX)
}
