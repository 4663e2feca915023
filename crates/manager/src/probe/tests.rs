//! The prober against fake servers on `127.0.0.1:0`: greetings that stop and come back, refused
//! connections, delivery and HTTP endpoints, login mode, reloads of the server list; and the
//! pure parts (HTTP URLs, login credentials) as tables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use mailfront_directory::file::{FileDirectory, parse};
use mailfront_location::Locator;
use mailfront_model::{SaslMechanism, SiteName, Version};
use mailfront_protocol::sasl::{decode_base64, decode_plain};
use mailfront_resolve::ResolverSettings;
use mailfront_resolve::throttle::ThrottleSettings;
use mailfront_routing::{Endpoint, Endpoints, MasterUser, Node, Site};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::*;

/// A fake mailbox server endpoint: greets with `greeting` (unless silent), answers the probes'
/// commands, and records every line it receives.
struct Fake {
    address: SocketAddr,
    state: Arc<FakeState>,
}

struct FakeState {
    greeting: &'static [u8],
    /// Accepts connections and says nothing (a hung server).
    silent: AtomicBool,
    /// Refuses logins.
    refuse_login: AtomicBool,
    /// The HTTP status it answers with.
    http_status: AtomicU16,
    lines: Mutex<Vec<String>>,
}

impl Fake {
    async fn start(greeting: &'static [u8]) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(FakeState {
            greeting,
            silent: AtomicBool::new(false),
            refuse_login: AtomicBool::new(false),
            http_status: AtomicU16::new(200),
            lines: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(serve(stream, Arc::clone(&shared)));
            }
        });
        Fake { address, state }
    }

    fn endpoint(&self) -> Option<Endpoint> {
        Some(Endpoint {
            host: "127.0.0.1".to_owned(),
            port: self.address.port(),
            tls: BackendTls::None,
        })
    }

    fn set_silent(&self, silent: bool) {
        self.state.silent.store(silent, Ordering::SeqCst);
    }

    fn lines(&self) -> Vec<String> {
        self.state.lines.lock().unwrap().clone()
    }
}

async fn serve(stream: tokio::net::TcpStream, state: Arc<FakeState>) {
    let (read, mut write) = stream.into_split();
    let silent = state.silent.load(Ordering::SeqCst);
    if !silent {
        let _ = write.write_all(state.greeting).await;
    }
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        state.lines.lock().unwrap().push(line.clone());
        if silent {
            continue;
        }
        let answer = if line.starts_with("LHLO") || line.starts_with("EHLO") {
            "250-fake\r\n250 PIPELINING\r\n".to_owned()
        } else if line.starts_with("GET ") {
            let status = state.http_status.load(Ordering::SeqCst);
            format!("HTTP/1.1 {status} Fake\r\nContent-Length: 0\r\n\r\n")
        } else if line.starts_with("mf1 AUTHENTICATE") {
            if state.refuse_login.load(Ordering::SeqCst) {
                "mf1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n".to_owned()
            } else {
                "mf1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n".to_owned()
            }
        } else {
            continue;
        };
        let _ = write.write_all(answer.as_bytes()).await;
    }
}

/// A port nothing listens on: connections to it are refused.
async fn closed_port() -> Option<Endpoint> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    Some(Endpoint {
        host: "127.0.0.1".to_owned(),
        port,
        tls: BackendTls::None,
    })
}

fn server(name: &str, endpoints: Endpoints) -> Server {
    Server {
        name: ServerName::new(name),
        site: SiteName::new("west"),
        version: Version::new(15, 1, 0),
        endpoints,
        login: LoginMethod::Master {
            master: MasterUser {
                user: "casmaster".to_owned(),
                password: Secret::new("masterpw".to_owned()),
                separator: "*".to_owned(),
            },
            mechanism: SaslMechanism::Plain,
        },
        delivery_group: "default".to_owned(),
        weight: 1,
    }
}

