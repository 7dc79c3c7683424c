//! The HTTP accept loop (HTTP/1.1, and HTTP/2 cleartext by prior knowledge on the same port,
//! told apart by the connection's first bytes), in place of `axum::serve`, for what a public port
//! needs and axum's loop does not offer: a cap on open connections and on what each holds in its
//! read buffer, a header-read (and keep-alive idle, HTTP/2 included) timeout, accept errors that
//! are survived and logged at most once a second, and a shutdown that first answers the
//! connections already waiting in the kernel's accept queue.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use std::convert::Infallible;

use axum::extract::{ConnectInfo, Request};
use axum::routing::future::RouteFuture;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::config::DrainGate;
use crate::observe::RateLimited;

/// What each connection is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a request's headers, counted from the connection's start or
    /// the end of the previous response: it is also how long an idle keep-alive connection
    /// lives, and an HTTP/2 connection with no request in progress. An HTTP/2 client that has
    /// sent nothing for this long is pinged.
    pub header_read_timeout: Duration,
    /// Connections open at once; beyond it new ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// A client that takes none of its response for this long is disconnected, so that one
    /// that never reads cannot hold a connection and the response's memory; so is an HTTP/2
    /// client that does not answer a ping in this time.
    pub write_timeout: Duration,
    /// Largest request head; also the most a connection's read buffer holds. hyper's default
    /// lets the buffer grow to 400 KiB while a large body streams through and keeps it for the
    /// connection's life: 800 keep-alive uploaders then held 160 MB outside the body budget.
    pub max_header_bytes: usize,
    /// `server.body_limit_bytes`: an HTTP/2 stream's flow-control window is no larger.
    pub body_limit_bytes: usize,
    /// How the listener stops new handshakes at shutdown, before its accept queue is drained.
    pub drain_gate: DrainGate,
}

/// Serves `router` on `listener` until `stop` resolves, then answers the connections already
/// accepted by the kernel, lets every open connection finish its request, and returns once all
/// are closed or `grace` has passed. Returns the connections still open at that point.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
    grace: Duration,
) -> usize {
    let server = Server::new(router, limits);
    let mut accept_errors = RateLimited::new(Duration::from_secs(1));
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut stop => break,
            permit = server.slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => server.spawn(stream, peer, permit),
                // A client that gave up before it was accepted: routine, the next one can go on.
                Err(error) if is_connection_error(&error) => {}
                Err(error) => {
                    if let Some(suppressed) = accept_errors.check() {
                        tracing::error!(%error, suppressed, "cannot accept connections");
                    }
                    // Out of file descriptors, say: let connections close before trying again.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    server.drain(listener, limits.drain_gate).await;
    server.finish(grace).await
}

struct Server {
    protocols: Arc<Protocols>,
    slots: Arc<Semaphore>,
    write_timeout: Duration,
    /// How long a client has to send its first bytes, and an HTTP/2 connection may stay idle.
    header_read_timeout: Duration,
    /// Turns true when the server stops: each connection then finishes its request and closes.
    stopping: watch::Sender<bool>,
    /// Connections being served, those drained at shutdown included, and a wake-up as each ends.
    open: Arc<(AtomicUsize, Notify)>,
}

/// What serves a connection once its protocol is known.
struct Protocols {
    router: Router,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// `server.max_header_bytes`, which HTTP/2 requests are checked against in [`WithPeer`].
    max_header_bytes: usize,
}

/// Once stopping, a connection is closed when its client has been quiet this long (responses
/// meanwhile say `connection: close`): a keep-alive client may have sent its next request
/// before it heard of the shutdown, and is owed an answer.
const QUIET_BEFORE_CLOSE: Duration = Duration::from_millis(250);
/// Once stopping, how long a connection that has sent nothing yet is given to send its request
/// (its client connected before the listener closed).
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);
/// With the listener shut, its queue is drained until no connection has landed for this long:
/// a handshake under way when it was shut completes meanwhile.
const SHUT_QUIET: Duration = Duration::from_millis(20);
/// With no way to shut it, the listener keeps accepting (responses say `connection: close`)
/// until no client has connected for this long, so that clients which have stopped coming
/// are all answered before it closes...
const OPEN_QUIET: Duration = Duration::from_millis(100);
/// ...or for this long at most, under clients that keep connecting.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);
/// hyper refuses a smaller read buffer.
const MIN_READ_BUFFER: usize = 8192;

