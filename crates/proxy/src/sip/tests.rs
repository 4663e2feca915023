//! SIP over UDP and TCP against the embedded directory: redirects, refusals, limits.
//! In-process: a SIP listener on 127.0.0.1 with the file directory, a locator and a
//! topology of two voice-mail servers; requests from real UDP and TCP sockets.

use std::collections::BTreeMap;

use mailfront_directory::Directory;
use mailfront_directory::file::{FileDirectory, parse};
use mailfront_location::{LocationMap, Locator};
use mailfront_model::{DatabaseName, SaslMechanism, SiteName, Version};
use mailfront_routing::{Endpoints, LoginMethod, Node, Server, Site, Topology};

use mailfront_resolve::{Resolver, ResolverSettings};

use super::*;
use crate::backend::{BackendTimeouts, Backends};
use crate::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const USERS: &str = r#"
[[user]]
address = "alice@example.com"
password = "{PLAIN}x"
mailbox_guid = "g-alice"
database = "DB01"
version = "15.1"
sip_extension = "4001"

[[user]]
address = "dave@example.com"
password = "{PLAIN}x"
mailbox_guid = "g-dave"
database = "DB01"
version = "15.1"
protocols = ["pop3"]
sip_extension = "4004"

[[user]]
address = "carol@example.com"
password = "{PLAIN}x"
mailbox_guid = "g-carol"
database = "DB03"
version = "15.1"
"#;

fn server(name: &str, sip: Option<&str>) -> Server {
    Server {
        name: ServerName::new(name),
        site: SiteName::new("lab"),
        version: Version::new(15, 1, 0),
        endpoints: Endpoints {
            sip: sip.map(str::to_owned),
            ..Endpoints::default()
        },
        login: LoginMethod::PassThrough {
            mechanism: SaslMechanism::Plain,
        },
        delivery_group: "default".to_owned(),
        weight: 1,
    }
}

fn topology() -> Topology {
    Topology::new(
        Node {
            name: "cas1".to_owned(),
            site: SiteName::new("lab"),
            version: Version::new(15, 1, 0),
        },
        [Site {
            name: SiteName::new("lab"),
            external_urls: BTreeMap::new(),
            costs: BTreeMap::new(),
            imap_referral: None,
        }],
        [
            server("mbx1", Some("sip:{extension}@192.0.2.1:5070")),
            server("mbx2", Some("sip:{user}@192.0.2.2:5080;transport=udp")),
            server("nosip", None),
        ],
    )
    .unwrap()
}

fn locations(db01: &str) -> LocationMap {
    LocationMap::new([
        (DatabaseName::new("DB01"), ServerName::new(db01)),
        (DatabaseName::new("DB03"), ServerName::new("nosip")),
    ])
}

/// An LDAP directory whose server accepts connections and never says a word: every
/// lookup outlasts the directory timeout.
fn silent_directory(server: &std::net::TcpListener) -> Arc<dyn Directory> {
    let url = format!("ldap://{}", server.local_addr().unwrap());
    let config = mailfront_directory::ldap::LdapConfig::new(url, "dc=example,dc=com");
    Arc::new(mailfront_directory::ldap::LdapDirectory::new(&config).unwrap())
}

struct Lab {
    address: SocketAddr,
    locator: Arc<Locator>,
    context: Arc<SipContext>,
    _shutdown: watch::Sender<bool>,
}

