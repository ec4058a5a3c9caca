//! Throughput and latency of the `Embedder` with the local MiniLM model: `--concurrency` callers
//! embed the first `--sentences` questions of `qqp-dev.jsonl` (field `a`) through the actor, each
//! caller one text at a time, and the run prints sentences/s and per-call p50/p99.
//!
//! ```sh
//! scripts/fetch-model
//! cargo run --release -p switchyard-actors --example embed-bench -- --sentences 2000 --concurrency 32
//! ```
//!
//! Options: `--single-pass` (one forward pass per batch, no token budget), `--max-padding F`
//! (cut passes by length spread: a bound on padding, a fraction of real tokens), `--max-batch N`,
//! `--max-wait-ms N`, `--max-in-flight N`, `--passes N` (forward passes at once, each on its own
//! thread pool; also sets `--max-in-flight` unless given), `--threads-per-pass N`, `--weights
//! f32|int8` (the dense layers' weight format; default the embedder's), `--data PATH`,
//! `--model-dir PATH`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use switchyard_actors::embed::{
    BackendSettings, BucketSettings, DEFAULT_MODEL_DIR, EmbedderHandle, EmbedderSettings, MODEL_DIR_ENV, WeightFormat,
};

/// The command line.
struct Options {
    sentences: usize,
    concurrency: usize,
    single_pass: bool,
    max_padding: Option<f32>,
    max_batch: Option<usize>,
    max_wait: Option<Duration>,
    max_in_flight: Option<usize>,
    passes: Option<usize>,
    threads_per_pass: Option<usize>,
    weights: Option<WeightFormat>,
    data: PathBuf,
    model_dir: PathBuf,
}

fn parse_options() -> anyhow::Result<Options> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut options = Options {
        sentences: 2000,
        concurrency: 32,
        single_pass: false,
        max_padding: None,
        max_batch: None,
        max_wait: None,
        max_in_flight: None,
        passes: None,
        threads_per_pass: None,
        weights: None,
        data: root.join("../shared/data/qqp-dev.jsonl"),
        model_dir: std::env::var_os(MODEL_DIR_ENV).map_or_else(|| root.join(DEFAULT_MODEL_DIR), PathBuf::from),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--sentences" => options.sentences = value()?.parse().context("--sentences")?,
            "--concurrency" => options.concurrency = value()?.parse().context("--concurrency")?,
            "--single-pass" => options.single_pass = true,
            "--max-padding" => options.max_padding = Some(value()?.parse().context("--max-padding")?),
            "--max-batch" => options.max_batch = Some(value()?.parse().context("--max-batch")?),
            "--max-wait-ms" => options.max_wait = Some(Duration::from_millis(value()?.parse().context("--max-wait-ms")?)),
            "--max-in-flight" => options.max_in_flight = Some(value()?.parse().context("--max-in-flight")?),
            "--passes" => options.passes = Some(value()?.parse().context("--passes")?),
            "--threads-per-pass" => options.threads_per_pass = Some(value()?.parse().context("--threads-per-pass")?),
            "--weights" => options.weights = Some(value()?.parse().map_err(anyhow::Error::msg).context("--weights")?),
            "--data" => options.data = value()?.into(),
            "--model-dir" => options.model_dir = value()?.into(),
            other => bail!("unknown option {other}"),
        }
    }
    if options.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    Ok(options)
}

/// The first `count` questions (field `a`) of a QQP JSON-lines file.
fn read_sentences(path: &PathBuf, count: usize) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
    let mut sentences = Vec::with_capacity(count);
    for line in text.lines().filter(|line| !line.trim().is_empty()).take(count) {
        let row: serde_json::Value = serde_json::from_str(line).context("failed to parse a QQP line")?;
        sentences.push(row["a"].as_str().context("a QQP line without a string field \"a\"")?.to_owned());
    }
    Ok(sentences)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).saturating_sub(1).min(sorted.len().saturating_sub(1));
    sorted.get(index).copied().unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let options = parse_options()?;
    let sentences = Arc::new(read_sentences(&options.data, options.sentences)?);
    let mut settings = EmbedderSettings::local(&options.model_dir);
    if let BackendSettings::Local(local) = &mut settings.backend {
        if options.single_pass {
            local.buckets = BucketSettings::single_pass();
        }
        if let Some(max_padding) = options.max_padding {
            local.buckets.max_padding = max_padding;
        }
        if let Some(passes) = options.passes {
            local.passes = passes;
            settings.batch.max_in_flight = passes;
        }
        if let Some(threads_per_pass) = options.threads_per_pass {
            local.threads_per_pass = threads_per_pass;
        }
        if let Some(weights) = options.weights {
            local.weights = weights;
        }
    }
    if let Some(max_batch) = options.max_batch {
        settings.batch.max_batch = max_batch;
    }
    if let Some(max_wait) = options.max_wait {
        settings.batch.max_wait = max_wait;
    }
    if let Some(max_in_flight) = options.max_in_flight {
        settings.batch.max_in_flight = max_in_flight;
    }
    let batch = settings.batch;
    let (passes, threads_per_pass, weights) = match &settings.backend {
        BackendSettings::Local(local) => (local.passes, local.threads_per_pass, local.weights.name()),
        BackendSettings::Remote(_) => (0, 0, "remote"),
    };
    let (embedder, _cell) = EmbedderHandle::start(settings).await?;
    for sentence in sentences.iter().take(8) {
        embedder.embed(sentence.clone()).await?;
    }

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..options.concurrency)
        .map(|_| {
            let (embedder, sentences, next) = (embedder.clone(), Arc::clone(&sentences), Arc::clone(&next));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(sentence) = sentences.get(index) else { break };
                    let call = Instant::now();
                    embedder.embed(sentence.clone()).await?;
                    latencies.push(call.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(sentences.len());
    for worker in workers {
        latencies.extend(worker.await.context("a caller panicked")??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let throughput = latencies.len() as f64 / elapsed.as_secs_f64();
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    println!(
        "{{\"sentences\":{},\"concurrency\":{},\"buckets\":{},\"max_batch\":{},\"max_wait_ms\":{},\"max_in_flight\":{},\"passes\":{},\"threads_per_pass\":{},\"weights\":\"{}\",\"seconds\":{:.2},\"sentences_per_s\":{:.1},\"p50_ms\":{:.1},\"p99_ms\":{:.1}}}",
        latencies.len(),
        options.concurrency,
        !options.single_pass,
        batch.max_batch,
        batch.max_wait.as_millis(),
        batch.max_in_flight,
        passes,
        threads_per_pass,
        weights,
        elapsed.as_secs_f64(),
        throughput,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
    );
    Ok(())
}