/// The HTTP/2 connection preface (RFC 9113, section 3.4), with which a client that speaks
/// HTTP/2 from its first byte (prior knowledge, as gRPC clients do over cleartext) opens.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Requests one HTTP/2 connection may have in flight: each holds a stream window of unread
/// body and a request's memory, so a connection holds at most this many of them.
const H2_MAX_STREAMS: u32 = 32;
/// The protocol's default and least frame size, stated: a larger one only lets a client make
/// the server buffer more before it can check anything.
const H2_MAX_FRAME: u32 = 16 * 1024;
/// A stream's flow-control window, at most: what a client may send on one request before the
/// server has read it. Never more than the body limit, never less than the protocol's default.
const H2_MAX_STREAM_WINDOW: u32 = 1024 * 1024;
const H2_MIN_WINDOW: u32 = 65_535;
/// Streams reset by the client before the server saw them, allowed at once: hyper's own
/// default, stated (the "rapid reset" attack opens and cancels streams without end).
const H2_PENDING_RESETS: usize = 20;
/// HTTP/2's header list limit, as a multiple of `server.max_header_bytes`. h2 answers a list
/// over its own limit with a bare 431 and a PROTOCOL_ERROR reset, which gRPC clients read as
/// UNKNOWN; so its limit is set higher, and the configured one is checked in [`WithPeer`],
/// which answers on the stream alone in each protocol's terms (see [`oversize_head`]). Beyond
/// this multiple h2's own 431 stands, and for a far larger list (four times it decoded, or a
/// field still arriving in CONTINUATION frames once the list is over) h2 tears the connection
/// down with GOAWAY: only a client that ignores the advertised limit goes there.
const H2_HEADER_ROOM: usize = 2;
/// After GOAWAY, how long a client has to acknowledge it before its connection, if it has no
/// request in progress, is dropped: hyper waits for the PING sent with GOAWAY to come back (so
/// that a call crossing it is not lost), which a client that has stopped reading never sends.
const GOAWAY_ANSWER: Duration = Duration::from_secs(1);
/// How often a connection that is closing is looked at while it still has requests in progress.
const CLOSING_CHECK: Duration = Duration::from_millis(50);