async fn start(directory: Arc<dyn Directory>) -> Lab {
    let locator = Arc::new(Locator::new());
    locator.publish(locations("mbx1"));
    let metrics = Arc::new(mailfront_metrics::Metrics::new());
    let resolver = Resolver::new(
        directory,
        Arc::clone(&locator),
        topology(),
        ResolverSettings {
            auth_failure_delay: Duration::ZERO,
            directory_timeout: Duration::from_millis(200),
            throttle: Default::default(),
        },
        Arc::clone(&metrics),
    );
    let services = Arc::new(NodeServices {
        resolver: Arc::new(resolver),
        backends: Backends {
            tls: None,
            timeouts: BackendTimeouts {
                connect: Duration::from_secs(1),
                login: Duration::from_secs(1),
            },
        },
        registry: Arc::new(Registry::new(Arc::clone(&locator))),
        metrics,
    });
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = tcp.local_addr().unwrap();
    let udp = UdpSocket::bind(address).await.unwrap();
    let settings = SipSettings {
        limits: SipLimits {
            max_message_size: 2048,
            ..SipLimits::default()
        },
        idle_timeout: Duration::from_secs(5),
        retry_after: 7,
        max_in_flight: 16,
    };
    let context = Arc::new(SipContext::new("sip-test".into(), settings, Arc::default()));
    let (shutdown, receiver) = watch::channel(false);
    let gate = Arc::new(Gate::new(
        "sip-test".into(),
        None,
        64,
        Arc::default(),
        64,
        Arc::default(),
    ));
    tokio::spawn(run(
        tcp,
        Some(udp),
        services,
        Arc::clone(&context),
        gate,
        receiver,
    ));
    Lab {
        address,
        locator,
        context,
        _shutdown: shutdown,
    }
}

fn file_directory() -> Arc<dyn Directory> {
    Arc::new(FileDirectory::from_users(parse(USERS).unwrap()))
}

