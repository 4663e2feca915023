//! Moving bytes both ways between a client and its backend once the session is logged in.
//!
//! The relay never parses (docs/architecture.md: the relay never parses). Each direction is an
//! independent pipe, so a client that is busy sending (a large APPEND) never stops us from
//! reading what the backend sends meanwhile, and the reverse. A pipe holds a buffer only while it
//! has data in flight: an idle session keeps no buffers, which is most of a mail proxy's life.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use mailfront_net::Stream;

/// Size of the buffer a pipe takes while data is in flight.
const BUFFER_SIZE: usize = 32 * 1024;

/// Buffers kept for reuse per worker thread: a pipe takes a buffer whenever data arrives and
/// gives it back as soon as it has none in flight, so without a pool every command of every
/// session would allocate and zero 32 KiB. At most this many wait here (1 MiB per thread).
const POOLED_BUFFERS: usize = 32;

thread_local! {
    static BUFFERS: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer from this thread's pool, or a new one. Its content is stale (another session's
/// bytes): only what a read fills is ever used.
fn take_buffer() -> Box<[u8]> {
    BUFFERS
        .with(|pool| pool.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUFFER_SIZE].into_boxed_slice())
}

/// Gives a buffer back to this thread's pool (or frees it if the pool is full).
fn give_back(buffer: Option<Box<[u8]>>) {
    if let Some(buffer) = buffer {
        BUFFERS.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOLED_BUFFERS {
                pool.push(buffer);
            }
        });
    }
}

/// How long the other direction may go on after one side closed (a client that half-closes
/// after LOGOUT still gets the server's goodbye).
const LINGER: Duration = Duration::from_secs(2);

/// Whether the client's bytes may still go to the backend (see [`Relay::fenced`]).
pub type Fence = dyn Fn() -> bool + Send + Sync;

/// A fault on one side of a pipe.
#[derive(Debug)]
enum Fault {
    Read(io::Error),
    Write(io::Error),
    /// The fence said no: what was read is dropped.
    Fenced,
}

/// One direction of the relay.
#[derive(Debug, Default)]
struct Pipe {
    buf: Option<Box<[u8]>>,
    pos: usize,
    cap: usize,
    read_done: bool,
    need_flush: bool,
    done: bool,
    bytes: u64,
    /// Whether the last byte written ended a line (to place a notice cleanly).
    at_line_start: bool,
}

impl Pipe {
    fn new() -> Self {
        Self {
            at_line_start: true,
            ..Self::default()
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        fence: Option<&Fence>,
    ) -> Poll<Result<(), Fault>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            while self.pos < self.cap {
                let Some(chunk) = self.buf.as_deref().and_then(|b| b.get(self.pos..self.cap))
                else {
                    // Cannot happen (pos < cap implies a buffer); recover by dropping the state.
                    self.pos = 0;
                    self.cap = 0;
                    break;
                };
                let n =
                    ready!(Pin::new(&mut *writer).poll_write(cx, chunk)).map_err(Fault::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(Fault::Write(io::ErrorKind::WriteZero.into())));
                }
                self.at_line_start = chunk.get(..n).and_then(|w| w.last()) == Some(&b'\n');
                self.pos += n;
                self.need_flush = true;
            }
            if self.read_done {
                if self.need_flush {
                    ready!(Pin::new(&mut *writer).poll_flush(cx)).map_err(Fault::Write)?;
                    self.need_flush = false;
                }
                // A peer that already went away cannot be shut down; that is not a fault.
                let _ = ready!(Pin::new(&mut *writer).poll_shutdown(cx));
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let buf = self.buf.get_or_insert_with(take_buffer);
            let mut read_buf = ReadBuf::new(buf);
            match Pin::new(&mut *reader).poll_read(cx, &mut read_buf) {
                Poll::Pending => {
                    if self.need_flush {
                        match Pin::new(&mut *writer).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.need_flush = false,
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(Fault::Write(e))),
                            Poll::Pending => {}
                        }
                    }
                    // Nothing in flight: give the buffer back while we wait.
                    give_back(self.buf.take());
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Fault::Read(e))),
                Poll::Ready(Ok(())) => {
                    let n = read_buf.filled().len();
                    if n == 0 {
                        self.read_done = true;
                        give_back(self.buf.take());
                    } else if fence.is_some_and(|may_forward| !may_forward()) {
                        give_back(self.buf.take());
                        return Poll::Ready(Err(Fault::Fenced));
                    } else {
                        self.pos = 0;
                        self.cap = n;
                        self.bytes += n as u64;
                    }
                }
            }
        }
    }
}

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// The client closed its side.
    ClientClosed,
    /// The backend closed its side.
    BackendClosed,
    /// The stop signal fired (failover, kick, shutdown).
    Stopped,
    /// Reading from or writing to the client failed.
    ClientError(io::Error),
    /// Reading from or writing to the backend failed.
    BackendError(io::Error),
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// The fence refused the client's bytes (this node may no longer serve the session's
    /// database on this backend); they were not forwarded.
    Fenced,
}

