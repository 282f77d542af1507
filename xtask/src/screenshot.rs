//! `cargo xtask status-screenshot`: renders the HTML status page of a busy server in headless
//! Chromium (Debian's `chromium` package) and saves a PNG, to look at the page as people do.

use std::path::PathBuf;
use std::process::Command;
use std::thread;

use anyhow::{Context as _, Result, ensure};
use prefork_tests::{DEADLINE, ServerProcess, count, http_get, server_command, wait_for};

use crate::{cargo_build, project_root};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Where to write the PNG.
    #[arg(long, default_value = "docs/status-page.png")]
    output: PathBuf,
    /// The browser to drive.
    #[arg(long, default_value = "chromium")]
    chromium: String,
}

pub fn run(options: &Options) -> Result<()> {
    let binary =
        cargo_build(false, &["-p", "simplehttp-prefork", "--bin", "simplehttp-prefork"])?.join("simplehttp-prefork");
    let server = ServerProcess::spawn(server_command(
        &binary,
        &[
            "--start-servers",
            "6",
            "--min-spare-servers",
            "3",
            "--max-spare-servers",
            "8",
            "--max-clients",
            "48",
            "--slow-request-threshold",
            "1s",
        ],
    ))?;
    let addr = server.addr();
    // Something to see: four long requests, some finished ones, one slow one.
    for i in 0..4 {
        thread::spawn(move || http_get(addr, &format!("/sleep/20000?client={i}")));
    }
    for _ in 0..20 {
        http_get(addr, "/")?;
    }
    http_get(addr, "/sleep/1100")?;
    wait_for("four sleeping workers", DEADLINE, || Ok((count(&server.status()?, "busy") >= 5).then_some(())))?;
    let output = project_root().join(&options.output);
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let profile = std::env::temp_dir().join(format!("xtask-chromium-{}", std::process::id()));
    let status = Command::new(&options.chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--window-size=1400,900")
        .arg(format!("--screenshot={}", output.display()))
        .arg(format!("http://{addr}/server-status"))
        .status()
        .with_context(|| format!("running {} (apt-get install chromium)", options.chromium))?;
    let _ = std::fs::remove_dir_all(&profile);
    ensure!(status.success(), "chromium failed: {status}");
    println!("status page screenshot: {}", output.display());
    Ok(())
}
