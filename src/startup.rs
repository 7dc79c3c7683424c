//! Builds the application (binding first, so tests can use port 0) and runs it until a
//! shutdown signal, then drains: no accepted request is dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::batch::Workers;
use crate::config::Config;
use crate::http::{self, AppState};
use crate::model::LoadError;
use crate::observe::Metrics;
use crate::predlog::{self, PredictionLog, PredictionLogWriter};
use crate::registry::Registry;
use crate::serve;

/// Part of the shutdown grace period kept for the inference threads and the prediction log,
/// after the connections have had theirs.
const SHUTDOWN_RESERVE: Duration = Duration::from_secs(2);

/// Part of the grace period kept for what `main` does after the app has stopped: flushing
/// the service log (at most 500 ms) and stopping the runtime (100 ms).
pub const EXIT_RESERVE: Duration = Duration::from_secs(1);
/// What the prediction log's writer keeps of its deadline to save the lines its sink did not
/// take (a database still down) for the next start.
const SPILL_RESERVE: Duration = Duration::from_millis(300);

/// How often the logs' drops and the prediction log's health are looked at.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// How often histogram samples are folded into buckets (see [`Metrics::run_upkeep`]).
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("loading the models did not finish within reload.timeout_ms: {0}")]
    LoadStuck(crate::reading::NotDone),
    #[error("invalid metrics settings: {0}")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
    #[error(transparent)]
    PredictionLog(#[from] predlog::OpenError),
    #[error("invalid auth settings: {0}")]
    Auth(String),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

impl StartupError {
    /// 2 when the configuration names something that cannot be served as it is (a model
    /// that cannot be fetched, or is not the file its `sha256` pins), as for an invalid
    /// configuration; 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Load(LoadError::Source { .. }) => 2,
            _ => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Loading,
    Ready,
    Failed(String),
}

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    /// Set when `/metrics` has a port of its own.
    metrics_listener: Option<(TcpListener, SocketAddr)>,
    state: AppState,
    prediction_log: Option<PredictionLogWriter>,
    readiness: watch::Sender<Readiness>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let (listener, addr) = bind(SocketAddr::new(config.server.host, config.server.port)).await?;
        let metrics_listener = match config.metrics.port.filter(|_| config.metrics.enabled) {
            Some(port) => Some(bind(SocketAddr::new(config.server.host, port)).await?),
            None => None,
        };
        let metrics = Metrics::new(&config.metrics)?;
        let (log, writer) = if config.prediction_log.enabled {
            let (log, writer) = PredictionLog::open(&config.prediction_log, &metrics)?;
            (Some(log), Some(writer))
        } else {
            (None, None)
        };
        let (readiness, _) = watch::channel(Readiness::Loading);
        let auth = crate::auth::Authenticator::from_config(&config.auth).map_err(StartupError::Auth)?;
        let state = AppState::new(Arc::new(config), metrics, log).with_auth(auth);
        Ok(Self { listener, addr, metrics_listener, state, prediction_log: writer, readiness })
    }

    /// The bound address, with the real port when the config asked for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served when `metrics.port` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(_, addr)| *addr)
    }

    /// The shared state handlers see (tests reach the loaded models through it).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    pub fn readiness(&self) -> watch::Receiver<Readiness> {
        self.readiness.subscribe()
    }

    /// Serves at once (`/health` answers, `/ready` says 503), loads and warms up the models,
    /// then serves predictions until `shutdown` resolves; then finishes what was accepted.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let started = Instant::now();
        let Self { listener, addr, metrics_listener, state, prediction_log, readiness } = self;
        let config = state.config.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });

        let limits = connection_limits(&config.server);
        let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
        let draining = {
            let (state, stop_rx) = (state.clone(), stop_rx.clone());
            async move {
                stopped(stop_rx).await;
                // `/ready` says 503 before the listener stops accepting.
                state.set_draining();
                state.metrics().set_ready(false);
                notify_service_manager(&[sd_notify::NotifyState::Stopping]);
            }
        };
        // Connections get the grace period less what draining the queue and the log may need
        // after them, so that the whole shutdown stays within it.
        let connections_grace = grace.saturating_sub(SHUTDOWN_RESERVE).max(grace / 2);
        // gRPC on the same port: one listener, told apart by content type (see `grpc`).
        let router = crate::grpc::alongside(http::router(state.clone()), state.clone());
        let server = tokio::spawn(serve::serve(listener, router, limits, draining, connections_grace));
        tracing::info!(%addr, max_connections = limits.max_connections, "listening");
        match state.auth() {
            Some(auth) => tracing::info!(credentials = %auth.describe(), "authentication on"),
            None => tracing::warn!("authentication is off: every route is open"),
        }
        // Scraped until the very end, so that the last scrape sees the drain.
        let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics_server = metrics_listener.map(|(listener, addr)| {
            tracing::info!(%addr, "serving /metrics");
            if state.auth().is_some() && config.metrics.token.is_none() {
                tracing::warn!(
                    %addr,
                    "metrics.port serves /metrics without a credential: set INFERD_METRICS_TOKEN, or keep the port private"
                );
            }
            let stop = async move {
                let _ = metrics_stopped.await;
            };
            tokio::spawn(serve::serve(
                listener,
                http::metrics_router(state.clone()),
                limits,
                stop,
                Duration::from_secs(1),
            ))
        });
        let metrics = state.metrics().clone();
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(METRICS_UPKEEP);
            loop {
                tick.tick().await;
                metrics.run_upkeep();
            }
        });
        let watch_logs = tokio::spawn(watch_logs(state.clone()));

        tokio::select! {
            loaded = load(&state, config.clone()) => match loaded {
                Ok(()) => {}
                Err(e) => {
                    let _ = readiness.send(Readiness::Failed(e.to_string()));
                    server.abort();
                    return Err(e);
                }
            },
            () = stopped(stop_rx.clone()) => {}
        }
        // Subscribed before `ready` is said: a SIGHUP sent as soon as it is must not be lost.
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        if state.loaded().is_some() {
            let _ = readiness.send(Readiness::Ready);
            state.metrics().set_ready(true);
            tracing::info!(ms = started.elapsed().as_millis() as u64, "ready");
            notify_service_manager(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("serving")]);
        }
        let reloads = tokio::spawn(reload_on_hangup(state.clone(), hangup));
        let watch =
            config.reload.watch.then(|| tokio::spawn(crate::lifecycle::watch::watch(state.lifecycle().clone())));

        stopped(stop_rx).await;
        // What `main` does after this returns must fit in the grace period as well.
        let deadline = Instant::now() + grace.saturating_sub(EXIT_RESERVE).max(grace / 2);
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "shutting down: no new connections, finishing accepted requests"
        );
        match server.await {
            Ok(0) => {}
            Ok(open) => tracing::warn!(connections = open, "grace period over: closing connections still open"),
            Err(join) => tracing::error!(%join, "server task failed"),
        }
        // A reload in progress (it sees the drain and swaps nothing in) is waited for within
        // the grace period, so that it does not outlive the registry it would replace.
        let remaining = deadline.saturating_duration_since(Instant::now());
        state.lifecycle().quiesce(remaining).await;
        let workers = state.loaded().map(|registry| registry.close()).unwrap_or_default();
        let join = tokio::task::spawn_blocking(move || workers.into_iter().for_each(Workers::join));
        if tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), join).await.is_err() {
            tracing::warn!("grace period over: inference threads still running are abandoned");
        }
        // Every served request has queued its lines by now; the writer drains them, then exits.
        if let (Some(log), Some(writer)) = (state.prediction_log(), prediction_log) {
            let flushed = async {
                log.close(deadline.checked_sub(SPILL_RESERVE).unwrap_or(deadline)).await;
                let _ = tokio::task::spawn_blocking(move || writer.join()).await;
            };
            if tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), flushed).await.is_err() {
                // A hung disk: the writer thread is abandoned with what it holds, which is
                // counted and said (stderr too, as the service log may be what hangs).
                let lines = log.pending_lines();
                log.abandoned(lines);
                tracing::error!(
                    lines,
                    "the prediction log was not flushed within the grace period: lines left unwritten"
                );
                crate::telemetry::say_on_stderr(format!(
                    "inferd: {lines} prediction log line(s) could not be written within the grace period (the log's disk is not responding)\n"
                ));
            }
        }
        watch_logs.abort();
        upkeep.abort();
        reloads.abort();
        if let Some(watch) = watch {
            watch.abort();
        }
        let _ = metrics_stop.send(());
        if let Some(server) = metrics_server {
            let _ = server.await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The configured connection limits, the cap lowered to what the open-files limit allows
/// (keeping room for model files, logs and the metrics listener).
fn connection_limits(server: &crate::config::ServerConfig) -> serve::Limits {
    const RESERVED_FDS: u64 = 128;
    let fds = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(1024);
    let allowed = fds.saturating_sub(RESERVED_FDS).max(1) as usize;
    if server.max_connections > allowed {
        tracing::warn!(
            configured = server.max_connections,
            allowed,
            open_files_limit = fds,
            "server.max_connections lowered to fit the open-files limit"
        );
    }
    serve::Limits {
        header_read_timeout: server.header_read_timeout(),
        max_connections: server.max_connections.min(allowed),
        body_limit_bytes: server.body_limit_bytes,
        write_timeout: Duration::from_millis(server.write_timeout_ms),
        max_header_bytes: server.max_header_bytes,
        drain_gate: server.drain_gate,
    }
}

/// Raises the soft open-files limit to the hard one: each connection is a file descriptor, and
/// the usual soft limit (1024) would turn clients away long before the machine is busy.
pub fn raise_open_files_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| StartupError::Bind { addr, source })?;
    let addr = listener.local_addr().map_err(|source| StartupError::Bind { addr, source })?;
    Ok((listener, addr))
}