impl RelayEnd {
    /// A short word for the session log.
    pub fn as_str(&self) -> &'static str {
        match self {
            RelayEnd::ClientClosed => "client-closed",
            RelayEnd::BackendClosed => "backend-closed",
            RelayEnd::Stopped => "stopped",
            RelayEnd::ClientError(_) => "client-error",
            RelayEnd::BackendError(_) => "backend-error",
            RelayEnd::Idle => "idle-timeout",
            RelayEnd::Fenced => "fenced",
        }
    }
}

/// A client and its logged-in backend, relaying.
pub struct Relay {
    up: Pipe,
    down: Pipe,
    fence: Option<Arc<Fence>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("up", &self.up)
            .field("down", &self.down)
            .field("fenced", &self.fence.is_some())
            .finish()
    }
}

impl Default for Relay {
    fn default() -> Self {
        Self::new()
    }
}

impl Relay {
    /// A relay with nothing in flight.
    pub fn new() -> Self {
        Self {
            up: Pipe::new(),
            down: Pipe::new(),
            fence: None,
        }
    }

    /// The relay asks `may_forward` before it forwards each read of the client's bytes, and
    /// ends with [`RelayEnd::Fenced`] (the bytes dropped) when it says no. Safe moves use it: a
    /// node that was frozen past its lease must not forward a single command to the old server
    /// before it learns that the group moved without it.
    pub fn fenced(mut self, may_forward: Arc<Fence>) -> Self {
        self.fence = Some(may_forward);
        self
    }

    /// Bytes relayed from the client to the backend so far.
    pub fn client_to_backend(&self) -> u64 {
        self.up.bytes
    }

    /// Bytes relayed from the backend to the client so far.
    pub fn backend_to_client(&self) -> u64 {
        self.down.bytes
    }

    /// Whether the last byte the client received ended a line, so that a notice (like IMAP's
    /// `* BYE`) can be placed without splitting a response line.
    pub fn client_at_line_start(&self) -> bool {
        self.down.at_line_start
    }

    fn poll_both(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut Stream,
        backend: &mut Stream,
    ) -> Poll<RelayEnd> {
        if !self.up.done {
            match self
                .up
                .poll_copy(cx, client, backend, self.fence.as_deref())
            {
                Poll::Ready(Ok(())) => {
                    if !self.down.done {
                        return Poll::Ready(RelayEnd::ClientClosed);
                    }
                }
                Poll::Ready(Err(Fault::Read(e))) => return Poll::Ready(RelayEnd::ClientError(e)),
                Poll::Ready(Err(Fault::Fenced)) => return Poll::Ready(RelayEnd::Fenced),
                Poll::Ready(Err(Fault::Write(e))) => return Poll::Ready(RelayEnd::BackendError(e)),
                Poll::Pending => {}
            }
        }
        if !self.down.done {
            match self.down.poll_copy(cx, backend, client, None) {
                Poll::Ready(Ok(())) => {
                    if !self.up.done {
                        return Poll::Ready(RelayEnd::BackendClosed);
                    }
                }
                Poll::Ready(Err(Fault::Read(e))) => return Poll::Ready(RelayEnd::BackendError(e)),
                Poll::Ready(Err(Fault::Fenced)) => return Poll::Ready(RelayEnd::Fenced),
                Poll::Ready(Err(Fault::Write(e))) => return Poll::Ready(RelayEnd::ClientError(e)),
                Poll::Pending => {}
            }
        }
        if self.up.done && self.down.done {
            return Poll::Ready(RelayEnd::ClientClosed);
        }
        Poll::Pending
    }

