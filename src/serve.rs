//! The HTTP/1.1 accept loop, in place of `axum::serve`, for what a public port needs and axum's
//! loop does not offer: a cap on open connections, a header-read (and keep-alive idle) timeout,
//! accept errors that are survived and logged at most once a second, and a shutdown that first
//! answers the connections already waiting in the kernel's accept queue.

use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::observe::RateLimited;

/// What each connection is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a request's headers, counted from the connection's start or
    /// the end of the previous response: it is also how long an idle keep-alive connection lives.
    pub header_read_timeout: Duration,
    /// Connections open at once; beyond it new ones wait in the kernel's accept queue.
    pub max_connections: usize,
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
                Ok((stream, _)) => server.spawn(stream, permit),
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
    server.drain(listener).await;
    server.finish(grace).await
}

struct Server {
    router: Router,
    http: hyper::server::conn::http1::Builder,
    slots: Arc<Semaphore>,
    /// Turns true when the server stops: each connection then finishes its request and closes.
    stopping: watch::Sender<bool>,
    /// Connections being served, those drained at shutdown included, and a wake-up as each ends.
    open: Arc<(AtomicUsize, Notify)>,
    /// How long, once stopping, a connection that has sent nothing yet is given to send its
    /// request (its client connected before the listener closed and is owed an answer).
    first_request_grace: Duration,
}

impl Server {
    fn new(router: Router, limits: Limits) -> Self {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
        Self {
            router,
            http,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            stopping: watch::channel(false).0,
            open: Arc::default(),
            first_request_grace: limits.header_read_timeout.min(Duration::from_secs(1)),
        }
    }

    fn spawn(&self, stream: TcpStream, permit: OwnedSemaphorePermit) {
        let _ = stream.set_nodelay(true);
        let heard = Arc::new(AtomicBool::new(false));
        let io = TokioIo::new(Heard { stream, heard: heard.clone() });
        let service = self.router.clone().map_request(|request: Request<Incoming>| request.map(Body::new));
        let connection = self.http.serve_connection(io, TowerToHyperService::new(service));
        let mut stopping = self.stopping.subscribe();
        let first_request_grace = self.first_request_grace;
        let open = self.open.clone();
        open.0.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            tokio::pin!(connection);
            // A client that resets or times out is routine on a public port: not worth a line.
            tokio::select! {
                _ = connection.as_mut() => {}
                () = async { drop(stopping.wait_for(|stop| *stop).await) } => {
                    // hyper closes at once a connection that has sent nothing yet; give it a
                    // moment to send the request it connected for.
                    let until = tokio::time::Instant::now() + first_request_grace;
                    let finished = loop {
                        if heard.load(Ordering::SeqCst) || tokio::time::Instant::now() >= until {
                            break false;
                        }
                        tokio::select! {
                            _ = connection.as_mut() => break true,
                            () = tokio::time::sleep(Duration::from_millis(5)) => {}
                        }
                    };
                    if !finished {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
            }
            drop(permit);
            open.0.fetch_sub(1, Ordering::SeqCst);
            open.1.notify_waiters();
        });
    }

    /// Stops new connections at the door, then accepts and serves every connection the kernel
    /// has already completed, so that none of them is reset when the listener closes.
    async fn drain(&self, listener: TcpListener) {
        let listener = match listener.into_std() {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "cannot drain the accept queue");
                return;
            }
        };
        refuse_new_handshakes(&listener);
        let mut drained = 0;
        // Twice, a moment apart: a handshake under way when the filter went on lands meanwhile.
        for pause in [Duration::ZERO, Duration::from_millis(20)] {
            tokio::time::sleep(pause).await;
            while let Ok((stream, _)) = listener.accept() {
                let stream = stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream));
                if let Ok(stream) = stream {
                    // Over the cap if need be: these clients are already connected.
                    let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().expect("fresh semaphore");
                    self.spawn(stream, permit);
                    drained += 1;
                }
            }
        }
        if drained > 0 {
            tracing::info!(connections = drained, "answering connections that were waiting to be accepted");
        }
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

/// The connection's socket, noting when the client first sends something.
struct Heard {
    stream: TcpStream,
    heard: Arc<AtomicBool>,
}

impl AsyncRead for Heard {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.heard.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Heard {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
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

/// Attaches a socket filter that drops new connection requests (segments with SYN set and ACK
/// clear) reaching the listener, so that the kernel starts no new handshake while the accept
/// queue is drained: clients that connect now see their SYN unanswered and are refused once the
/// listener closes, instead of being accepted by the kernel and then reset. Handshakes already
/// under way still complete (their final ACK passes) and are drained with the rest.
fn refuse_new_handshakes(listener: &std::net::TcpListener) {
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
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const filter).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot stop new handshakes before draining");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    #[test]
    fn the_drain_filter_refuses_new_handshakes_but_keeps_those_already_made() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut before = TcpStream::connect(addr).unwrap();
        refuse_new_handshakes(&listener);
        let after = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
        assert!(after.is_err(), "a SYN sent after the filter goes unanswered");
        // The connection made before is still accepted, and data flows both ways.
        let (mut accepted, _) = listener.accept().unwrap();
        before.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        accepted.read_exact(&mut buf).unwrap();
        accepted.write_all(b"pong").unwrap();
        before.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
    }
}
