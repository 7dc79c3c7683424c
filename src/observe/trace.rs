//! OpenTelemetry traces: off unless an OTLP endpoint is set in the environment
//! (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`).
//!
//! Off, nothing here runs on the request path but [`enabled`], one atomic load: no span, no
//! context, no header parsed. On, each HTTP request gets a server span (a child of the caller's
//! W3C `traceparent`), and the predict service adds child spans for reading the body, decoding,
//! queue wait, inference and the prediction-log hand-off. The OpenTelemetry API is used directly
//! rather than through `tracing-opentelemetry`: the service log has no span per request (see
//! [`super::scope`]), and a tracing span per request is the cost that was taken out.
//!
//! Spans are exported in batches by a thread of their own through OTLP/HTTP (protobuf), from a
//! bounded queue: a span that finds the queue full is dropped and counted
//! ([`dropped_spans`], the metric `inferd_trace_spans_dropped_total`), never waited for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;

use super::RateLimited;

/// The tracer, set once per process when tracing is on (like the service log's subscriber).
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Spans dropped because the export queue was full, since the process started.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Whether traces are being recorded and exported.
#[inline]
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// Spans dropped so far because the export queue was full.
pub fn dropped_spans() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The environment variable that says where traces go, if any is set (and not empty).
fn endpoint_set() -> bool {
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

/// A positive integer from the environment (the batch processor's `OTEL_BSP_*`), else `default`.
fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).filter(|&n| n > 0).unwrap_or(default)
}

/// The exporter and its thread, for [`Tracing::finish`].
pub struct Tracing {
    provider: SdkTracerProvider,
}

/// Starts exporting traces when the environment asks for it (`None` when it does not, when
/// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`, or when a second app in a test
/// process finds it already started). A broken setting is an error, reported at start.
pub fn init() -> Result<Option<Tracing>, String> {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim().eq_ignore_ascii_case("none"));
    if disabled || !endpoint_set() || enabled() {
        return Ok(None);
    }
    // The exporter reads the endpoint, headers and timeout (`OTEL_EXPORTER_OTLP_*`) itself.
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("cannot set up the OTLP trace exporter: {e}"))?;
    // `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` are read by the resource's detectors;
    // the name falls back to `inferd` rather than `unknown_service`.
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none_or(|v| v.is_empty()) {
        resource = resource.with_service_name("inferd");
    }
    let resource = resource.build();
    exporter.set_resource(&resource);
    let batch = Batch::start(
        exporter,
        BatchSettings {
            queue: env_number("OTEL_BSP_MAX_QUEUE_SIZE", 2048) as usize,
            batch: env_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512) as usize,
            delay: Duration::from_millis(env_number("OTEL_BSP_SCHEDULE_DELAY", 5000)),
        },
    )
    .map_err(|e| format!("cannot start the trace exporter's thread: {e}"))?;
    // The sampler is the SDK's default configuration's: `OTEL_TRACES_SAMPLER` and
    // `OTEL_TRACES_SAMPLER_ARG`, parent-based and always on when unset.
    let provider = SdkTracerProvider::builder().with_resource(resource).with_span_processor(batch).build();
    if TRACER.set(provider.tracer("inferd")).is_err() {
        return Ok(None);
    }
    Ok(Some(Tracing { provider }))
}

impl Tracing {
    /// Exports what is queued, waiting at most `within`; returns whether it all went.
    pub fn finish(self, within: Duration) -> bool {
        self.provider.shutdown_with_timeout(within).is_ok()
    }
}

/// A request's headers as the W3C propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The server span of one HTTP request, in the context its handlers run in. Only made when
/// tracing is [`enabled`].
pub struct ServerSpan {
    cx: Context,
}

