//! The `main` of a `harness = false` test target that re-runs itself as its own server.

use anyhow::Result;

/// A scenario of a `harness = false` test target.
pub type Scenario = fn() -> Result<()>;

/// The `main` of a `harness = false` test target that re-runs itself as its own server (a
/// fresh single-threaded process that may fork): `serve(role)` when the environment variable
/// `role_variable` is set, else the scenarios, each a test of its own under libtest-mimic (run
/// alone by name, `--list`, and a failure fails that one only), one at a time unless
/// `--test-threads` says otherwise.
pub fn serve_or_run(role_variable: &str, serve: fn(&str) -> Result<()>, scenarios: &[(&str, Scenario)]) -> Result<()> {
    if let Ok(role) = std::env::var(role_variable) {
        return serve(&role);
    }
    run_trials(scenarios.iter().map(|&(name, scenario)| (name.to_owned(), Box::new(scenario) as Trial)).collect())
}

/// One test of a `harness = false` target.
pub type Trial = Box<dyn FnOnce() -> Result<()> + Send>;

/// Runs `trials` as libtest would (the command line's filters and options apply), and exits
/// with their verdict.
pub fn run_trials(trials: Vec<(String, Trial)>) -> ! {
    let mut arguments = libtest_mimic::Arguments::from_args();
    // The scenarios start servers and watch the machine's processes: one at a time by default.
    arguments.test_threads.get_or_insert(1);
    let trials = trials
        .into_iter()
        .map(|(name, trial)| libtest_mimic::Trial::test(name, move || trial().map_err(|e| format!("{e:#}").into())))
        .collect();
    libtest_mimic::run(&arguments, trials).exit()
}
