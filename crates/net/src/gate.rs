//! The door before the protocol: who a connection really comes from (PROXY protocol v1/v2,
//! accepted only from trusted load balancers) and whether there is room for it (connections per
//! listener and per client address).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use mailfront_metrics::Metrics;
use mailfront_model::Cidr;

/// Largest PROXY header read (v1 is at most 107 bytes; v2 headers with a few TLVs are small).
const MAX_HEADER: usize = 4096;
/// Longest PROXY v1 header, its CRLF included (the PROXY protocol specification, 2.1).
const MAX_V1_HEADER: usize = 107;

/// A PROXY header that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The peer closed before sending a whole header.
    #[error("connection closed before the PROXY header")]
    Closed,
    /// Not a PROXY header, or a malformed one.
    #[error("invalid PROXY header")]
    Invalid,
    /// The header did not arrive in time.
    #[error("no PROXY header in time")]
    Timeout,
    /// Reading failed.
    #[error("reading the PROXY header failed: {0}")]
    Io(String),
}

fn source(result: &HeaderResult<'_>) -> Option<Option<SocketAddr>> {
    match result {
        HeaderResult::V1(Ok(header)) => Some(match header.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(header)) => Some(match (header.command, header.addresses) {
            // LOCAL: the balancer's own health check; the connection is about itself.
            (v2::Command::Local, _) => None,
            (_, v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (_, v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            _ => None,
        }),
        _ => None,
    }
}

fn header_len(result: &HeaderResult<'_>) -> Option<usize> {
    match result {
        HeaderResult::V1(Ok(header)) => Some(header.header.len()),
        HeaderResult::V2(Ok(header)) => Some(header.len()),
        _ => None,
    }
}

/// What [`parse_proxy_header`] found at the start of a connection's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The bytes so far are the beginning of a header: more must arrive.
    Incomplete,
    /// A whole header of `len` bytes (everything after it is the client's own stream).
    Complete {
        /// The header's length in bytes, at most the length of the input.
        len: usize,
        /// The real client; `None` for a header without addresses (v2 LOCAL, the balancer's own
        /// health check, or v1 UNKNOWN): the connection's own peer is the client.
        client: Option<SocketAddr>,
    },
}

/// Parses a PROXY header (v1 or v2) at the start of `bytes`, the bytes received so far, without
/// I/O. [`ProxyHeaderError::Invalid`]: not a PROXY header, a malformed one, or one that has not
/// ended within the first 4096 bytes.
pub fn parse_proxy_header(bytes: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    // A v1 header is one line of at most 107 bytes. ppp calls some of its prefixes invalid (one
    // that ends right after the source port and its space, found by fuzzing), so a header split
    // there across two reads would be refused: judge a v1 header only once its line has ended.
    if bytes.starts_with(b"PROXY ")
        && bytes.len() < MAX_V1_HEADER
        && !bytes.windows(2).any(|w| w == b"\r\n")
    {
        return Ok(ProxyHeader::Incomplete);
    }
    let result = HeaderResult::parse(bytes);
    if result.is_incomplete() {
        if bytes.len() >= MAX_HEADER {
            return Err(ProxyHeaderError::Invalid);
        }
        return Ok(ProxyHeader::Incomplete);
    }
    match (header_len(&result), source(&result)) {
        // A v1 header ends with its CRLF; ppp measures some malformed UNKNOWN lines (a bare LF
        // inside, found by fuzzing) short of it, which would leave the rest of the line to the
        // protocol.
        (Some(len), Some(client))
            if len <= bytes.len()
                && (!bytes.starts_with(b"PROXY ")
                    || bytes.get(..len).is_some_and(|h| h.ends_with(b"\r\n"))) =>
        {
            Ok(ProxyHeader::Complete { len, client })
        }
        _ => Err(ProxyHeaderError::Invalid),
    }
}

/// Reads and consumes a PROXY header (v1 or v2) from `tcp`, leaving the rest of the stream
/// untouched. `Ok(None)`: a header without addresses (LOCAL, UNKNOWN): the connection's own
/// peer is the client.
pub async fn read_proxy_header(
    tcp: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_HEADER];
    loop {
        let peeked = tokio::time::timeout_at(deadline, tcp.peek(&mut buf))
            .await
            .map_err(|_| ProxyHeaderError::Timeout)?
            .map_err(|e| ProxyHeaderError::Io(e.to_string()))?;
        if peeked == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        let bytes = buf.get(..peeked).unwrap_or_default();
        match parse_proxy_header(bytes)? {
            ProxyHeader::Incomplete => {
                // Headers come in one segment in practice; wait briefly for the rest instead
                // of spinning on the same bytes.
                tokio::time::sleep(Duration::from_millis(5)).await;
                if Instant::now() >= deadline {
                    return Err(ProxyHeaderError::Timeout);
                }
            }
            ProxyHeader::Complete { len, client } => {
                let mut consumed = vec![0u8; len];
                tcp.read_exact(&mut consumed)
                    .await
                    .map_err(|e| ProxyHeaderError::Io(e.to_string()))?;
                return Ok(client);
            }
        }
    }
}