    /// Relays until one side closes (then lets the other direction finish, briefly), an error
    /// occurs, or `stop` completes.
    pub async fn run<S>(&mut self, client: &mut Stream, backend: &mut Stream, stop: S) -> RelayEnd
    where
        S: Future<Output = ()>,
    {
        self.run_with_idle(client, backend, stop, None).await
    }

    /// Like [`Relay::run`], and ends with [`RelayEnd::Idle`] when nothing moved either way for
    /// `idle` (if given).
    pub async fn run_with_idle<S>(
        &mut self,
        client: &mut Stream,
        backend: &mut Stream,
        stop: S,
        idle: Option<Duration>,
    ) -> RelayEnd
    where
        S: Future<Output = ()>,
    {
        tokio::pin!(stop);
        let end = loop {
            let moved = (self.up.bytes, self.down.bytes);
            let quiet = async {
                match idle {
                    Some(idle) => tokio::time::sleep(idle).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                end = poll_fn(|cx| self.poll_both(cx, client, backend)) => break end,
                () = &mut stop => return RelayEnd::Stopped,
                () = quiet => {
                    // A whole period without a byte either way: the session is idle.
                    if (self.up.bytes, self.down.bytes) == moved {
                        return RelayEnd::Idle;
                    }
                }
            }
        };
        if matches!(end, RelayEnd::ClientClosed) && !self.down.done {
            // The client half-closed (say, right after LOGOUT): let the backend's answer in
            // flight still reach it. When the backend closes first there is nowhere to send
            // the client's bytes, so we stop at once.
            let drain = poll_fn(|cx| match self.poll_both(cx, client, backend) {
                Poll::Ready(_) => Poll::Ready(()),
                Poll::Pending if self.up.done && self.down.done => Poll::Ready(()),
                Poll::Pending => Poll::Pending,
            });
            tokio::select! {
                () = drain => {}
                () = tokio::time::sleep(LINGER) => {}
                () = &mut stop => {}
            }
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    #[tokio::test]
    async fn relays_both_ways_and_counts() {
        let (mut client_far, client_near) = pair().await;
        let (backend_near, mut backend_far) = pair().await;
        let mut relay = Relay::new();
        let task = tokio::spawn(async move {
            let (mut c, mut b) = (Stream::Plain(client_near), Stream::Plain(backend_near));
            let end = relay.run(&mut c, &mut b, std::future::pending()).await;
            (end, relay.client_to_backend(), relay.backend_to_client())
        });
        // A large upload while the backend talks back: neither direction may block the other.
        let upload = vec![b'x'; 3 * 1024 * 1024];
        let talk = vec![b'y'; 3 * 1024 * 1024];
        let (up_read, down_read) = tokio::join!(
            async {
                client_far.write_all(&upload).await.unwrap();
                let mut got = vec![0u8; talk.len()];
                client_far.read_exact(&mut got).await.unwrap();
                client_far.shutdown().await.unwrap();
                got
            },
            async {
                backend_far.write_all(&talk).await.unwrap();
                let mut got = vec![0u8; upload.len()];
                backend_far.read_exact(&mut got).await.unwrap();
                // The client's half-close reaches the backend; then the backend says goodbye.
                let mut rest = Vec::new();
                backend_far.read_to_end(&mut rest).await.unwrap();
                backend_far.write_all(b"* BYE\r\n").await.unwrap();
                got
            }
        );
        assert_eq!(up_read, talk);
        assert_eq!(down_read, upload);
        let (end, up, down) = task.await.unwrap();
        assert!(matches!(end, RelayEnd::ClientClosed), "{end:?}");
        assert_eq!(up, upload.len() as u64);
        assert_eq!(down, talk.len() as u64 + 7);
    }

    #[tokio::test]
    async fn a_closed_fence_drops_the_clients_bytes_and_ends_the_relay() {
        let (mut client_far, client_near) = pair().await;
        let (backend_near, mut backend_far) = pair().await;
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let gate = Arc::clone(&open);
        let task = tokio::spawn(async move {
            let mut relay = Relay::new().fenced(Arc::new(move || {
                gate.load(std::sync::atomic::Ordering::SeqCst)
            }));
            let (mut c, mut b) = (Stream::Plain(client_near), Stream::Plain(backend_near));
            let end = relay.run(&mut c, &mut b, std::future::pending()).await;
            (end, relay.client_to_backend())
        });
        client_far.write_all(b"a NOOP\r\n").await.unwrap();
        let mut got = [0u8; 8];
        backend_far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"a NOOP\r\n", "an open fence forwards");
        open.store(false, std::sync::atomic::Ordering::SeqCst);
        client_far.write_all(b"b NOOP\r\n").await.unwrap();
        let (end, up) = task.await.unwrap();
        assert!(matches!(end, RelayEnd::Fenced), "{end:?}");
        assert_eq!(up, 8, "the fenced read is not counted as forwarded");
        let mut rest = Vec::new();
        backend_far.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{rest:?}");
    }

    #[tokio::test]
    async fn stop_ends_the_relay_and_tracks_line_starts() {
        let (mut client_far, client_near) = pair().await;
        let (backend_near, mut backend_far) = pair().await;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut relay = Relay::new();
            let (mut c, mut b) = (Stream::Plain(client_near), Stream::Plain(backend_near));
            let end = relay
                .run(&mut c, &mut b, async {
                    let _ = stop_rx.await;
                })
                .await;
            (end, relay.client_at_line_start())
        });
        backend_far
            .write_all(b"* 1 EXISTS\r\n* partial")
            .await
            .unwrap();
        let mut got = vec![0u8; 21];
        client_far.read_exact(&mut got).await.unwrap();
        stop_tx.send(()).unwrap();
        let (end, at_line_start) = task.await.unwrap();
        assert!(matches!(end, RelayEnd::Stopped));
        assert!(!at_line_start);
    }