impl Server {
    fn new(router: Router, limits: Limits) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true)
            .max_buf_size(limits.max_header_bytes.max(MIN_READ_BUFFER));
        let stream_window =
            u32::try_from(limits.body_limit_bytes).unwrap_or(u32::MAX).clamp(H2_MIN_WINDOW, H2_MAX_STREAM_WINDOW);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_STREAMS)
            // Room above the configured limit, which `WithPeer` checks itself (see `H2_HEADER_ROOM`).
            .max_header_list_size(
                u32::try_from(limits.max_header_bytes.saturating_mul(H2_HEADER_ROOM)).unwrap_or(u32::MAX),
            )
            .max_frame_size(H2_MAX_FRAME)
            .initial_stream_window_size(stream_window)
            // Room for a few streams' bodies at once: the connection's whole unread input.
            .initial_connection_window_size(stream_window.saturating_mul(4))
            .max_send_buf_size(stream_window as usize)
            .max_pending_accept_reset_streams(H2_PENDING_RESETS)
            // A client that has sent nothing for the header-read timeout is pinged, and one that
            // does not answer within the write timeout is gone (a dead peer, a cable pulled): its
            // connection is closed, its requests in progress with it.
            .keep_alive_interval(limits.header_read_timeout)
            .keep_alive_timeout(limits.write_timeout);
        Self {
            protocols: Arc::new(Protocols { router, http1, http2, max_header_bytes: limits.max_header_bytes }),
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            write_timeout: limits.write_timeout,
            header_read_timeout: limits.header_read_timeout,
            stopping: watch::channel(false).0,
            open: Arc::default(),
        }
    }

    fn spawn(&self, stream: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit) {
        let _ = stream.set_nodelay(true);
        let (protocols, write_timeout, header_read_timeout) =
            (self.protocols.clone(), self.write_timeout, self.header_read_timeout);
        let mut stopping = self.stopping.subscribe();
        let open = self.open.clone();
        open.0.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            // From the accept on: an HTTP/2 connection's idle time counts from here.
            let activity = Arc::new(Activity::new());
            // A client that sends nothing in time is dropped, as hyper drops one that sends no
            // complete request head: the header-read timeout counts from the first byte.
            let protocol = tokio::select! {
                protocol = sniff(&stream, header_read_timeout) => protocol,
                () = async {
                    drop(stopping.wait_for(|stop| *stop).await);
                    tokio::time::sleep(FIRST_REQUEST_GRACE).await;
                } => None,
            };
            if let Some(protocol) = protocol {
                let io = TokioIo::new(Watched::new(stream, activity.clone(), write_timeout));
                let service = WithPeer {
                    router: protocols.router.clone(),
                    peer,
                    activity: activity.clone(),
                    max_header_bytes: protocols.max_header_bytes,
                };
                let connection = match protocol {
                    Protocol::Http1 => Connection::Http1(Box::pin(protocols.http1.serve_connection(io, service))),
                    Protocol::Http2 => Connection::Http2(Box::pin(protocols.http2.serve_connection(io, service))),
                };
                // HTTP/1.1's idle keep-alive connection is closed by hyper's header-read timeout;
                // an HTTP/2 one, which has no such timeout, here, after as long without a stream
                // (a client that sends only PINGs or SETTINGS holds no request, only a slot).
                let idle = (protocol == Protocol::Http2).then_some(header_read_timeout);
                run(connection, &activity, &mut stopping, idle).await;
            }
            drop(permit);
            open.0.fetch_sub(1, Ordering::SeqCst);
            open.1.notify_waiters();
        });
    }

    /// Shuts the listener to new handshakes, then accepts and serves every connection the
    /// kernel has already completed, so that none of them is reset when the listener closes.
    async fn drain(&self, listener: TcpListener, gate: DrainGate) {
        let shut = shut(&listener, gate);
        let quiet = if shut == Shut::Open { OPEN_QUIET } else { SHUT_QUIET };
        let limit = tokio::time::Instant::now() + DRAIN_LIMIT;
        let mut drained = 0;
        while tokio::time::Instant::now() < limit {
            let wait = (tokio::time::Instant::now() + quiet).min(limit);
            match tokio::time::timeout_at(wait, listener.accept()).await {
                Ok(Ok((stream, peer))) => {
                    self.admit(stream, shut, peer);
                    drained += 1;
                }
                Ok(Err(error)) if is_connection_error(&error) => {}
                // Quiet, or out of file descriptors: the queue is as drained as it will be.
                _ => break,
            }
        }
        // A last sweep without waiting, so that the listener closes the moment its queue was
        // last seen empty: without a shut door, a client connecting in between is reset.
        match listener.into_std() {
            Ok(listener) => {
                while let Ok((stream, peer)) = listener.accept() {
                    let stream = stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream));
                    if let Ok(stream) = stream {
                        self.admit(stream, shut, peer);
                        drained += 1;
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot sweep the accept queue"),
        }
        if drained > 0 {
            tracing::info!(connections = drained, "answered connections that were waiting to be accepted");
        }
    }

    /// Serves a connection accepted while draining, over the cap if need be: its client is
    /// already connected.
    fn admit(&self, stream: TcpStream, shut: Shut, peer: SocketAddr) {
        if shut == Shut::MinTtl {
            // Its handshake completed after the listener was shut, so it inherited the
            // listener's minimum TTL, which would drop the client's every packet.
            let _ = set_min_ttl(stream.as_raw_fd(), 0);
        }
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().expect("fresh semaphore");
        self.spawn(stream, peer, permit);
    }

    /// Asks every connection to close after its current request and waits for them, at most
    /// `grace`. Returns how many were still open then.
    async fn finish(self, grace: Duration) -> usize {
        let (open, closed) = &*self.open;
        if open.load(Ordering::SeqCst) > 0 {
            tracing::info!(
                connections = open.load(Ordering::SeqCst),
                "waiting for open connections to finish their requests"
            );
        }
        self.stopping.send_replace(true);
        let all_closed = async {
            loop {
                let next = closed.notified();
                tokio::pin!(next);
                next.as_mut().enable();
                if open.load(Ordering::SeqCst) == 0 {
                    return;
                }
                next.await;
            }
        };
        let _ = tokio::time::timeout(grace, all_closed).await;
        open.load(Ordering::SeqCst)
    }
}