impl ServerSpan {
    /// Starts the span for a request, a child of the caller's `traceparent` (and `tracestate`)
    /// when the headers carry a valid one.
    pub fn start(method: &'static str, path: &str, headers: &HeaderMap) -> Option<Self> {
        let tracer = TRACER.get()?;
        let parent = match headers.contains_key("traceparent") {
            true => TraceContextPropagator::new().extract(&Headers(headers)),
            false => Context::new(),
        };
        let span = tracer
            .span_builder(method)
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("http.request.method", method), KeyValue::new("url.path", path.to_owned())])
            .start_with_context(tracer, &parent);
        Some(Self { cx: parent.with_span(span) })
    }

    /// The context to run the request's future in (see `opentelemetry::context::FutureExt`).
    pub fn context(&self) -> Context {
        self.cx.clone()
    }

    /// The trace id as 32 hex digits (whether or not the trace is sampled), for the logs.
    pub fn trace_id(&self) -> Option<String> {
        let span = self.cx.span();
        let context = span.span_context();
        context.is_valid().then(|| context.trace_id().to_string())
    }

    /// Names the span after its route, records the answer and ends it.
    pub fn end(self, answer: Answer<'_>) {
        let span = self.cx.span();
        span.update_name(format!("{} {}", answer.method, answer.route));
        let mut attributes = vec![
            KeyValue::new("http.route", answer.route.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(answer.status)),
        ];
        if let Some(model) = answer.model {
            attributes.push(KeyValue::new("inferd.model", model.to_owned()));
        }
        if let Some(version) = answer.version {
            attributes.push(KeyValue::new("inferd.version", version.to_owned()));
        }
        if let Some(rows) = answer.rows {
            attributes.push(KeyValue::new("inferd.rows", rows as i64));
        }
        span.set_attributes(attributes);
        // Server spans are errors for 5xx only: a 4xx is the client's (OpenTelemetry's HTTP
        // conventions).
        if answer.status >= 500 {
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// What a request was answered, for its server span.
pub struct Answer<'a> {
    pub method: &'static str,
    pub route: &'a str,
    pub status: u16,
    pub model: Option<&'a str>,
    pub version: Option<&'a str>,
    pub rows: Option<usize>,
}

/// A child span of the current request's, ended when dropped; nothing when tracing is off or
/// no request span is current.
pub struct Child(Option<Box<Span>>);

impl Child {
    pub fn start(name: &'static str) -> Self {
        // Boxed: the span lives across awaits, and an unboxed `Option<Span>` would grow the
        // request's future by its size whether traces are on or off.
        Self(current().map(|(tracer, cx)| Box::new(tracer.start_with_context(name, &cx))))
    }

    /// A span for something already measured (the batcher's queue wait and inference).
    pub fn between(name: &'static str, start: SystemTime, end: SystemTime) {
        if let Some((tracer, cx)) = current() {
            tracer.span_builder(name).with_start_time(start).start_with_context(tracer, &cx).end_with_timestamp(end);
        }
    }

    /// Marks the span as failed, with `message`.
    pub fn fail(&mut self, message: impl FnOnce() -> String) {
        if let Some(span) = &mut self.0 {
            span.set_status(Status::error(message()));
        }
    }
}

/// The tracer and the current context, when a request's recording span is current.
fn current() -> Option<(&'static SdkTracer, Context)> {
    let tracer = TRACER.get()?;
    let cx = Context::current();
    cx.span().is_recording().then_some((tracer, cx))
}

/// The current request's trace id, when tracing is on and a request span is current.
pub fn current_trace_id() -> Option<String> {
    TRACER.get()?;
    let cx = Context::current();
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| context.trace_id().to_string())
}

/// How spans are batched (the `OTEL_BSP_*` settings).
struct BatchSettings {
    queue: usize,
    batch: usize,
    delay: Duration,
}

/// What the export thread is asked, besides exporting spans.
enum Control {
    Flush(mpsc::Sender<OTelSdkResult>),
    Shutdown(mpsc::Sender<OTelSdkResult>),
}

/// A batch span processor whose queue drops (and counts) spans when full: the SDK's own drops
/// them too, but counts them only in a log line at shutdown.
#[derive(Debug)]
struct Batch {
    spans: SyncSender<SpanData>,
    control: Mutex<mpsc::Sender<Control>>,
}

/// How often the export thread looks at its controls while spans are not arriving.
const TICK: Duration = Duration::from_millis(50);

impl Batch {
    fn start<E: SpanExporter + 'static>(exporter: E, settings: BatchSettings) -> std::io::Result<Self> {
        let (spans, queued) = mpsc::sync_channel(settings.queue);
        let (control, controls) = mpsc::channel();
        std::thread::Builder::new()
            .name("trace-export".into())
            .spawn(move || export_loop(exporter, settings, queued, controls))?;
        Ok(Self { spans, control: Mutex::new(control) })
    }

    fn ask(&self, control: impl FnOnce(mpsc::Sender<OTelSdkResult>) -> Control, within: Duration) -> OTelSdkResult {
        let (reply, replied) = mpsc::channel();
        let sent = self.control.lock().unwrap_or_else(|p| p.into_inner()).send(control(reply));
        if sent.is_err() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        replied.recv_timeout(within).unwrap_or(Err(OTelSdkError::Timeout(within)))
    }
}

