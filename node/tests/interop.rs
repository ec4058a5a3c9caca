//! The official `openai` Python package against a real node, unary and streaming. The test
//! command (`scripts/test`) installs the package into `.venv`; `INTEROP_TEST_PYTHON` may name
//! another interpreter that has it.

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

#[tokio::test]
async fn the_official_openai_python_sdk_works_unchanged_but_for_base_url() {
    let python = python();
    let probe = Command::new(&python).args(["-c", "import openai"]).output().expect("python runs");
    assert!(
        probe.status.success(),
        "{} cannot import openai ({}); run scripts/test, which installs it into .venv",
        python.display(),
        String::from_utf8_lossy(&probe.stderr).trim()
    );
    let sim = start_sim().await;
    let node = Node::start(&config_for(sim.addr, |c| c));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openai_interop.py");
    let prefix = format!("[sim {}]", fingerprint(&[("user", "interop check")]));
    let base_url = format!("{}/v1", node.http);
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
    assert!(String::from_utf8_lossy(&output.stdout).contains("openai interop ok"));
}
