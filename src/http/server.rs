//! The HTTP server: our own accept loop over hyper-util's connection builder (HTTP/1.1 and h2c),
//! because `axum::serve` cannot bound what a slow or idle client holds (`HTTP_*`, see
//! [`HttpLimits`]):
//!
//! - at most `max_connections` connections are served at once; the accept loop waits for a free
//!   permit, so more clients wait in the listen backlog instead of holding a task each;
//! - a connection with no request in flight is watched by [`Watched`]: the headers of its next
//!   request must arrive within `header_timeout` of their first byte (of the accept, for the
//!   first request), else the connection is closed; with no byte of a request at all it is
//!   closed after `idle_timeout`. hyper's own `header_read_timeout` is not used: its clock
//!   starts when hyper begins to wait for a request, so it would also end every keep-alive
//!   connection idle for longer than the header timeout;
//! - a request body has `body_timeout` (the router's `RequestBodyDeadlineLayer`; the body
//!   reader answers `408` in the envelope).
//!
//! Every request carries `ConnectInfo<SocketAddr>` (the public send endpoints limit per client
//! IP). Shutdown is hyper-util's graceful shutdown on the process's cancellation token: no new
//! connections, idle ones closed, requests in flight finished.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{ConnectInfo, Request},
};
use futures::task::AtomicWaker;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::{Instant, Sleep},
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::HttpLimits;

/// Serves `app` on `listener` until `shutdown` is cancelled, then finishes gracefully.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            },
            () = shutdown.cancelled() => break,
        };
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched::new(stream, activity.clone(), limits));
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(remote));
            let guard = InFlight::start(activity.clone());
            let app = app.clone();
            async move {
                let response = app.oneshot(req).await?;
                Ok::<_, Infallible>(response.map(|body| Body::new(Tracked { body, guard })))
            }
        });
        let connection = graceful.watch(builder.serve_connection(io, service).into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%remote, error = %e, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one connection that does not affect the next `accept`.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// What the watchdog of one connection knows: requests in flight, since when it is idle, since
/// when the head of its next request has been arriving.
struct Activity {
    state: Mutex<State>,
    /// The task reading the connection, woken when its last request ends (its deadline changes).
    reader: AtomicWaker,
}

struct State {
    in_flight: usize,
    idle_since: Instant,
    /// The first byte of the next request's head (the accept, for the first request).
    head_since: Option<Instant>,
    protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Protocol {
    /// The first bytes read so far (fewer than the h2 preface).
    Unknown(Vec<u8>),
    Http1,
    /// h2c with prior knowledge: streams, pings and settings interleave, so only the idle rule
    /// applies.
    Http2,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Headers,
    Idle,
}

impl Activity {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            state: Mutex::new(State {
                in_flight: 0,
                idle_since: now,
                head_since: Some(now),
                protocol: Protocol::Unknown(Vec::new()),
            }),
            reader: AtomicWaker::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The lock is never held across a panic point that matters: take it even if poisoned.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn on_read(&self, bytes: &[u8]) {
        let mut state = self.state();
        if let Protocol::Unknown(seen) = &mut state.protocol {
            let want = H2_PREFACE.len() - seen.len();
            seen.extend_from_slice(&bytes[..bytes.len().min(want)]);
            if !H2_PREFACE.starts_with(seen) {
                state.protocol = Protocol::Http1;
            } else if seen.len() == H2_PREFACE.len() {
                state.protocol = Protocol::Http2;
            }
        }
        if state.in_flight == 0 && state.head_since.is_none() {
            state.head_since = Some(Instant::now());
        }
    }

    fn on_write(&self) {
        let mut state = self.state();
        if state.in_flight == 0 {
            // The tail of a response still going out to a slow reader is not idleness.
            state.idle_since = Instant::now();
        }
    }

    /// When the connection is to be closed, and why; `None` while a request is in flight.
    fn deadline(&self, limits: &HttpLimits) -> Option<(Instant, Expiry)> {
        let state = self.state();
        if state.in_flight > 0 {
            return None;
        }
        match (state.head_since, &state.protocol) {
            (Some(since), Protocol::Unknown(_) | Protocol::Http1) => {
                Some((since + limits.header_timeout, Expiry::Headers))
            }
            _ => Some((state.idle_since + limits.idle_timeout, Expiry::Idle)),
        }
    }
}

/// One request in flight, from the end of its head to the end of its response body.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        {
            let mut state = activity.state();
            state.in_flight += 1;
            state.head_since = None;
        }
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut state = self.0.state();
            state.in_flight = state.in_flight.saturating_sub(1);
            if state.in_flight == 0 {
                state.idle_since = Instant::now();
                state.head_since = None;
            }
        }
        self.0.reader.wake();
    }
}

/// A response body that keeps its request [`InFlight`] until it is sent (or dropped).
struct Tracked {
    body: Body,
    #[allow(dead_code)] // held for its Drop
    guard: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection whose reads end when its [`Activity`] deadline passes: with an error when a
/// request's headers are late (hyper drops the connection), with an end of stream when it is
/// idle (hyper closes it as if the client had).
struct Watched {
    io: TcpStream,
    activity: Arc<Activity>,
    limits: HttpLimits,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Watched {
    fn new(io: TcpStream, activity: Arc<Activity>, limits: HttpLimits) -> Self {
        Self {
            io,
            activity,
            limits,
            timer: None,
        }
    }

    /// Ready when the deadline has passed; registers the task for it (and for a change of it).
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<Expiry> {
        self.activity.reader.register(cx.waker());
        let Some((at, why)) = self.activity.deadline(&self.limits) else {
            return Poll::Pending;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        timer.as_mut().poll(cx).map(|()| why)
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.activity.on_read(read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.poll_deadline(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Expiry::Idle) => Poll::Ready(Ok(())),
                Poll::Ready(Expiry::Headers) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request headers not received in time",
                ))),
            },
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.on_write();
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.on_write();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            max_connections: 1,
        }
    }

    #[tokio::test]
    async fn the_deadline_follows_the_connection_through_its_requests() {
        let limits = limits();
        let activity = Arc::new(Activity::new());
        let accepted = activity.state().idle_since;
        // A new connection: its first request's headers are due.
        assert_eq!(
            activity.deadline(&limits),
            Some((accepted + limits.header_timeout, Expiry::Headers))
        );
        activity.on_read(b"GET / HTTP/1.1\r\n");
        assert_eq!(activity.state().protocol, Protocol::Http1);
        let guard = InFlight::start(activity.clone());
        assert_eq!(activity.deadline(&limits), None, "a request is in flight");
        drop(guard);
        let (at, why) = activity.deadline(&limits).unwrap();
        assert_eq!(why, Expiry::Idle);
        assert!(at >= accepted + limits.idle_timeout);
        // The first byte of the next request starts its header clock.
        activity.on_read(b"G");
        assert_eq!(activity.deadline(&limits).unwrap().1, Expiry::Headers);
    }

    #[tokio::test]
    async fn h2_connections_are_only_timed_for_idleness() {
        let limits = limits();
        let activity = Activity::new();
        activity.on_read(&H2_PREFACE[..10]);
        assert!(matches!(activity.state().protocol, Protocol::Unknown(_)));
        activity.on_read(&H2_PREFACE[10..]);
        assert_eq!(activity.state().protocol, Protocol::Http2);
        assert_eq!(activity.deadline(&limits).unwrap().1, Expiry::Idle);
    }
}