    #[tokio::test]
    async fn backend_close_ends_the_relay() {
        let (_client_far, client_near) = pair().await;
        let (backend_near, backend_far) = pair().await;
        drop(backend_far);
        let mut relay = Relay::new();
        let (mut c, mut b) = (Stream::Plain(client_near), Stream::Plain(backend_near));
        let end = tokio::time::timeout(
            Duration::from_secs(10),
            relay.run(&mut c, &mut b, std::future::pending()),
        )
        .await
        .unwrap();
        assert!(matches!(end, RelayEnd::BackendClosed), "{end:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_session_ends_and_a_busy_one_does_not() {
        let (mut client_far, client_near) = pair().await;
        let (backend_near, mut backend_far) = pair().await;
        let task = tokio::spawn(async move {
            let mut relay = Relay::new();
            let (mut c, mut b) = (Stream::Plain(client_near), Stream::Plain(backend_near));
            relay
                .run_with_idle(
                    &mut c,
                    &mut b,
                    std::future::pending(),
                    Some(Duration::from_secs(60)),
                )
                .await
        });
        // Traffic every 40 s keeps it alive past several periods.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(40)).await;
            client_far.write_all(b"a NOOP\r\n").await.unwrap();
            let mut got = [0u8; 8];
            backend_far.read_exact(&mut got).await.unwrap();
        }
        assert!(!task.is_finished());
        tokio::time::sleep(Duration::from_secs(121)).await;
        let end = task.await.unwrap();
        assert!(matches!(end, RelayEnd::Idle), "{end:?}");
    }
}