/// When a connection's client last sent something, and the requests it has in progress.
struct Activity {
    opened: Instant,
    /// Milliseconds from `opened` to the last read that brought bytes; `u64::MAX` before any.
    last_read_ms: AtomicU64,
    /// Requests in progress: from their head to the end (or reset) of their response.
    answering: AtomicUsize,
    /// Milliseconds from `opened` to the end of the last response; 0 before any.
    answered_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_read_ms: AtomicU64::new(u64::MAX),
            answering: AtomicUsize::new(0),
            answered_ms: AtomicU64::new(0),
        }
    }

    /// Counts a request in progress until the mark is dropped.
    fn answering(self: &Arc<Self>) -> Answering {
        self.answering.fetch_add(1, Ordering::SeqCst);
        Answering(self.clone())
    }

    /// How long the connection has had no request in progress (since it opened, or since its
    /// last response ended); `None` while one is.
    fn idle_for(&self) -> Option<Duration> {
        if self.answering.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let answered = Duration::from_millis(self.answered_ms.load(Ordering::SeqCst));
        Some(self.opened.elapsed().saturating_sub(answered))
    }

    fn read(&self) {
        self.last_read_ms.store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long since the client last sent something; `None` if it never has.
    fn quiet_for(&self) -> Option<Duration> {
        match self.last_read_ms.load(Ordering::Relaxed) {
            u64::MAX => None,
            ms => Some(self.opened.elapsed().saturating_sub(Duration::from_millis(ms))),
        }
    }
}

/// A request in progress on a connection (see [`Activity::answering`]).
struct Answering(Arc<Activity>);

impl Drop for Answering {
    fn drop(&mut self) {
        let activity = &self.0;
        // Stamped before the count drops, so that an idle connection is never seen with an
        // older stamp.
        activity.answered_ms.store(activity.opened.elapsed().as_millis() as u64, Ordering::SeqCst);
        activity.answering.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    /// Cleartext, by prior knowledge (RFC 9113, section 3.3).
    Http2,
}

/// Which protocol a connection speaks, from its first bytes, peeked (not consumed) within
/// `timeout`; `None` when the client closed or sent too little in time.
async fn sniff(stream: &TcpStream, timeout: Duration) -> Option<Protocol> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut first)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        if first[..n] != H2_PREFACE[..n] {
            return Some(Protocol::Http1);
        }
        if n == H2_PREFACE.len() {
            return Some(Protocol::Http2);
        }
        // A preface cut short: a peek answers the same bytes at once until more arrive.
        tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(10))).await.ok()?;
    }
}

/// The router as hyper's service for one connection: each request carries the peer's address
/// (for routes that only a local client may call, see `http::admin`) and is counted in the
/// connection's [`Activity`] until its response has been sent or given up.
#[derive(Clone)]
struct WithPeer {
    router: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
    max_header_bytes: usize,
}

impl hyper::service::Service<Request<Incoming>> for WithPeer {
    type Response = hyper::Response<Tracked>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let answering = Some(self.activity.answering());
        // HTTP/1.1's head is held to the limit by hyper's read buffer (431, no body).
        if request.version() == hyper::Version::HTTP_2 {
            let size = header_list_size(&request);
            if size > self.max_header_bytes {
                let refused = oversize_head(&request, size, self.max_header_bytes);
                return Answer { routing: Err(Some(refused)), answering };
            }
        }
        request.extensions_mut().insert(ConnectInfo(self.peer));
        Answer { routing: Ok(tower::Service::call(&mut self.router.clone(), request)), answering }
    }
}