impl SpanProcessor for Batch {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.spans.try_send(span) {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Control::Flush, Duration::from_secs(5))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.ask(Control::Shutdown, timeout)
    }
}

/// The export thread: sends a batch when it is full or `delay` after the last one, and what
/// is queued when flushed or shut down. The exporter's HTTP client is a blocking one, so its
/// futures complete on this thread.
fn export_loop<E: SpanExporter>(
    mut exporter: E,
    settings: BatchSettings,
    queued: Receiver<SpanData>,
    controls: Receiver<Control>,
) {
    let mut batch = Vec::with_capacity(settings.batch);
    let mut next = Instant::now() + settings.delay;
    let failures = std::cell::RefCell::new(RateLimited::new(Duration::from_secs(10)));
    let export = |exporter: &E, batch: &mut Vec<SpanData>| -> OTelSdkResult {
        if batch.is_empty() {
            return Ok(());
        }
        let spans = std::mem::replace(batch, Vec::with_capacity(settings.batch));
        let (n, result) = (spans.len(), futures::executor::block_on(exporter.export(spans)));
        if let Err(e) = &result {
            // The SDK's own logs are off (its `internal-logs` feature): a collector that is
            // down is said here, at most every 10 s.
            if let Some(suppressed) = failures.borrow_mut().check() {
                tracing::warn!(error = %e, spans = n, suppressed, "trace spans not exported");
            }
        }
        result
    };
    loop {
        let wait = next.saturating_duration_since(Instant::now()).min(TICK);
        match queued.recv_timeout(wait) {
            Ok(span) => batch.push(span),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = export(&exporter, &mut batch);
                let _ = exporter.shutdown();
                return;
            }
        }
        if batch.len() >= settings.batch || Instant::now() >= next {
            // A failed export is not retried, so that a collector that is down cannot grow
            // the queue.
            let _ = export(&exporter, &mut batch);
            next = Instant::now() + settings.delay;
        }
        match controls.try_recv() {
            Ok(Control::Flush(reply)) => {
                let result = drain(&queued, &mut batch, settings.batch, |b| export(&exporter, b));
                let _ = reply.send(result);
            }
            Ok(Control::Shutdown(reply)) => {
                let result = drain(&queued, &mut batch, settings.batch, |b| export(&exporter, b));
                let _ = exporter.shutdown();
                let _ = reply.send(result);
                return;
            }
            Err(_) => {}
        }
    }
}

/// Exports everything queued now, a batch at a time.
fn drain(
    queued: &Receiver<SpanData>,
    batch: &mut Vec<SpanData>,
    size: usize,
    mut export: impl FnMut(&mut Vec<SpanData>) -> OTelSdkResult,
) -> OTelSdkResult {
    let mut result = Ok(());
    for span in queued.try_iter() {
        batch.push(span);
        if batch.len() >= size {
            result = result.and(export(batch));
        }
    }
    result.and(export(batch))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    use super::*;

    /// Counts what it exports; its first export waits until the test lets it go.
    #[derive(Debug)]
    struct Held {
        exported: Arc<AtomicUsize>,
        started: Mutex<Option<mpsc::Sender<()>>>,
        release: Mutex<Option<mpsc::Receiver<()>>>,
    }

    impl SpanExporter for Held {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if let Some(started) = self.started.lock().unwrap().take() {
                started.send(()).unwrap();
                let release = self.release.lock().unwrap().take().unwrap();
                release.recv().unwrap();
            }
            self.exported.fetch_add(batch.len(), Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_spans_without_waiting() {
        let exported = Arc::new(AtomicUsize::new(0));
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let exporter = Held {
            exported: exported.clone(),
            started: Mutex::new(Some(started_tx)),
            release: Mutex::new(Some(release_rx)),
        };
        let settings = BatchSettings { queue: 2, batch: 1, delay: Duration::from_secs(3600) };
        let provider =
            SdkTracerProvider::builder().with_span_processor(Batch::start(exporter, settings).unwrap()).build();
        let tracer = provider.tracer("test");
        tracer.start("first").end();
        // The export thread is now held in its first export, with the queue empty.
        started.recv_timeout(Duration::from_secs(10)).unwrap();
        let before = dropped_spans();
        for _ in 0..4 {
            tracer.start("more").end();
        }
        assert_eq!(dropped_spans() - before, 2, "two queued, two dropped");
        release.send(()).unwrap();
        assert!(provider.shutdown_with_timeout(Duration::from_secs(10)).is_ok());
        assert_eq!(exported.load(Ordering::SeqCst), 3, "the first and the two queued, flushed at shutdown");
    }
}