fn topology(servers: Vec<Server>) -> Topology {
    let site = Site {
        name: SiteName::new("west"),
        external_urls: BTreeMap::new(),
        costs: BTreeMap::new(),
        imap_referral: None,
    };
    let node = Node {
        name: "cas1".to_owned(),
        site: SiteName::new("west"),
        version: Version::new(15, 1, 0),
    };
    Topology::new(node, [site], servers).unwrap()
}

fn resolver(topology: Topology, metrics: &Arc<Metrics>) -> Arc<Resolver> {
    Arc::new(Resolver::new(
        Arc::new(FileDirectory::from_users(parse("").unwrap())),
        Arc::new(Locator::new()),
        topology,
        ResolverSettings {
            auth_failure_delay: Duration::ZERO,
            directory_timeout: Duration::from_millis(100),
            throttle: ThrottleSettings::default(),
        },
        Arc::clone(metrics),
    ))
}

/// Fast probes: every 50 ms, 500 ms to answer (room for a loaded machine), down after 2 failures, up after 2 successes.
fn fast() -> ProbeSettings {
    ProbeSettings {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        thresholds: Thresholds { fall: 2, rise: 2 },
        ..ProbeSettings::default()
    }
}

struct Lab {
    resolver: Arc<Resolver>,
    metrics: Arc<Metrics>,
    prober: Prober,
    transitions: mpsc::UnboundedReceiver<Transition>,
    /// Transitions received while waiting for another endpoint's.
    early: Vec<Transition>,
}

fn start(servers: Vec<Server>, settings: ProbeSettings) -> Lab {
    let metrics = Arc::new(Metrics::new());
    let resolver = resolver(topology(servers), &metrics);
    let (prober, transitions) = Prober::start(
        Arc::clone(&resolver),
        None,
        settings,
        Arc::clone(&metrics),
        "cas1.example.com".to_owned(),
    );
    Lab {
        resolver,
        metrics,
        prober,
        transitions,
        early: Vec::new(),
    }
}

impl Lab {
    /// The next transition of `server`'s endpoint for `protocol` (the probes of different
    /// endpoints run side by side, so their transitions come in any order).
    async fn next(&mut self, server: &str, protocol: Protocol) -> Transition {
        let wanted = |t: &Transition| t.server.as_str() == server && t.protocol == protocol;
        if let Some(at) = self.early.iter().position(wanted) {
            return self.early.remove(at);
        }
        loop {
            let transition = tokio::time::timeout(Duration::from_secs(10), self.transitions.recv())
                .await
                .expect("a transition within 10 s")
                .expect("the prober is running");
            if wanted(&transition) {
                return transition;
            }
            self.early.push(transition);
        }
    }

    fn gauge(&self, server: &str, protocol: &str) -> Option<String> {
        let series =
            format!("mailfront_backend_up{{server=\"{server}\",protocol=\"{protocol}\"}} ");
        self.metrics
            .encode()
            .lines()
            .find_map(|line| line.strip_prefix(&series).map(str::to_owned))
    }

    fn is_down(&self, server: &str, protocol: Protocol) -> bool {
        self.resolver
            .health()
            .is_down(&ServerName::new(server), protocol)
    }
}