/// How many connections each client address holds, node-wide, and how many the node may hold
/// in all.
#[derive(Debug)]
pub struct ClientCounts {
    counts: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
    capacity: usize,
}

impl Default for ClientCounts {
    fn default() -> Self {
        Self::with_capacity(usize::MAX)
    }
}

/// Descriptors kept out of [`connection_capacity`] for listeners, the directory, the location
/// store, log files and the admin API.
const RESERVED_DESCRIPTORS: u64 = 128;

/// How many connections a process may hold at once given its descriptor limit (`RLIMIT_NOFILE`
/// soft limit, from `/proc/self/limits`): two descriptors each (client and backend), some kept
/// back. `None` if the limit cannot be read or is unlimited. Beyond it `accept` would fail and
/// a client would wait in the listen queue until it gave up; at it, the gate turns clients away
/// with the protocol's "too many connections" reply instead.
pub fn connection_capacity() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let soft = open_files_limit(&text)?;
    usize::try_from(soft.saturating_sub(RESERVED_DESCRIPTORS) / 2)
        .ok()
        .map(|c| c.max(1))
}

/// The soft "Max open files" limit in the text of `/proc/<pid>/limits`.
fn open_files_limit(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.strip_prefix("Max open files")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Why [`ClientCounts::take`] gave no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    /// The node holds as many connections as its descriptor limit allows.
    NodeFull,
    /// The client's address holds as many connections as it may.
    ClientLimit,
}

impl NoSlot {
    /// The `reason` label of the refused-connections metric.
    pub fn as_str(self) -> &'static str {
        match self {
            NoSlot::NodeFull => "node_full",
            NoSlot::ClientLimit => "client_limit",
        }
    }
}

/// A client's place in [`ClientCounts`]; released when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    counts: Arc<ClientCounts>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.counts.total.fetch_sub(1, Ordering::Relaxed);
        let mut counts = self.counts.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl ClientCounts {
    /// Counts for a node that may hold at most `capacity` connections at once.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            counts: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            capacity,
        }
    }

    /// How many connections are open on the node (every listener, every client).
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Takes a slot for `ip` unless the node is full ([`ClientCounts::total`] has reached
    /// [`ClientCounts::capacity`]) or `ip` already holds `max`.
    pub fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Result<ClientSlot, NoSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.capacity {
            return Err(NoSlot::NodeFull);
        }
        let count = counts.entry(ip).or_default();
        if *count >= max {
            return Err(NoSlot::ClientLimit);
        }
        *count += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(ClientSlot {
            counts: Arc::clone(self),
            ip,
        })
    }
}

/// A connection that passed the gate, with the real client address.
#[derive(Debug)]
pub struct Connection {
    /// The connection (any PROXY header consumed).
    pub tcp: TcpStream,
    /// The real client.
    pub client: SocketAddr,
    /// Its places in the limits; hold them for as long as the connection lives.
    pub slots: Slots,
}

/// A connection's places in the per-listener and per-client limits, released when dropped.
#[derive(Debug)]
pub struct Slots {
    _listener: OwnedSemaphorePermit,
    _client: ClientSlot,
}

/// What the gate decided about an accepted connection.
#[derive(Debug)]
pub enum Arrival {
    /// Go ahead.
    Admitted(Connection),
    /// No room: tell the client in its protocol and close.
    Busy {
        /// The connection.
        tcp: TcpStream,
        /// The real client.
        client: SocketAddr,
    },
    /// Dropped (an untrusted source sent — or should have sent — a PROXY header).
    Dropped,
}

/// One listener's gate.
#[derive(Debug)]
pub struct Gate {
    name: String,
    proxy: Option<(Vec<Cidr>, Duration)>,
    slots: Arc<Semaphore>,
    clients: Arc<ClientCounts>,
    max_per_client: usize,
    metrics: Arc<Metrics>,
}