/// The size of a request's header list as HTTP/2 counts it (RFC 9113, section 6.5.2): each
/// field's name and value and 32 bytes, the pseudo-header fields included.
fn header_list_size(request: &Request<Incoming>) -> usize {
    const FIELD: usize = 32;
    let uri = request.uri();
    let pseudo = [
        Some(":method".len() + request.method().as_str().len()),
        uri.scheme_str().map(|scheme| ":scheme".len() + scheme.len()),
        uri.authority().map(|authority| ":authority".len() + authority.as_str().len()),
        uri.path_and_query().map(|path| ":path".len() + path.as_str().len()),
    ];
    let fields = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len());
    pseudo.into_iter().flatten().chain(fields).map(|size| size + FIELD).sum()
}

/// The answer to an HTTP/2 request whose header list is over `server.max_header_bytes`, on its
/// stream alone (the connection's other streams go on): a gRPC call gets RESOURCE_EXHAUSTED,
/// gRPC's code for a limit of the receiver, with a message naming it (a 431 would reach a gRPC
/// client as UNKNOWN); any other request gets 431 with no body, as over HTTP/1.1.
fn oversize_head(request: &Request<Incoming>, size: usize, limit: usize) -> axum::response::Response {
    // As `grpc::alongside` tells gRPC calls apart.
    let grpc = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        tonic::Status::resource_exhausted(format!(
            "the call's metadata is {size} bytes as HTTP/2 counts it; at most {limit} are accepted \
             (server.max_header_bytes)"
        ))
        .into_http()
    } else {
        let mut response = axum::response::Response::new(axum::body::Body::empty());
        *response.status_mut() = hyper::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        response
    }
}

/// The router's answer to one request (or [`oversize_head`]'s), handed to hyper with the
/// request's [`Answering`] mark in its body.
struct Answer {
    routing: Result<RouteFuture<Infallible>, Option<axum::response::Response>>,
    answering: Option<Answering>,
}

impl Future for Answer {
    type Output = Result<hyper::Response<Tracked>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let response = match &mut this.routing {
            Ok(routing) => match Pin::new(routing).poll(cx) {
                Poll::Ready(Ok(response)) => response,
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => return Poll::Pending,
            },
            Err(refused) => refused.take().expect("an answer is polled until it is ready, not after"),
        };
        let answering = this.answering.take();
        Poll::Ready(Ok(response.map(|body| Tracked { body, _answering: answering })))
    }
}

/// A response body that holds its request's [`Answering`] mark until hyper drops it: once the
/// response is sent, or the client has reset the stream or gone.
struct Tracked {
    body: axum::body::Body,
    _answering: Option<Answering>,
}

impl hyper::body::Body for Tracked {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

type Io = TokioIo<Watched>;

/// A connection being served, in either protocol.
enum Connection {
    Http1(Pin<Box<http1::Connection<Io, WithPeer>>>),
    Http2(Pin<Box<http2::Connection<Io, WithPeer, TokioExecutor>>>),
}

impl Connection {
    /// HTTP/1.1: closes at once if idle, else after the request in progress. HTTP/2: sends
    /// GOAWAY, takes no new streams, and closes once the streams in progress are answered.
    fn graceful_shutdown(&mut self) {
        match self {
            Self::Http1(c) => c.as_mut().graceful_shutdown(),
            Self::Http2(c) => c.as_mut().graceful_shutdown(),
        }
    }
}

impl Future for Connection {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A client that resets or times out is routine on a public port: not worth a line.
        match self.get_mut() {
            Self::Http1(c) => c.as_mut().poll(cx).map(drop),
            Self::Http2(c) => c.as_mut().poll(cx).map(drop),
        }
    }
}