#[tokio::test]
async fn a_silent_server_goes_down_and_comes_back_and_a_refusing_one_goes_down() {
    let imap = Fake::start(b"* OK [CAPABILITY IMAP4rev1] ready\r\n").await;
    let mbx1 = server(
        "mbx1",
        Endpoints {
            imap: imap.endpoint(),
            ..Endpoints::default()
        },
    );
    let mbx2 = server(
        "mbx2",
        Endpoints {
            pop3: closed_port().await,
            ..Endpoints::default()
        },
    );
    let mut lab = start(vec![mbx1, mbx2], fast());

    // From the start: probing, every endpoint on the board and in the gauge, up.
    assert!(lab.resolver.health().is_probing());
    let board = lab.resolver.health().snapshot();
    assert!(board[&ServerName::new("mbx1")].endpoints[&Protocol::Imap]);
    assert!(board[&ServerName::new("mbx2")].endpoints[&Protocol::Pop3]);
    assert_eq!(board.len(), 2);
    assert_eq!(lab.gauge("mbx1", "imap").as_deref(), Some("1"));
    assert_eq!(lab.gauge("mbx2", "pop3").as_deref(), Some("1"));

    // The refusing server goes down; the answering one stays up.
    let down = lab.next("mbx2", Protocol::Pop3).await;
    assert_eq!(
        (down.server.as_str(), down.protocol, down.health),
        ("mbx2", Protocol::Pop3, Health::Down)
    );
    assert!(down.detail.contains("connect to 127.0.0.1"), "{down:?}");
    assert!(lab.is_down("mbx2", Protocol::Pop3));
    assert_eq!(lab.gauge("mbx2", "pop3").as_deref(), Some("0"));
    assert!(!lab.is_down("mbx1", Protocol::Imap));

    // Hung: accepts, never greets. Down after `fall` probes, each cut at the timeout.
    imap.set_silent(true);
    let down = lab.next("mbx1", Protocol::Imap).await;
    assert_eq!(
        (down.server.as_str(), down.protocol, down.health),
        ("mbx1", Protocol::Imap, Health::Down)
    );
    assert!(down.detail.contains("no answer within 500ms"), "{down:?}");
    assert!(lab.is_down("mbx1", Protocol::Imap));
    assert_eq!(lab.gauge("mbx1", "imap").as_deref(), Some("0"));

    // Greets again: up after `rise` probes.
    imap.set_silent(false);
    let up = lab.next("mbx1", Protocol::Imap).await;
    assert_eq!(
        (up.server.as_str(), up.protocol, up.health),
        ("mbx1", Protocol::Imap, Health::Up)
    );
    assert_eq!(
        up.detail,
        "2 probes in a row succeeded; the last failure: no answer within 500ms"
    );
    assert!(!lab.is_down("mbx1", Protocol::Imap));
    assert_eq!(lab.gauge("mbx1", "imap").as_deref(), Some("1"));

    assert!(imap.lines().iter().any(|line| line == "mfprobe LOGOUT"));
    let text = lab.metrics.encode();
    assert!(
        text.contains("mailfront_probe_seconds_count{server=\"mbx1\",protocol=\"imap\"}"),
        "{text}"
    );

    // Stopping ends every task: the channel closes once the last sender (theirs) is gone.
    let Lab {
        prober,
        mut transitions,
        ..
    } = lab;
    prober.stop();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while transitions.recv().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "the probe tasks outlived the prober");
}

#[tokio::test]
async fn delivery_says_lhlo_and_http_is_judged_by_its_status() {
    let lmtp = Fake::start(b"220 mbx1 LMTP ready\r\n").await;
    let http = Fake::start(b"").await;
    http.state.http_status.store(503, Ordering::SeqCst);
    let mbx1 = server(
        "mbx1",
        Endpoints {
            delivery: lmtp.endpoint(),
            delivery_protocol: DeliveryProtocol::Lmtp,
            http: Some(format!("http://{}/owa/", http.address)),
            ..Endpoints::default()
        },
    );
    let settings = ProbeSettings {
        http_path: "/healthz".to_owned(),
        ..fast()
    };
    let mut lab = start(vec![mbx1], settings);
    assert_eq!(lab.gauge("mbx1", "smtp").as_deref(), Some("1"));
    assert_eq!(lab.gauge("mbx1", "http").as_deref(), Some("1"));

    let down = lab.next("mbx1", Protocol::Http).await;
    assert_eq!((down.protocol, down.health), (Protocol::Http, Health::Down));
    assert!(
        down.detail.contains("HTTP status: HTTP/1.1 503"),
        "{down:?}"
    );
    assert!(lab.is_down("mbx1", Protocol::Http));
    assert!(lab.resolver.health().may_deliver(&ServerName::new("mbx1")));
    let lines = http.lines();
    assert!(
        lines.iter().any(|l| l == "GET /healthz HTTP/1.1"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("Host: {}", http.address)),
        "{lines:?}"
    );
    let lines = lmtp.lines();
    assert!(
        lines.iter().any(|l| l == "LHLO cas1.example.com"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "QUIT"), "{lines:?}");

    http.state.http_status.store(302, Ordering::SeqCst);
    let up = lab.next("mbx1", Protocol::Http).await;
    assert_eq!((up.protocol, up.health), (Protocol::Http, Health::Up));

    // A delivery endpoint that stops answering keeps deliveries away.
    lmtp.set_silent(true);
    let down = lab.next("mbx1", Protocol::Smtp).await;
    assert_eq!((down.protocol, down.health), (Protocol::Smtp, Health::Down));
    assert!(!lab.resolver.health().may_deliver(&ServerName::new("mbx1")));
}