impl Gate {
    /// A gate for listener `name`: PROXY headers expected from `proxy` sources (if set), at most
    /// `max_connections` at once, and `max_per_client` per client address in `clients`.
    pub fn new(
        name: String,
        proxy: Option<(Vec<Cidr>, Duration)>,
        max_connections: usize,
        clients: Arc<ClientCounts>,
        max_per_client: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            name,
            proxy,
            slots: Arc::new(Semaphore::new(max_connections)),
            clients,
            max_per_client,
            metrics,
        }
    }

    /// Decides on an accepted connection from `peer`.
    pub async fn admit(&self, mut tcp: TcpStream, peer: SocketAddr) -> Arrival {
        let client = match &self.proxy {
            None => peer,
            Some((trusted, timeout)) => {
                if !trusted.iter().any(|c| c.contains(peer.ip())) {
                    tracing::warn!(listener = %self.name, peer = %peer, "connection refused: not a trusted PROXY protocol source");
                    self.metrics.refused(&self.name, "untrusted_proxy");
                    return Arrival::Dropped;
                }
                match read_proxy_header(&mut tcp, *timeout).await {
                    Ok(Some(client)) => client,
                    Ok(None) => peer,
                    Err(error) => {
                        tracing::info!(listener = %self.name, peer = %peer, %error, "connection refused: bad PROXY header");
                        self.metrics.refused(&self.name, "proxy_header");
                        return Arrival::Dropped;
                    }
                }
            }
        };
        let Ok(listener_slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            self.metrics.refused(&self.name, "listener_full");
            return Arrival::Busy { tcp, client };
        };
        let client_slot = match self.clients.take(client.ip(), self.max_per_client) {
            Ok(slot) => slot,
            Err(refusal) => {
                self.metrics.refused(&self.name, refusal.as_str());
                return Arrival::Busy { tcp, client };
            }
        };
        Arrival::Admitted(Connection {
            tcp,
            client,
            slots: Slots {
                _listener: listener_slot,
                _client: client_slot,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    #[test]
    fn descriptor_limit_and_node_capacity() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             94000                94000                processes \n\
                      Max open files            20000                524288               files     \n";
        assert_eq!(open_files_limit(limits), Some(20000));
        assert_eq!(
            open_files_limit("Max open files  unlimited unlimited files\n"),
            None
        );
        assert_eq!(open_files_limit(""), None);
        assert!(connection_capacity().is_some_and(|c| c >= 1));

        let counts = Arc::new(ClientCounts::with_capacity(2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = counts.take(a, 10).unwrap();
        let _second = counts.take(b, 10).unwrap();
        assert_eq!(counts.total(), 2);
        assert_eq!(counts.take(b, 10).err(), Some(NoSlot::NodeFull));
        assert_eq!(counts.take(a, 1).err(), Some(NoSlot::NodeFull));
        drop(first);
        assert_eq!(counts.total(), 1);
        assert!(counts.take(a, 10).is_ok());
        let roomy = Arc::new(ClientCounts::default());
        let _held = roomy.take(a, 1).unwrap();
        assert_eq!(roomy.take(a, 1).err(), Some(NoSlot::ClientLimit));
    }

    #[test]
    fn pure_parser() {
        let v1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 50123 143\r\n";
        let mut input = v1.to_vec();
        input.extend_from_slice(b"a1 NOOP\r\n");
        assert_eq!(
            parse_proxy_header(&input),
            Ok(ProxyHeader::Complete {
                len: v1.len(),
                client: Some("192.0.2.7:50123".parse().unwrap())
            })
        );
        // Every prefix waits for more, including one that ends right after the source port
        // (which ppp alone calls invalid).
        for k in 0..v1.len() {
            assert_eq!(
                parse_proxy_header(&v1[..k]),
                Ok(ProxyHeader::Incomplete),
                "{k}"
            );
        }
        assert_eq!(
            parse_proxy_header(b"PROXY garbage\r\n"),
            Err(ProxyHeaderError::Invalid)
        );
        assert_eq!(
            parse_proxy_header(b"PROXY UNKNOWN \n\rN\r\n"),
            Err(ProxyHeaderError::Invalid)
        );
        assert_eq!(
            parse_proxy_header(&[b"PROXY ".as_slice(), &[b'1'; 101]].concat()),
            Err(ProxyHeaderError::Invalid)
        );
        assert_eq!(
            parse_proxy_header(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00"),
            Ok(ProxyHeader::Complete {
                len: 16,
                client: None
            })
        );
        assert_eq!(
            parse_proxy_header(b"a1 LOGIN alice pw\r\n"),
            Err(ProxyHeaderError::Invalid)
        );
        // A v2 header announcing more than the 4096 bytes we are willing to wait for.
        let mut long = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec();
        long.resize(MAX_HEADER - 1, 0);
        assert_eq!(parse_proxy_header(&long), Ok(ProxyHeader::Incomplete));
        long.push(0);
        assert_eq!(parse_proxy_header(&long), Err(ProxyHeaderError::Invalid));
    }

    #[tokio::test]
    async fn v1_and_v2_headers_leave_the_stream_intact() {
        let (mut far, mut near) = pair().await;
        far.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 50123 143\r\na1 NOOP\r\n")
            .await
            .unwrap();
        let client = read_proxy_header(&mut near, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(client, Some("192.0.2.7:50123".parse().unwrap()));
        let mut rest = [0u8; 9];
        near.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"a1 NOOP\r\n");

        let (mut far, mut near) = pair().await;
        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        v2.extend_from_slice(&[
            0x21, 0x11, 0x00, 0x0c, 198, 51, 100, 9, 127, 0, 0, 1, 0xc3, 0x50, 0x00, 0x8f,
        ]);
        v2.extend_from_slice(b"hello");
        far.write_all(&v2).await.unwrap();
        let client = read_proxy_header(&mut near, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(client, Some("198.51.100.9:50000".parse().unwrap()));
        let mut rest = [0u8; 5];
        near.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello");

        // LOCAL (a health check): no client address.
        let (mut far, mut near) = pair().await;
        far.write_all(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00")
            .await
            .unwrap();
        assert_eq!(
            read_proxy_header(&mut near, Duration::from_secs(2)).await,
            Ok(None)
        );
    }

    #[tokio::test]
    async fn bad_and_missing_headers() {
        let (mut far, mut near) = pair().await;
        far.write_all(b"a1 LOGIN alice pw\r\n").await.unwrap();
        assert_eq!(
            read_proxy_header(&mut near, Duration::from_secs(2)).await,
            Err(ProxyHeaderError::Invalid)
        );
        let (far, mut near) = pair().await;
        assert_eq!(
            read_proxy_header(&mut near, Duration::from_millis(50)).await,
            Err(ProxyHeaderError::Timeout)
        );
        drop(far);
        let (mut far, mut near) = pair().await;
        far.write_all(b"PROXY TCP4 192.0.2.7").await.unwrap();
        drop(far);
        assert!(
            read_proxy_header(&mut near, Duration::from_millis(200))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn limits_per_listener_and_client() {
        let metrics = Arc::new(Metrics::new());
        let clients = Arc::new(ClientCounts::default());
        let gate = Gate::new("t".into(), None, 2, Arc::clone(&clients), 1, metrics);
        let (_a, near_a) = pair().await;
        let peer_a: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let first = gate.admit(near_a, peer_a).await;
        assert!(matches!(first, Arrival::Admitted(_)));
        let (_b, near_b) = pair().await;
        assert!(
            matches!(gate.admit(near_b, peer_a).await, Arrival::Busy { .. }),
            "per-client limit"
        );
        let (_c, near_c) = pair().await;
        let second = gate.admit(near_c, "192.0.2.2:1".parse().unwrap()).await;
        assert!(matches!(second, Arrival::Admitted(_)));
        let (_d, near_d) = pair().await;
        assert!(
            matches!(
                gate.admit(near_d, "192.0.2.3:1".parse().unwrap()).await,
                Arrival::Busy { .. }
            ),
            "listener limit"
        );
        drop(first);
        let (_e, near_e) = pair().await;
        assert!(
            matches!(gate.admit(near_e, peer_a).await, Arrival::Admitted(_)),
            "slots come back"
        );
    }

    #[tokio::test]
    async fn untrusted_sources_are_dropped() {
        let metrics = Arc::new(Metrics::new());
        let trusted = vec!["10.0.0.1".parse().unwrap()];
        let gate = Gate::new(
            "t".into(),
            Some((trusted, Duration::from_secs(1))),
            10,
            Arc::default(),
            10,
            metrics,
        );
        let (_far, near) = pair().await;
        assert!(matches!(
            gate.admit(near, "127.0.0.1:9".parse().unwrap()).await,
            Arrival::Dropped
        ));
    }
}
