//! `switchyard health`: asks a node's readiness endpoint and exits 0 when it answers 2xx, 1
//! otherwise, so a container's health check needs no curl in the image.

use std::process::ExitCode;
use std::time::Duration;

/// Where the probe asks by default: the node's own `/ready` on the default HTTP port.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080/ready";

/// GETs `url` within `timeout`, printing the answer's status and first line.
pub fn run(url: &str, timeout: Duration) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("switchyard health: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let client = match reqwest::Client::builder().timeout(timeout).build() {
            Ok(client) => client,
            Err(error) => {
                eprintln!("switchyard health: {error}");
                return ExitCode::FAILURE;
            }
        };
        match client.get(url).send().await {
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                let first = body.lines().next().unwrap_or("");
                if status.is_success() {
                    println!("{url}: {status} {first}");
                    ExitCode::SUCCESS
                } else {
                    eprintln!("{url}: {status} {first}");
                    ExitCode::FAILURE
                }
            }
            Err(error) => {
                eprintln!("{url}: {error}");
                ExitCode::FAILURE
            }
        }
    })
}
