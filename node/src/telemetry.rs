//! Logs and traces: JSON (or text) logs carrying the trace id, and OTLP/gRPC trace export when
//! `telemetry.otlp_endpoint` is set. Incoming W3C `traceparent` headers continue the caller's trace.

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{TraceContextExt as _, TraceId, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogFormat, TelemetryConfig};
use crate::env;

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] flushes spans not yet exported.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Flushes and stops trace export.
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("failed to flush traces: {error}");
        }
    }
}

/// Installs the global subscriber. The OpenTelemetry layer is installed only when traces are
/// exported; without it, log lines still carry a trace id (the caller's, or a fresh one) and the
/// hot path does not pay for span bookkeeping nobody reads.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    use anyhow::Context as _;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(config.service_name.clone()).build();
    let mut builder = SdkTracerProvider::builder().with_sampler(sampler).with_resource(resource);
    if let Some(endpoint) = &config.otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .with_context(|| format!("failed to build the OTLP exporter for {endpoint}"))?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let otel = config.otlp_endpoint.is_some().then(|| tracing_opentelemetry::layer().with_tracer(provider.tracer("switchyard")));
    let filter = std::env::var(env::LOG_FILTER)
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(&config.log_level));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    match config.log_format {
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_current_span(false).with_span_list(true).with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).try_init(),
    }
    .context("failed to install the log subscriber")?;
    Ok(Telemetry { provider })
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Makes `span` continue the trace named by `headers`' `traceparent`, if any, and records the
/// trace id on it (field `trace_id`) so every log line inside carries it. Without trace export
/// the id is the caller's, or a fresh random one.
pub fn adopt_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = headers.contains_key("traceparent").then(|| {
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
    });
    if let Some(parent) = &parent {
        let _ignored = span.set_parent(parent.clone());
    }
    let exported = span.context().span().span_context().trace_id();
    let trace_id = if exported != TraceId::INVALID {
        exported
    } else {
        parent
            .map(|parent| parent.span().span_context().trace_id())
            .filter(|trace_id| *trace_id != TraceId::INVALID)
            .unwrap_or_else(|| TraceId::from_bytes(rand::random::<u128>().to_be_bytes()))
    };
    span.record("trace_id", tracing::field::display(trace_id));
}
