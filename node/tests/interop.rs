//! The official `openai` and `anthropic` Python packages against a real node: plain answers,
//! tools, structured output, images, embeddings, batch jobs and token counting, unary and
//! streaming, routed to providers of either wire format. The test command (`scripts/test`) installs the packages
//! into `.venv`; `INTEROP_TEST_PYTHON` may name another interpreter that has them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Node, config_for, start_sim};
use switchyard_loadtest::sim::fingerprint;

fn python() -> PathBuf {
    if let Ok(python) = std::env::var("INTEROP_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if venv.exists() { venv } else { PathBuf::from("python3") }
}

/// Runs `script` (in `tests/`) with `python` against a fresh node and the simulator, passing the
/// base URL (`http://…` plus `base_path`) and the answer prefix the simulator gives the question
/// "interop check"; fails with the script's output and the node's logs unless it prints `done`.
async fn run_script(module: &str, script: &str, base_path: &str, done: &str) {
    let python = python();
    let probe = Command::new(&python).args(["-c", &format!("import {module}")]).output().expect("python runs");
    assert!(
        probe.status.success(),
        "{} cannot import {module} ({}); run scripts/test, which installs it into .venv",
        python.display(),
        String::from_utf8_lossy(&probe.stderr).trim()
    );
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join(script);
    let prefix = format!("[sim {}]", fingerprint(&[("user", "interop check")]));
    let base_url = format!("{}{base_path}", node.http);
    let output = tokio::task::spawn_blocking(move || Command::new(python).arg(script).arg(base_url).arg(prefix).output())
        .await
        .unwrap()
        .expect("interop script runs");
    assert!(
        output.status.success(),
        "interop script failed:\n{}\n{}\nnode logs:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        node.logs()
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(done));
}

#[tokio::test]
async fn the_official_openai_python_sdk_works_unchanged_but_for_base_url() {
    run_script("openai", "openai_interop.py", "/v1", "openai interop ok").await;
}

#[tokio::test]
async fn the_official_anthropic_python_sdk_works_unchanged_but_for_base_url() {
    run_script("anthropic", "anthropic_interop.py", "", "anthropic interop ok").await;
}
