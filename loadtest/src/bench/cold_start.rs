//! `switchyard-loadtest cold-start`: time from starting a `switchyard` process to its first
//! `200` from `/ready` (the model loaded, the ledger replayed, both front doors bound).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::time::Instant;

/// What to start and where to ask.
#[derive(Clone, Debug)]
pub struct ColdStart {
    /// The `switchyard` binary.
    pub binary: PathBuf,
    /// Its arguments (e.g. `serve --config node.toml`).
    pub args: Vec<String>,
    /// The readiness URL.
    pub ready_url: String,
    /// Give up after this long.
    pub timeout: Duration,
}

/// Starts the node, polls `/ready` every 5 ms, and returns the time to its first 200; the node
/// is then stopped with SIGTERM (killed if it has not exited within 30 s).
pub async fn measure(settings: &ColdStart) -> anyhow::Result<Duration> {
    let client = reqwest::Client::builder().timeout(Duration::from_millis(500)).build()?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&settings.binary)
        .args(&settings.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", settings.binary.display()))?;
    let ready = loop {
        if let Ok(response) = client.get(&settings.ready_url).send().await
            && response.status().is_success()
        {
            break started.elapsed();
        }
        if let Some(status) = child.try_wait()? {
            bail!("{} exited with {status} before it was ready", settings.binary.display());
        }
        if started.elapsed() > settings.timeout {
            bail!("{} was not ready within {:?}", settings.binary.display(), settings.timeout);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    if let Some(pid) = child.id() {
        let _status = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
    }
    if tokio::time::timeout(Duration::from_secs(30), child.wait()).await.is_err() {
        child.kill().await?;
    }
    Ok(ready)
}