/// Serves `connection` until it ends; once the server stops, lets it finish what it was sent
/// and closes it (HTTP/1.1 once its client is quiet, HTTP/2 at once with GOAWAY). With `idle`
/// (HTTP/2), it is also closed (gracefully) once it has had no request in progress for that
/// long: a call in progress, however slow, is never cut by it.
async fn run(
    mut connection: Connection,
    activity: &Activity,
    stopping: &mut watch::Receiver<bool>,
    idle: Option<Duration>,
) {
    let idle_out = async {
        let Some(idle) = idle else { return std::future::pending().await };
        loop {
            // While a request is in progress, looked at again an idle period later: the soonest
            // the connection could be idle for that long.
            let wait = match activity.idle_for() {
                Some(quiet) if quiet >= idle => return,
                Some(quiet) => idle - quiet,
                None => idle,
            };
            tokio::time::sleep(wait).await;
        }
    };
    tokio::select! {
        () = &mut connection => {}
        () = idle_out => close(connection, activity).await,
        () = async { drop(stopping.wait_for(|stop| *stop).await) } => {
            let stopped = tokio::time::Instant::now();
            // HTTP/2's GOAWAY (hyper sends it twice, a round trip apart) tells the client which
            // of its calls will be answered, so nothing is lost by sending it at once; waiting
            // for a quiet moment would wait for ever on a busy connection.
            let http1 = matches!(connection, Connection::Http1(_));
            let finished = http1 && loop {
                let settled = match activity.quiet_for() {
                    Some(quiet) => quiet >= QUIET_BEFORE_CLOSE,
                    None => stopped.elapsed() >= FIRST_REQUEST_GRACE,
                };
                if settled {
                    break false;
                }
                tokio::select! {
                    () = &mut connection => break true,
                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            };
            if !finished {
                close(connection, activity).await;
            }
        }
    }
}

/// Closes `connection` gracefully: HTTP/1.1 after the request in progress; HTTP/2 with GOAWAY,
/// once the calls in progress are answered and the client has acknowledged (hyper waits for
/// the PING it sends with GOAWAY). A client that never acknowledges would hold the connection
/// for ever: once [`GOAWAY_ANSWER`] has passed, it is dropped as soon as it has no request in
/// progress.
async fn close(mut connection: Connection, activity: &Activity) {
    connection.graceful_shutdown();
    if matches!(connection, Connection::Http1(_)) {
        return connection.await;
    }
    if tokio::time::timeout(GOAWAY_ANSWER, &mut connection).await.is_ok() {
        return;
    }
    while activity.idle_for().is_none() {
        if tokio::time::timeout(CLOSING_CHECK, &mut connection).await.is_ok() {
            return;
        }
    }
}

/// The connection's socket: notes when the client sends, and fails a write that has made no
/// progress for `write_timeout`.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    write_timeout: Duration,
    /// Armed while a write waits for the client to make room.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Watched {
    fn new(stream: TcpStream, activity: Arc<Activity>, write_timeout: Duration) -> Self {
        Self { stream, activity, write_timeout, stalled: None }
    }

    fn guard<T>(&mut self, cx: &mut Context<'_>, polled: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.write_timeout;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took none of the response in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, data);
        self.guard(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.guard(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.guard(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Errors that concern one connection, not the listener: the next accept can go on at once.
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(error.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// How the listener was shut to new handshakes at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shut {
    SocketFilter,
    MinTtl,
    /// Not at all: it keeps completing handshakes until it closes.
    Open,
}

/// Stops the kernel from completing new handshakes on the listener, so that clients that
/// connect from now on see their SYN unanswered and are refused once the listener closes,
/// instead of being accepted by the kernel and then reset. Handshakes already under way still
/// complete (their final ACK passes) and are drained with the rest.
fn shut(listener: &TcpListener, gate: DrainGate) -> Shut {
    let fd = listener.as_raw_fd();
    let shut = match gate {
        DrainGate::Auto => refuse_new_handshakes(fd)
            .map(|()| Shut::SocketFilter)
            // Some kernels (6.18 here) allow socket filters on TCP sockets only with
            // CAP_NET_ADMIN, which a process run as a plain user lacks.
            .or_else(|_| set_min_ttl(fd, u8::MAX).map(|()| Shut::MinTtl)),
        DrainGate::SocketFilter => refuse_new_handshakes(fd).map(|()| Shut::SocketFilter),
        DrainGate::MinTtl => set_min_ttl(fd, u8::MAX).map(|()| Shut::MinTtl),
        DrainGate::None => Ok(Shut::Open),
    };
    match &shut {
        Ok(Shut::Open) => {}
        Ok(shut) => {
            let gate = if *shut == Shut::MinTtl { "min_ttl" } else { "socket_filter" };
            tracing::info!(gate, "no new connections: the listener drops new handshakes");
        }
        Err(error) => tracing::warn!(
            %error,
            ?gate,
            "cannot stop new handshakes before draining; a client that connects just as the \
             listener closes may be reset"
        ),
    }
    shut.unwrap_or(Shut::Open)
}

/// Attaches a socket filter that drops new connection requests (segments with SYN set and ACK
/// clear) reaching the listener.
fn refuse_new_handshakes(fd: RawFd) -> std::io::Result<()> {
    const TCP_FLAGS: u32 = 13; // offset in the TCP header, where a socket filter's data starts
    const SYN: u32 = 0x02;
    const ACK: u32 = 0x10;
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter { code: code as u16, jt, jf, k };
    let mut program = [
        op(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, TCP_FLAGS),
        op(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, 0, 0, SYN | ACK),
        op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 1, SYN),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
    ];
    let filter = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    // SAFETY: the program outlives the call, which copies it into the kernel.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const filter).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sets the least TTL (IPv4) and hop limit (IPv6) the socket takes packets with; any user may.
/// At 255 a listener drops every SYN that crossed a router or came from a stack that starts
/// below 255, which is every common one (Linux, Windows and macOS send 64 or 128): RFC 5082's
/// check, used here to shut the door on new handshakes without a socket filter. A packet
/// addressed to a connection already made goes to that connection's socket, which checks its
/// own setting.
fn set_min_ttl(fd: RawFd, ttl: u8) -> std::io::Result<()> {
    let set = |level: libc::c_int, name: libc::c_int| {
        let value = libc::c_int::from(ttl);
        // SAFETY: the value outlives the call, which copies it.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&raw const value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // An IPv4 socket refuses the IPv6 option; an IPv6 one takes both, IPv4's for its clients
    // with mapped addresses.
    let v4 = set(libc::IPPROTO_IP, libc::IP_MINTTL);
    let v6 = set(libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT);
    v6.or(v4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// Shuts a listener with `gate` after one client connected: a second client's SYN goes
    /// unanswered, and the first is accepted and talks both ways.
    fn shut_with(gate: impl Fn(RawFd) -> std::io::Result<()>, addr: &str) {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut before = TcpStream::connect(addr).unwrap();
        gate(listener.as_raw_fd()).expect("the gate is allowed");
        let after = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
        assert!(after.is_err(), "a SYN sent after the gate goes unanswered");
        let (mut accepted, _) = listener.accept().unwrap();
        before.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        accepted.read_exact(&mut buf).unwrap();
        accepted.write_all(b"pong").unwrap();
        before.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
    }

    /// Needs CAP_NET_ADMIN on some kernels (CI runs as root).
    #[test]
    fn the_socket_filter_refuses_new_handshakes_but_keeps_those_already_made() {
        shut_with(refuse_new_handshakes, "127.0.0.1:0");
    }

    #[test]
    fn the_min_ttl_gate_refuses_new_handshakes_but_keeps_those_already_made() {
        shut_with(|fd| set_min_ttl(fd, u8::MAX), "127.0.0.1:0");
        shut_with(|fd| set_min_ttl(fd, u8::MAX), "[::1]:0");
    }

    #[test]
    fn a_connection_accepted_behind_the_min_ttl_gate_is_reopened() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // A connection whose handshake completes once the gate is on inherits it.
        set_min_ttl(listener.as_raw_fd(), 7).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let min_ttl = |fd: RawFd| {
            let (mut value, mut len) = (0 as libc::c_int, std::mem::size_of::<libc::c_int>() as libc::socklen_t);
            // SAFETY: value and len outlive the call and say the buffer's size.
            unsafe { libc::getsockopt(fd, libc::IPPROTO_IP, libc::IP_MINTTL, (&raw mut value).cast(), &mut len) };
            value
        };
        assert_eq!(min_ttl(accepted.as_raw_fd()), 7);
        set_min_ttl(accepted.as_raw_fd(), 0).unwrap();
        assert_eq!(min_ttl(accepted.as_raw_fd()), 0);
    }
}
