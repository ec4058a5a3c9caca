//! `switchyard-loadtest semantic-eval` end to end on a small pairs file written by the test: the
//! real binary, the real local model (`.models/all-MiniLM-L6-v2` or `EMBEDDING_MODEL_DIR`), and
//! the shipped hit policy. Checks the human lines and the keys of the JSON last line.

use std::path::PathBuf;
use std::process::Command;

use switchyard_actors::embed::{DEFAULT_MODEL_DIR, MODEL_DIR_ENV};

/// Topics for the fixture's questions; each pair gets its own so components stay small.
const TOPICS: &[&str] = &[
    "Python",
    "Java",
    "Rust",
    "guitar",
    "piano",
    "French",
    "German",
    "chess",
    "swimming",
    "cooking",
    "painting",
    "calculus",
    "physics",
    "chemistry",
    "investing",
    "photography",
    "drawing",
    "knitting",
    "running",
    "yoga",
    "Spanish",
    "Japanese",
    "poker",
    "salsa",
    "welding",
    "gardening",
    "baking",
    "sailing",
    "surfing",
    "skiing",
];

/// Duplicates ("how do I learn X" / "what is the best way to learn X") and near-misses ("how do I
/// learn X" / "how do I learn Y"), as JSON lines.
fn fixture_lines() -> String {
    let mut lines = String::new();
    for (position, topic) in TOPICS.iter().enumerate() {
        let other = TOPICS[(position + 1) % TOPICS.len()];
        let duplicate = serde_json::json!({
            "a": format!("How do I learn {topic}?"),
            "b": format!("What is the best way to learn {topic}?"),
            "duplicate": true,
        });
        let near_miss = serde_json::json!({
            "a": format!("How long does it take to get good at {topic}?"),
            "b": format!("How long does it take to get good at {other} and {topic} together?"),
            "duplicate": false,
        });
        lines.push_str(&format!("{duplicate}\n{near_miss}\n"));
    }
    lines
}

#[test]
fn semantic_eval_prints_figures_then_one_json_line() {
    let directory =
        std::env::temp_dir().join(format!("switchyard-semantic-eval-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let pairs = directory.join("pairs.jsonl");
    std::fs::write(&pairs, fixture_lines()).unwrap();
    let model_dir = std::env::var_os(MODEL_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(DEFAULT_MODEL_DIR)
        });

    let output = Command::new(env!("CARGO_BIN_EXE_switchyard-loadtest"))
        .args(["semantic-eval", "--limit", "200", "--pairs"])
        .arg(&pairs)
        .arg("--model-dir")
        .arg(&model_dir)
        .arg("--cache-dir")
        .arg(directory.join("cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("baseline: recall@p0.80"), "{stdout}");

    let last_line = stdout.lines().last().unwrap();
    let report: serde_json::Value = serde_json::from_str(last_line).unwrap();
    for key in [
        "pairs",
        "recall_at_p80",
        "recall_at_p90",
        "recall_at_p95",
        "recall_at_p99",
        "best_f1",
        "baseline_recall_at_p80",
        "baseline_recall_at_p90",
        "baseline_recall_at_p95",
        "baseline_recall_at_p99",
        "baseline_best_f1",
    ] {
        assert!(report[key].is_number(), "{key} missing from {last_line}");
    }
    // Both scorers' thresholds for 0.80, 0.90, 0.95 and 0.99; the shipped tables stop below 0.99.
    for key in ["calibrated", "baseline_calibrated"] {
        let figures = report[key].as_array().unwrap();
        assert_eq!(figures.len(), 4, "{key}: {last_line}");
        assert_eq!(figures[0]["calibrated"], true, "{key}: {last_line}");
        assert_eq!(figures[3]["calibrated"], false, "{key}: {last_line}");
    }
    assert!(stdout.contains("(extrapolated)"), "{stdout}");
    let evaluated = report["pairs"].as_u64().unwrap();
    assert!(
        evaluated > 0 && evaluated < 2 * TOPICS.len() as u64,
        "only the test split is evaluated: {evaluated}"
    );
    for key in ["recall_at_p80", "best_f1", "baseline_best_f1"] {
        let value = report[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&value), "{key} = {value}");
    }

    // --all scores every pair of a file never fitted on.
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard-loadtest"))
        .args(["semantic-eval", "--all", "--pairs"])
        .arg(&pairs)
        .arg("--model-dir")
        .arg(&model_dir)
        .arg("--cache-dir")
        .arg(directory.join("cache"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["pairs"].as_u64(), Some(2 * TOPICS.len() as u64), "every pair: {stdout}");
    std::fs::remove_dir_all(&directory).unwrap();
}