fn request(method: &str, uri: &str, via: &str, call_id: &str) -> String {
    format!(
        "{method} {uri} SIP/2.0\r\nVia: {via};branch=z9hG4bK-{call_id}\r\n\
         From: <sip:caller@example.net>;tag=f1\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

struct Phone {
    socket: UdpSocket,
    via: String,
}

impl Phone {
    async fn new() -> Phone {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let via = format!("SIP/2.0/UDP {}", socket.local_addr().unwrap());
        Phone { socket, via }
    }

    async fn ask(&self, lab: &Lab, method: &str, uri: &str) -> String {
        let call_id = format!("{:x}", rand::random::<u64>());
        let text = request(method, uri, &self.via, &call_id);
        self.socket
            .send_to(text.as_bytes(), lab.address)
            .await
            .unwrap();
        self.receive().await.expect("no response")
    }

    async fn receive(&self) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        let received =
            tokio::time::timeout(Duration::from_secs(2), self.socket.recv_from(&mut buf)).await;
        let (n, _) = received.ok()?.unwrap();
        Some(String::from_utf8(buf[..n].to_vec()).unwrap())
    }
}

fn status(response: &str) -> &str {
    response.lines().next().unwrap()
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

#[tokio::test]
async fn udp_invites_follow_the_active_copy() {
    let lab = start(file_directory()).await;
    let phone = Phone::new().await;
    let by_extension = phone.ask(&lab, "INVITE", "sip:4001@cas.example.com").await;
    assert_eq!(status(&by_extension), "SIP/2.0 302 Moved Temporarily");
    assert_eq!(
        header(&by_extension, "Contact"),
        Some("<sip:4001@192.0.2.1:5070>")
    );
    assert!(header(&by_extension, "To").unwrap().contains(";tag="));
    // By address: `{extension}` is still alice's extension.
    let by_address = phone.ask(&lab, "INVITE", "sip:alice@example.com").await;
    assert_eq!(
        header(&by_address, "Contact"),
        Some("<sip:4001@192.0.2.1:5070>")
    );

    // A switchover: the next INVITE goes to mbx2, whose template uses the dialed user.
    lab.locator.publish(locations("mbx2"));
    let moved = phone.ask(&lab, "INVITE", "sip:alice@example.com").await;
    assert_eq!(
        header(&moved, "Contact"),
        Some("<sip:alice@192.0.2.2:5080;transport=udp>")
    );

    // The ACK for the 3xx is absorbed: nothing comes back.
    let ack = request("ACK", "sip:4001@cas.example.com", &phone.via, "ack-1");
    phone
        .socket
        .send_to(ack.as_bytes(), lab.address)
        .await
        .unwrap();
    let options = phone.ask(&lab, "OPTIONS", "sip:cas.example.com").await;
    assert_eq!(status(&options), "SIP/2.0 200 OK", "the ACK was answered");
}

#[tokio::test]
async fn udp_refusals() {
    let lab = start(file_directory()).await;
    let phone = Phone::new().await;
    let unknown = phone.ask(&lab, "INVITE", "sip:4999@cas.example.com").await;
    assert_eq!(status(&unknown), "SIP/2.0 404 Not Found");
    // dave has an extension but no SIP: the same 404.
    let dave = phone.ask(&lab, "INVITE", "sip:4004@cas.example.com").await;
    assert_eq!(status(&dave), "SIP/2.0 404 Not Found");
    // carol's server has no voice mail: try later.
    let carol = phone.ask(&lab, "INVITE", "sip:carol@example.com").await;
    assert_eq!(status(&carol), "SIP/2.0 503 Service Unavailable");
    assert_eq!(header(&carol, "Retry-After"), Some("7"));
    let register = phone.ask(&lab, "REGISTER", "sip:example.com").await;
    assert_eq!(status(&register), "SIP/2.0 405 Method Not Allowed");
    assert_eq!(header(&register, "Allow"), Some(ALLOW_FOR_TESTS));
    let cancel = phone.ask(&lab, "CANCEL", "sip:4001@cas.example.com").await;
    assert_eq!(
        status(&cancel),
        "SIP/2.0 481 Call/Transaction Does Not Exist"
    );

    // Over the size limit: dropped and counted, no answer.
    let mut big = request("INVITE", "sip:4001@cas", &phone.via, "big");
    big.push_str(&"x".repeat(2100));
    phone
        .socket
        .send_to(big.as_bytes(), lab.address)
        .await
        .unwrap();
    assert_eq!(phone.receive().await, None);
    assert_eq!(
        lab.context
            .stats
            .oversized_datagrams
            .load(Ordering::Relaxed),
        1
    );
}

const ALLOW_FOR_TESTS: &str = mailfront_protocol::sip::ALLOW;

#[tokio::test]
async fn an_unanswering_directory_is_a_503() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let lab = start(silent_directory(&silent)).await;
    let phone = Phone::new().await;
    let started = tokio::time::Instant::now();
    let response = phone.ask(&lab, "INVITE", "sip:4001@cas.example.com").await;
    assert_eq!(status(&response), "SIP/2.0 503 Service Unavailable");
    assert_eq!(header(&response, "Retry-After"), Some("7"));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn tcp_pipelined_and_split() {
    let lab = start(file_directory()).await;
    let mut tcp = TcpStream::connect(lab.address).await.unwrap();
    let via = format!("SIP/2.0/TCP {}", tcp.local_addr().unwrap());
    let mut both = request("OPTIONS", "sip:cas.example.com", &via, "t1");
    both.push_str(&request("INVITE", "sip:4001@cas.example.com", &via, "t2"));
    // In two pieces cut inside the second request's header fields.
    let (first, second) = both.split_at(both.len() - 40);
    tcp.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tcp.write_all(second.as_bytes()).await.unwrap();
    let mut received = String::new();
    let mut buf = vec![0u8; 4096];
    while received.matches("Content-Length: 0\r\n\r\n").count() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {received:?}");
        received.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    let responses: Vec<&str> = received.split_inclusive("\r\n\r\n").collect();
    assert_eq!(status(responses[0]), "SIP/2.0 200 OK");
    assert_eq!(header(responses[0], "Call-ID"), Some("t1"));
    assert_eq!(status(responses[1]), "SIP/2.0 302 Moved Temporarily");
    assert_eq!(header(responses[1], "Call-ID"), Some("t2"));

    // A ping is answered with a pong, and the connection stays.
    tcp.write_all(b"\r\n\r\n").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"\r\n");

    // Over the limit: 513, then the connection closes.
    let mut big = request("INVITE", "sip:4001@cas", &via, "t3");
    big = big.replace("Content-Length: 0", "Content-Length: 5000");
    tcp.write_all(big.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let rest = String::from_utf8(rest).unwrap();
    assert_eq!(status(&rest), "SIP/2.0 513 Message Too Large");
    assert_eq!(header(&rest, "Call-ID"), Some("t3"));
}
