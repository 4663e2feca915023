//! The resolve step against the embedded file directory and an in-memory location map, and
//! authentication's delays and throttling (tokio's paused clock).

use std::collections::BTreeMap;
use std::net::IpAddr;

use async_trait::async_trait;
use mailfront_directory::file::{FileDirectory, parse};
use mailfront_directory::{AuthError, Unavailable};
use mailfront_location::LocationMap;
use mailfront_model::{DatabaseName, SaslMechanism, ServerName, SiteName, Version};
use mailfront_routing::{
    Endpoint, Endpoints, HttpRequest, LoginMethod, Node, Reason, Server, Site,
};

use super::*;

const USERS: &str = r#"
[[user]]
address = "alice@example.com"
aliases = ["a@example.com"]
password = "{PLAIN}right"
mailbox_guid = "g-alice"
database = "DB01"
version = "15.1"
sip_extension = "4001"

[[user]]
address = "dave@example.com"
password = "{PLAIN}right"
mailbox_guid = "g-dave"
database = "DB01"
version = "15.1"
protocols = ["pop3"]

[[user]]
address = "frank@example.com"
password = "{PLAIN}right"
mailbox_guid = "g-frank"
database = "DB01"
version = "15.1"
password_protocols = ["http"]
app_passwords = [
  # phone-secret
  { name = "phone", protocols = ["imap"], created = "2026-12-04T17:00:00Z", hash = "{SSHA}QquDqETO8D6NXfB8D2uCr3J2eK5zYWx0c2FsdA==" },
  # laptop-secret
  { name = "laptop", protocols = ["imap", "pop3", "submission"], created = 2026-12-04T17:00:00Z, hash = "{SSHA}6JSaAb1ZofTGU8PkmIHH0A5xBcBwZXBwZXIxMg==" },
]

[[user]]
address = "erin@example.com"
password = "{PLAIN}right"
mailbox_guid = "g-erin"
database = "DB09"
version = "15.1"
"#;