/// Loads the models off the runtime, within `reload.timeout_ms` (a model on a stuck mount
/// fails the start, naming the file, instead of hanging it).
async fn load(state: &AppState, config: Arc<Config>) -> Result<(), StartupError> {
    let metrics = state.metrics().clone();
    let within = Duration::from_millis(config.reload.timeout_ms);
    let registry = crate::reading::off_runtime(within, move || Registry::load(&config, &metrics))
        .await
        .map_err(StartupError::LoadStuck)??;
    state.lifecycle().publish(registry);
    Ok(())
}

/// Every [`WATCH_EVERY`]: the service logs' drops (a line saying how many, and their metric),
/// and the prediction log's writer, stalled or not (its metrics, and a line when that changes).
async fn watch_logs(state: AppState) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tick.tick().await;
        crate::telemetry::report_drops();
        for (log, total) in crate::telemetry::dropped_lines() {
            state.metrics().log_lines_dropped(log, total);
        }
        if crate::observe::trace::enabled() {
            state.metrics().trace_spans_dropped(crate::observe::trace::dropped_spans());
        }
        let Some(log) = state.prediction_log() else { continue };
        let check = log.watch();
        state.metrics().prediction_log_stalled(check.stalled, check.changed);
        match (check.changed, check.stalled) {
            (true, true) => tracing::error!(
                stall_ms = state.config.prediction_log.stall_ms,
                pending_lines = log.pending_lines(),
                "the prediction log's writer is stuck (a hung disk?): /ready answers 503 until it writes again"
            ),
            (true, false) => tracing::info!("the prediction log's writer is writing again"),
            _ => {}
        }
    }
}

/// Tells systemd (`Type=notify`) that the service is ready or stopping; nothing happens when
/// `NOTIFY_SOCKET` is unset, as everywhere but under systemd.
fn notify_service_manager(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens after it sent `true`.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what PaaS platforms, Docker and systemd send).
/// SIGHUP, which would otherwise end the process, is caught here too: once the models are
/// loaded it asks for a reload (see [`reload_on_hangup`]); before, it is ignored. Handlers are
/// installed when this is called, not polled.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).expect("cannot install the SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("cannot install the SIGTERM handler");
    // tokio keeps a handler installed for the life of the process once a stream asked for it.
    drop(signal(SignalKind::hangup()).expect("cannot install the SIGHUP handler"));
    async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    }
}

/// Each SIGHUP reloads the configuration (as `POST /admin/reload` does); the outcome is logged.
async fn reload_on_hangup(state: AppState, hangup: Option<tokio::signal::unix::Signal>) {
    let Some(mut hangup) = hangup else { return };
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading the configuration");
        // Both outcomes are logged by `reload` itself.
        let _ = state.lifecycle().reload("sighup").await;
    }
}