#[tokio::test]
async fn login_mode_logs_in_with_the_master_user() {
    let imap = Fake::start(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\n").await;
    let pop3 = Fake::start(b"+OK ready\r\n").await;
    let mbx1 = server(
        "mbx1",
        Endpoints {
            imap: imap.endpoint(),
            pop3: pop3.endpoint(),
            ..Endpoints::default()
        },
    );
    let settings = ProbeSettings {
        mode: ProbeMode::Login,
        login_user: Some("probe@example.com".to_owned()),
        ..fast()
    };
    let mut lab = start(vec![mbx1], settings);
    imap.state.refuse_login.store(true, Ordering::SeqCst);
    let down = lab.next("mbx1", Protocol::Imap).await;
    assert_eq!((down.protocol, down.health), (Protocol::Imap, Health::Down));
    assert!(down.detail.contains("AUTHENTICATIONFAILED"), "{down:?}");
    // The master user, acting as the probe account; nothing else before the verdict.
    for line in imap.lines() {
        let Some(b64) = line.strip_prefix("mf1 AUTHENTICATE PLAIN ") else {
            assert_eq!(line, "mfprobe LOGOUT");
            continue;
        };
        let plain = decode_plain(&decode_base64(b64.as_bytes()).unwrap()).unwrap();
        assert_eq!(plain.authzid.as_deref(), Some("probe@example.com"));
        assert_eq!(plain.authcid, "casmaster");
        assert_eq!(plain.password.expose(), b"masterpw");
    }
    imap.state.refuse_login.store(false, Ordering::SeqCst);
    let up = lab.next("mbx1", Protocol::Imap).await;
    assert_eq!((up.protocol, up.health), (Protocol::Imap, Health::Up));
    // The POP3 fake never answers a login: its probes time out.
    let down = lab.next("mbx1", Protocol::Pop3).await;
    assert_eq!((down.protocol, down.health), (Protocol::Pop3, Health::Down));
    assert!(pop3.lines().iter().any(|l| l == "CAPA"));
}

#[tokio::test]
async fn the_server_list_follows_reloads() {
    let imap = Fake::start(b"* OK ready\r\n").await;
    let mbx1 = server(
        "mbx1",
        Endpoints {
            imap: imap.endpoint(),
            ..Endpoints::default()
        },
    );
    let mut lab = start(vec![mbx1.clone()], fast());
    assert_eq!(lab.gauge("mbx1", "imap").as_deref(), Some("1"));

    // A reload adds mbx2 (refusing) and drops mbx1.
    let mbx2 = server(
        "mbx2",
        Endpoints {
            submission: closed_port().await,
            ..Endpoints::default()
        },
    );
    lab.resolver.set_topology(topology(vec![mbx2]));
    let down = lab.next("mbx2", Protocol::Submission).await;
    assert_eq!(
        (down.server.as_str(), down.protocol, down.health),
        ("mbx2", Protocol::Submission, Health::Down)
    );
    tokio::time::timeout(Duration::from_secs(5), async {
        while lab.gauge("mbx1", "imap").is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("mbx1's series removed once it left the topology");

    // It comes back: probed again, from up.
    lab.resolver.set_topology(topology(vec![mbx1]));
    tokio::time::timeout(Duration::from_secs(5), async {
        while lab.gauge("mbx1", "imap").is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("mbx1 probed again");
    assert_eq!(lab.gauge("mbx1", "imap").as_deref(), Some("1"));
}

#[test]
fn http_urls() {
    let ok = |url: &str, host: &str, port: u16, tls: BackendTls, authority: &str| {
        assert_eq!(
            http_destination(url),
            Ok(Destination {
                host: host.to_owned(),
                port,
                tls,
                authority: authority.to_owned(),
            }),
            "{url}"
        );
    };
    ok("http://mbx1/", "mbx1", 80, BackendTls::None, "mbx1");
    ok(
        "https://mbx1.example.com:8443/owa/",
        "mbx1.example.com",
        8443,
        BackendTls::Implicit,
        "mbx1.example.com:8443",
    );
    ok("HTTPS://mbx1", "mbx1", 443, BackendTls::Implicit, "mbx1");
    ok(
        "http://[::1]:8080/x?y",
        "::1",
        8080,
        BackendTls::None,
        "[::1]:8080",
    );
    ok(
        "http://[2001:db8::1]",
        "2001:db8::1",
        80,
        BackendTls::None,
        "[2001:db8::1]",
    );
    for bad in [
        "mbx1",
        "ftp://mbx1/",
        "http:///",
        "http://user@mbx1/",
        "http://mbx1:http/",
        "http://mbx1:99999/",
        "http://[::1/",
        "http://:80/",
    ] {
        assert!(http_destination(bad).is_err(), "{bad}");
    }
}

#[test]
fn login_credentials() {
    let settings = ProbeSettings {
        login_user: Some("probe@example.com".to_owned()),
        login_password: Some(Secret::new("probepw".to_owned())),
        ..ProbeSettings::default()
    };
    let master = server("mbx1", Endpoints::default());
    match login_auth(&master, &settings) {
        Some(BackendAuth::Master {
            user,
            master,
            password,
            ..
        }) => {
            assert_eq!(
                (user.as_str(), master.as_str()),
                ("probe@example.com", "casmaster")
            );
            assert_eq!(password.expose(), "masterpw");
        }
        other => panic!("{other:?}"),
    }
    let pass_through = Server {
        login: LoginMethod::PassThrough {
            mechanism: SaslMechanism::Login,
        },
        ..master.clone()
    };
    match login_auth(&pass_through, &settings) {
        Some(BackendAuth::PassThrough { user, password, .. }) => {
            assert_eq!(user, "probe@example.com");
            assert_eq!(password.expose(), b"probepw");
        }
        other => panic!("{other:?}"),
    }
    let no_password = ProbeSettings {
        login_password: None,
        ..settings.clone()
    };
    assert!(login_auth(&pass_through, &no_password).is_none());
    assert!(login_auth(&master, &no_password).is_some());
    let no_user = ProbeSettings {
        login_user: None,
        ..settings
    };
    assert!(login_auth(&master, &no_user).is_none());
}

#[test]
fn defaults_are_haproxys() {
    let settings = ProbeSettings::default();
    assert_eq!(settings.interval, Duration::from_secs(2));
    assert_eq!(settings.timeout, Duration::from_secs(1));
    assert_eq!(settings.thresholds, Thresholds { fall: 3, rise: 2 });
    assert_eq!(settings.mode, ProbeMode::Greeting);
    assert_eq!(settings.http_path, "/");
}