fn server(name: &str, site: &str) -> Server {
    let endpoint = |port| {
        Some(Endpoint {
            host: "127.0.0.1".to_owned(),
            port,
            tls: mailfront_model::BackendTls::None,
        })
    };
    Server {
        name: ServerName::new(name),
        site: SiteName::new(site),
        version: Version::new(15, 1, 0),
        endpoints: Endpoints {
            imap: endpoint(143),
            pop3: endpoint(110),
            http: Some(format!("http://{name}.example.com/")),
            sip: Some(format!("sip:{{user}}@{name}.example.com")),
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
    let site = |name: &str| Site {
        name: SiteName::new(name),
        external_urls: BTreeMap::new(),
        costs: BTreeMap::new(),
        imap_referral: None,
    };
    Topology::new(
        Node {
            name: "cas1".to_owned(),
            site: SiteName::new("west"),
            version: Version::new(15, 1, 0),
        },
        [site("west"), site("east")],
        [server("mbx1", "east"), server("mbx2", "west")],
    )
    .unwrap()
}

fn resolver_with(directory: Arc<dyn Directory>) -> Resolver {
    let locator = Arc::new(Locator::new());
    locator.publish(LocationMap::new([(
        DatabaseName::new("DB01"),
        ServerName::new("mbx1"),
    )]));
    Resolver::new(
        directory,
        locator,
        topology(),
        ResolverSettings {
            auth_failure_delay: Duration::from_secs(2),
            directory_timeout: Duration::from_millis(500),
            throttle: ThrottleSettings::default(),
        },
        Arc::new(Metrics::new()),
    )
}

fn resolver() -> Resolver {
    resolver_with(Arc::new(FileDirectory::from_users(parse(USERS).unwrap())))
}

/// A directory that cannot be asked (the LDAP server is down).
struct Down;

#[async_trait]
impl Directory for Down {
    async fn authenticate(&self, _: &str, _: &Secret<Vec<u8>>) -> Result<Authenticated, AuthError> {
        Err(AuthError::Unavailable("connection refused".to_owned()))
    }
    async fn lookup(&self, _: &str) -> Result<Option<Principal>, Unavailable> {
        Err(Unavailable("connection refused".to_owned()))
    }
    async fn lookup_extension(&self, _: &str) -> Result<Option<Principal>, Unavailable> {
        Err(Unavailable("connection refused".to_owned()))
    }
}

fn proxied_to(resolved: &Resolved) -> Option<&str> {
    match &resolved.decision {
        Decision::Proxy { server, .. } => Some(server.as_str()),
        _ => None,
    }
}

fn refusal(resolved: &Resolved) -> Option<(RejectKind, Source)> {
    resolved.refusal().map(|r| (r.kind, r.source))
}

#[tokio::test]
async fn every_kind_of_mailbox_resolves_by_the_same_rules() {
    let resolver = resolver();
    let imap = Request::protocol(Protocol::Imap);
    let alice = resolver.lookup("alice@example.com").await.unwrap().unwrap();

    // An authenticated user: no lookup, the active copy's server.
    let resolved = resolver.resolve(Mailbox::User(&alice), &imap).await;
    assert_eq!(proxied_to(&resolved), Some("mbx1"));
    assert!(resolved.principal.is_none());
    assert_eq!(
        resolved
            .server()
            .unwrap()
            .endpoints
            .imap
            .as_ref()
            .unwrap()
            .port,
        143
    );

    // An alias, looked up: the owner comes back with the decision.
    let resolved = resolver
        .resolve(Mailbox::Address("A@example.com"), &imap)
        .await;
    assert_eq!(proxied_to(&resolved), Some("mbx1"));
    assert_eq!(resolved.principal.unwrap().address, "alice@example.com");

    // Nobody has the name: refused as a client fault.
    let resolved = resolver
        .resolve(Mailbox::Address("nobody@example.com"), &imap)
        .await;
    assert_eq!(
        refusal(&resolved),
        Some((RejectKind::AuthFailed, Source::Client))
    );
    assert!(resolved.principal.is_none() && resolved.directory_error.is_none());

    // A protocol the user may not use.
    let resolved = resolver
        .resolve(Mailbox::Address("dave@example.com"), &imap)
        .await;
    assert_eq!(
        refusal(&resolved),
        Some((RejectKind::ProtocolDisabled, Source::Client))
    );

    // A database the location map does not know: the locator's, temporary.
    let resolved = resolver
        .resolve(Mailbox::Address("erin@example.com"), &imap)
        .await;
    assert_eq!(
        refusal(&resolved),
        Some((RejectKind::Temporary, Source::Locator))
    );

    // Telephony by extension: a redirect to the active server's voice mail.
    let sip = Request::protocol(Protocol::Sip);
    let resolved = resolver.resolve(Mailbox::Extension("4001"), &sip).await;
    assert!(matches!(
        &resolved.decision,
        Decision::Redirect { location, .. } if location == "sip:{user}@mbx1.example.com"
    ));
    assert_eq!(resolved.principal.unwrap().address, "alice@example.com");

    // Inbound mail: decided by location only (delivery picks the server of its group).
    let smtp = Request::protocol(Protocol::Smtp);
    let resolved = resolver
        .resolve(Mailbox::Address("alice@example.com"), &smtp)
        .await;
    assert_eq!(proxied_to(&resolved), Some("mbx1"));
}

#[tokio::test]
async fn http_follows_the_anchor_or_nobody() {
    let resolver = resolver();
    let http = Request {
        protocol: Protocol::Http,
        http: Some(HttpRequest {
            service: "calendar",
            browser_app: false,
            requested_url: "https://mail.example.com/calendar/",
            legacy_url: None,
        }),
    };
    // An anchor naming alice: alice's server, alice's principal.
    let resolved = resolver
        .resolve(Mailbox::Anchor("SMTP:alice@example.com"), &http)
        .await;
    assert_eq!(proxied_to(&resolved), Some("mbx1"));
    assert_eq!(resolved.principal.unwrap().address, "alice@example.com");
    // An anchor naming nobody: refused, never the caller's own mailbox instead.
    let resolved = resolver
        .resolve(Mailbox::Anchor("ghost@example.com\r\n"), &http)
        .await;
    assert_eq!(
        refusal(&resolved),
        Some((RejectKind::AuthzidRefused, Source::Client))
    );
    assert_eq!(
        resolved.decision.reason(),
        &Reason::UnknownAnchor("ghost@example.com".into())
    );
    // Nobody: this site's server with the service first.
    let resolved = resolver.resolve(Mailbox::Anyone, &http).await;
    assert_eq!(proxied_to(&resolved), Some("mbx2"));
    assert!(matches!(
        resolved.decision.reason(),
        Reason::Anonymous { .. }
    ));
}

#[tokio::test]
async fn a_directory_that_cannot_answer_is_temporary_and_says_why() {
    let resolver = resolver_with(Arc::new(Down));
    let resolved = resolver
        .resolve(
            Mailbox::Address("alice@example.com"),
            &Request::protocol(Protocol::Smtp),
        )
        .await;
    assert_eq!(
        refusal(&resolved),
        Some((RejectKind::Temporary, Source::Directory))
    );
    assert!(
        resolved
            .directory_error
            .as_deref()
            .is_some_and(|why| why.contains("connection refused"))
    );
    let refused = resolver
        .authenticate(
            Protocol::Imap,
            IpAddr::from([192, 0, 2, 1]),
            "alice@example.com",
            &Secret::new(b"right".to_vec()),
            Instant::now(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (refused.kind, refused.source),
        (RejectKind::Temporary, Source::Directory)
    );
}

#[tokio::test(start_paused = true)]
async fn a_wrong_password_takes_the_failure_delay_and_a_right_one_does_not() {
    let resolver = resolver();
    let client = IpAddr::from([192, 0, 2, 7]);
    let started = Instant::now();
    let refused = resolver
        .authenticate(
            Protocol::Imap,
            client,
            "alice@example.com",
            &Secret::new(b"wrong".to_vec()),
            started,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (refused.kind, refused.source),
        (RejectKind::AuthFailed, Source::Client)
    );
    assert!(started.elapsed() >= Duration::from_secs(2));

    let started = Instant::now();
    let principal = resolver
        .authenticate(
            Protocol::Imap,
            client,
            "a@example.com",
            &Secret::new(b"right".to_vec()),
            started,
        )
        .await
        .unwrap();
    assert_eq!(principal.address, "alice@example.com");
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// Logs `login` in with `password` for `protocol` from a fresh address: the user's address, or
/// the refusal's kind and log detail, and whether it took the failure delay.
async fn log_in(
    resolver: &Resolver,
    protocol: Protocol,
    client: u8,
    password: &str,
) -> (Result<String, (RejectKind, String)>, bool) {
    let started = Instant::now();
    let result = resolver
        .authenticate(
            protocol,
            IpAddr::from([192, 0, 2, client]),
            "frank@example.com",
            &Secret::new(password.as_bytes().to_vec()),
            started,
        )
        .await
        .map(|p| p.address)
        .map_err(|r| (r.kind, r.detail));
    (result, started.elapsed() >= Duration::from_secs(2))
}

#[tokio::test(start_paused = true)]
async fn each_credential_logs_in_only_for_its_protocols_and_is_refused_as_a_wrong_password() {
    let resolver = resolver();
    let ok = || Ok("frank@example.com".to_owned());
    let refused = |detail: &str| Err((RejectKind::AuthFailed, detail.to_owned()));
    let table = [
        (
            Protocol::Imap,
            "right",
            refused("the main password not allowed for imap"),
        ),
        (
            Protocol::Submission,
            "right",
            refused("the main password not allowed for submission"),
        ),
        (Protocol::Http, "right", ok()),
        (Protocol::Imap, "phone-secret", ok()),
        (
            Protocol::Submission,
            "phone-secret",
            refused("app password `phone` not allowed for submission"),
        ),
        (
            Protocol::Pop3,
            "phone-secret",
            refused("app password `phone` not allowed for pop3"),
        ),
        (
            Protocol::Http,
            "phone-secret",
            refused("app password `phone` not allowed for http"),
        ),
        (Protocol::Submission, "laptop-secret", ok()),
        (Protocol::Pop3, "laptop-secret", ok()),
        (
            Protocol::Imap,
            "wrong",
            refused("unknown user or wrong password"),
        ),
    ];
    for (i, (protocol, password, expected)) in table.into_iter().enumerate() {
        let client = u8::try_from(i + 10).unwrap();
        let (result, delayed) = log_in(&resolver, protocol, client, password).await;
        assert_eq!(result, expected, "{protocol} {password}");
        // Every refusal takes the failure delay, a refused right secret as a wrong one.
        assert_eq!(delayed, result.is_err(), "{protocol} {password}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_cached_app_password_is_not_widened_to_other_protocols() {
    use mailfront_directory::cache::{CacheSettings, CachedDirectory};
    let cached = Arc::new(CachedDirectory::new(
        FileDirectory::from_users(parse(USERS).unwrap()),
        CacheSettings::default(),
    ));
    let resolver = resolver_with(Arc::clone(&cached) as Arc<dyn Directory>);
    let (first, _) = log_in(&resolver, Protocol::Imap, 30, "phone-secret").await;
    assert_eq!(first, Ok("frank@example.com".to_owned()));
    assert_eq!(cached.entries().0, 1);
    // The same login and password, now remembered: still refused for submission.
    let (second, delayed) = log_in(&resolver, Protocol::Submission, 31, "phone-secret").await;
    assert_eq!(
        second,
        Err((
            RejectKind::AuthFailed,
            "app password `phone` not allowed for submission".to_owned()
        ))
    );
    assert!(delayed);
    assert_eq!(cached.entries().0, 1, "answered from the cache");
    let (third, _) = log_in(&resolver, Protocol::Imap, 32, "phone-secret").await;
    assert_eq!(third, Ok("frank@example.com".to_owned()));
}

#[test]
fn guid_identities_are_recognised_by_shape() {
    let table = [
        (
            "4f0b3c4e-0000-1000-8000-000000000001@example.com",
            Some(("4f0b3c4e-0000-1000-8000-000000000001", "example.com")),
        ),
        (
            "4F0B3C4E000010008000000000000001@example.com",
            Some(("4F0B3C4E000010008000000000000001", "example.com")),
        ),
        ("alice@example.com", None),
        ("4f0b3c4e-0000-1000-8000-00000000000@example.com", None),
        ("4f0b3c4e-0000-1000-8000-000000000001@", None),
        ("4f0b3c4e-0000-1000-8000-000000000001", None),
    ];
    for (anchor, expected) in table {
        assert_eq!(super::guid_identity(anchor), expected, "{anchor}");
    }
}
