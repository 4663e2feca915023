//! Table tests: one row per rule and edge of the routing rules of docs/architecture.md.

use std::collections::BTreeMap;

use mailfront_model::{
    Principal, Protocol, ProtocolSet, Secret, ServerName, SiteName, Source, Version,
};

use super::*;
use crate::{Endpoint, Endpoints, LoginMethod, MasterUser, Node, Server, Site};
use mailfront_model::SaslMechanism;

const WEST_URL: &str = "https://mail.example.com/calendar/";
const EAST_URL: &str = "https://east.example.com/calendar/";
const LEGACY_URL: &str = "https://legacy.example.com/calendar/";

fn endpoint(port: u16) -> Endpoint {
    Endpoint {
        host: "127.0.0.1".into(),
        port,
        tls: mailfront_model::BackendTls::None,
    }
}

fn server(name: &str, site: &str, sip: bool, imap: bool) -> Server {
    Server {
        name: name.into(),
        site: site.into(),
        version: Version::new(15, 0, 0),
        endpoints: Endpoints {
            imap: imap.then(|| endpoint(143)),
            pop3: Some(endpoint(110)),
            submission: None,
            delivery: None,
            delivery_protocol: Default::default(),
            http: Some(format!("http://{name}:8080/")),
            sip: sip.then(|| format!("sip:voicemail@{name}:5060")),
        },
        login: LoginMethod::Master {
            master: MasterUser {
                user: "casmaster".into(),
                password: Secret::new("pw".into()),
                separator: "*".into(),
            },
            mechanism: SaslMechanism::Plain,
        },
        delivery_group: "dag1".into(),
        weight: 1,
    }
}

/// Node in `west`; `mbx1` in west, `mbx2` in east (own URL), `mbx3` in north (same URL as west),
/// `mbx4` in south (no URL), `mbx5` in west without SIP or IMAP.
fn topology() -> Topology {
    let site = |name: &str, url: Option<&str>| Site {
        name: name.into(),
        external_urls: url
            .map(|u| BTreeMap::from([("calendar".to_owned(), u.to_owned())]))
            .unwrap_or_default(),
        costs: BTreeMap::new(),
        imap_referral: None,
    };
    Topology::new(
        Node {
            name: "cas1".into(),
            site: "west".into(),
            version: Version::new(15, 1, 0),
        },
        [
            site("west", Some(WEST_URL)),
            site("east", Some(EAST_URL)),
            site("north", Some("HTTPS://Mail.Example.com:443/calendar")),
            site("south", None),
        ],
        [
            server("mbx1", "west", true, true),
            server("mbx2", "east", true, true),
            server("mbx3", "north", true, true),
            server("mbx4", "south", true, true),
            server("mbx5", "west", false, false),
        ],
    )
    .unwrap()
}

fn principal(version: Version, protocols: ProtocolSet) -> Principal {
    Principal {
        address: "alice@example.com".into(),
        aliases: vec![],
        display_name: None,
        mailbox_guid: "guid".into(),
        tenant: "example.com".into(),
        database: "DB01".into(),
        version,
        protocols,
        sip_extension: Some("4001".into()),
    }
}

const V15: Version = Version::new(15, 0, 0);
const V14: Version = Version::new(14, 3, 0);

fn browser(url: &'static str, legacy: Option<&'static str>) -> Request<'static> {
    Request {
        protocol: Protocol::Http,
        http: Some(HttpRequest {
            service: "calendar",
            browser_app: true,
            requested_url: url,
            legacy_url: legacy,
        }),
    }
}

fn dav(url: &'static str) -> Request<'static> {
    Request {
        protocol: Protocol::Http,
        http: Some(HttpRequest {
            service: "calendar",
            browser_app: false,
            requested_url: url,
            legacy_url: Some(LEGACY_URL),
        }),
    }
}

/// The expected outcome of a row, compared by shape.
#[derive(Debug, PartialEq)]
enum Expect {
    Proxy(&'static str),
    Redirect(&'static str),
    Reject(RejectKind),
}

fn outcome(decision: &Decision) -> Expect {
    match decision {
        Decision::Proxy { server, .. } => {
            Expect::Proxy(Box::leak(server.as_str().to_owned().into_boxed_str()))
        }
        Decision::Redirect { location, .. } => {
            Expect::Redirect(Box::leak(location.clone().into_boxed_str()))
        }
        Decision::Reject { kind, .. } => Expect::Reject(*kind),
    }
}

#[test]
fn routing_table() {
    let topo = topology();
    let all = ProtocolSet::ALL;
    let no_sip: ProtocolSet = [Protocol::Imap, Protocol::Http].into_iter().collect();
    let no_imap: ProtocolSet = [Protocol::Pop3].into_iter().collect();
    let imap = Request::protocol(Protocol::Imap);
    let sip = Request::protocol(Protocol::Sip);
    let name = |n: &str| ServerName::new(n);
    let (mbx1, mbx2, mbx3, mbx4, mbx5, ghost) = (
        name("mbx1"),
        name("mbx2"),
        name("mbx3"),
        name("mbx4"),
        name("mbx5"),
        name("ghost"),
    );
    let p15 = principal(V15, all);
    let p14 = principal(V14, all);
    let p_no_sip = principal(V15, no_sip);
    let p_no_imap = principal(V15, no_imap);
    let p_minor_older = principal(Version::new(15, 0, 9), all);
    let ok = |p, s| Facts::Authenticated {
        principal: p,
        active: Ok(s),
    };
    let located_err = |p, e| Facts::Authenticated {
        principal: p,
        active: Err(e),
    };

    use Expect::*;
    let rows: Vec<(&str, Request<'_>, Facts<'_>, Expect)> = vec![
        // Rule 1: SIP always redirects, to the active server's voice-mail URI, in any site.
        (
            "sip same site",
            sip,
            ok(&p15, &mbx1),
            Redirect("sip:voicemail@mbx1:5060"),
        ),
        (
            "sip other site",
            sip,
            ok(&p15, &mbx2),
            Redirect("sip:voicemail@mbx2:5060"),
        ),
        (
            "sip disabled for user",
            sip,
            ok(&p_no_sip, &mbx1),
            Reject(RejectKind::ProtocolDisabled),
        ),
        (
            "sip server without voice mail",
            sip,
            ok(&p15, &mbx5),
            Reject(RejectKind::Temporary),
        ),
        // Rule 2: browser apps.
        (
            "browser same site",
            browser(WEST_URL, None),
            ok(&p15, &mbx1),
            Proxy("mbx1"),
        ),
        (
            "browser other site, own URL",
            browser(WEST_URL, None),
            ok(&p15, &mbx2),
            Redirect(EAST_URL),
        ),
        (
            "browser other site, client already used its URL",
            browser("https://east.example.com/calendar/x?y=1", None),
            ok(&p15, &mbx2),
            Proxy("mbx2"),
        ),
        (
            "browser other site, same URL (single namespace)",
            browser("https://mail.example.com/calendar/", None),
            ok(&p15, &mbx3),
            Proxy("mbx3"),
        ),
        (
            "single namespace ignores case and default port",
            browser("https://MAIL.example.com/calendar", None),
            ok(&p15, &mbx3),
            Proxy("mbx3"),
        ),
        (
            "same host, other port is another namespace",
            browser("https://mail.example.com:8443/calendar/", None),
            ok(&p15, &mbx3),
            Redirect("HTTPS://Mail.Example.com:443/calendar"),
        ),
        (
            "browser other site without URL",
            browser(WEST_URL, None),
            ok(&p15, &mbx4),
            Proxy("mbx4"),
        ),
        (
            "legacy mailbox with legacy URL",
            browser(WEST_URL, Some(LEGACY_URL)),
            ok(&p14, &mbx1),
            Redirect(LEGACY_URL),
        ),
        (
            "legacy mailbox, location unknown: still legacy",
            browser(WEST_URL, Some(LEGACY_URL)),
            located_err(&p14, LocationFailure::Unavailable),
            Redirect(LEGACY_URL),
        ),
        (
            "legacy mailbox without legacy URL",
            browser(WEST_URL, None),
            ok(&p14, &mbx1),
            Proxy("mbx1"),
        ),
        (
            "older minor version is not legacy",
            browser(WEST_URL, Some(LEGACY_URL)),
            ok(&p_minor_older, &mbx1),
            Proxy("mbx1"),
        ),
        (
            "current mailbox with legacy URL",
            browser(WEST_URL, Some(LEGACY_URL)),
            ok(&p15, &mbx1),
            Proxy("mbx1"),
        ),
        // Non-browser HTTP services are proxied, never redirected.
        (
            "dav other site",
            dav(WEST_URL),
            ok(&p15, &mbx2),
            Proxy("mbx2"),
        ),
        (
            "dav legacy mailbox",
            dav(WEST_URL),
            ok(&p14, &mbx1),
            Proxy("mbx1"),
        ),
        // Rule 3: everything else is proxied to the active copy, whatever its site.
        ("imap same site", imap, ok(&p15, &mbx1), Proxy("mbx1")),
        ("imap other site", imap, ok(&p15, &mbx2), Proxy("mbx2")),
        ("imap legacy mailbox", imap, ok(&p14, &mbx1), Proxy("mbx1")),
        // Rule 4: refusals.
        (
            "auth failed",
            imap,
            Facts::AuthFailed,
            Reject(RejectKind::AuthFailed),
        ),
        (
            "directory unavailable",
            imap,
            Facts::DirectoryUnavailable,
            Reject(RejectKind::Temporary),
        ),
        (
            "protocol disabled",
            imap,
            ok(&p_no_imap, &mbx1),
            Reject(RejectKind::ProtocolDisabled),
        ),
        (
            "protocol disabled wins over location failure",
            imap,
            located_err(&p_no_imap, LocationFailure::Unavailable),
            Reject(RejectKind::ProtocolDisabled),
        ),
        (
            "location unavailable",
            imap,
            located_err(&p15, LocationFailure::Unavailable),
            Reject(RejectKind::Temporary),
        ),
        (
            "database unknown to the map",
            imap,
            located_err(&p15, LocationFailure::UnknownDatabase),
            Reject(RejectKind::Temporary),
        ),
        (
            "map names an undefined server",
            imap,
            ok(&p15, &ghost),
            Reject(RejectKind::Temporary),
        ),
        (
            "active server lacks the protocol",
            imap,
            ok(&p15, &mbx5),
            Reject(RejectKind::Temporary),
        ),
        (
            "browser app: map names an undefined server",
            browser(WEST_URL, None),
            ok(&p15, &ghost),
            Reject(RejectKind::Temporary),
        ),
        // Inbound mail: the location decides; the delivery server is chosen by group later.
        (
            "smtp goes by location even without the active server's delivery endpoint",
            Request::protocol(Protocol::Smtp),
            ok(&p15, &mbx2),
            Proxy("mbx2"),
        ),
        (
            "smtp: map names an undefined server",
            Request::protocol(Protocol::Smtp),
            ok(&p15, &ghost),
            Reject(RejectKind::Temporary),
        ),
        // Anonymous HTTP: no mailbox to follow; this site's first server with the service.
        (
            "anonymous http",
            dav(WEST_URL),
            Facts::Anonymous,
            Proxy("mbx1"),
        ),
    ];
    for (name, request, facts, expected) in rows {
        let decision = route(&topo, &request, facts);
        assert_eq!(outcome(&decision), expected, "row `{name}`: {decision:?}");
        // Every decision explains itself in words.
        assert!(!decision.reason().to_string().is_empty(), "row `{name}`");
    }
}

#[test]
fn reasons_name_the_facts() {
    let topo = topology();
    let p = principal(V15, ProtocolSet::ALL);
    let d = route(
        &topo,
        &Request::protocol(Protocol::Imap),
        Facts::Authenticated {
            principal: &p,
            active: Ok(&ServerName::new("mbx2")),
        },
    );
    assert_eq!(
        d.reason().to_string(),
        "the active copy of DB01 is on mbx2 (site east): proxied"
    );
    assert!(
        route(
            &topo,
            &Request::protocol(Protocol::Imap),
            Facts::DirectoryUnavailable
        )
        .reason()
        .to_string()
        .contains("directory")
    );
}

#[test]
fn refusals_name_their_source() {
    let topo = topology();
    let imap = Request::protocol(Protocol::Imap);
    let p = principal(V15, ProtocolSet::ALL);
    let located = |active| Facts::Authenticated {
        principal: &p,
        active,
    };
    let ghost = ServerName::new("ghost");
    let mbx5 = ServerName::new("mbx5");
    let cases = [
        (Facts::AuthFailed, Source::Client),
        (Facts::DirectoryUnavailable, Source::Directory),
        (located(Err(LocationFailure::Unavailable)), Source::Locator),
        (
            located(Err(LocationFailure::UnknownDatabase)),
            Source::Locator,
        ),
        (located(Ok(&ghost)), Source::Internal),
        (located(Ok(&mbx5)), Source::Internal),
    ];
    for (facts, source) in cases {
        let decision = route(&topo, &imap, facts);
        assert_eq!(decision.reason().source(), Some(source), "{decision:?}");
    }
    // A proxy decision has no source.
    let proxied = route(&topo, &imap, located(Ok(&ServerName::new("mbx1"))));
    assert_eq!(proxied.reason().source(), None);
    // Nobody offers the protocol: a configuration that cannot serve it.
    let empty = Topology::new(topo.node.clone(), topo.sites.values().cloned(), []).unwrap();
    let nowhere = route(&empty, &dav(WEST_URL), Facts::Anonymous);
    assert_eq!(
        nowhere.reason().source(),
        Some(Source::Internal),
        "{nowhere:?}"
    );
}

#[test]
fn topology_rejects_undefined_sites() {
    let node = Node {
        name: "n".into(),
        site: "nowhere".into(),
        version: V15,
    };
    assert_eq!(
        Topology::new(node.clone(), [], []).unwrap_err(),
        crate::TopologyError::UnknownNodeSite(SiteName::new("nowhere"))
    );
    let here = Site {
        name: "nowhere".into(),
        external_urls: BTreeMap::new(),
        costs: BTreeMap::new(),
        imap_referral: None,
    };
    let err = Topology::new(node, [here], [server("mbx9", "elsewhere", true, true)]).unwrap_err();
    assert_eq!(err.to_string(), "server `mbx9`: unknown site `elsewhere`");
}

#[test]
fn namespace_parsing_is_total() {
    for url in [
        "",
        "://",
        "https://",
        "https://[::1]",
        "https://[::1]:8443/x",
        "https://h:notaport/",
        "mailto:x",
    ] {
        // Must not panic; unparseable URLs simply never match.
        let _ = same_namespace(url, url);
    }
    assert!(same_namespace(
        "https://[::1]:8443/a/",
        "https://[::1]:8443/a/b"
    ));
    assert!(!same_namespace(
        "https://h:notaport/",
        "https://h:notaport/"
    ));
}

#[test]
fn imap_logins_for_a_site_that_refers_get_a_referral_and_nothing_else_does() {
    let mut topo = topology();
    let mut sites: Vec<Site> = topo.sites.values().cloned().collect();
    for site in &mut sites {
        if site.name.as_str() == "east" {
            site.imap_referral = Some("imap.east.example.com:1993".into());
        }
    }
    topo = Topology::new(
        topo.node.clone(),
        sites,
        topo.servers.values().cloned().collect::<Vec<_>>(),
    )
    .unwrap();
    let p = principal(V15, ProtocolSet::ALL);
    let at = |server: &str, protocol: Protocol| {
        let name = ServerName::new(server);
        let facts = Facts::Authenticated {
            principal: &p,
            active: Ok(&name),
        };
        route(&topo, &Request::protocol(protocol), facts)
    };
    let referred = at("mbx2", Protocol::Imap);
    assert_eq!(
        outcome(&referred),
        Expect::Redirect("imap://alice%40example.com;AUTH=*@imap.east.example.com:1993/")
    );
    assert!(referred.reason().to_string().contains("site east"));
    // POP3 has no referrals; a site without a referral host and this node's own site proxy.
    assert_eq!(outcome(&at("mbx2", Protocol::Pop3)), Expect::Proxy("mbx2"));
    assert_eq!(outcome(&at("mbx4", Protocol::Imap)), Expect::Proxy("mbx4"));
    assert_eq!(outcome(&at("mbx1", Protocol::Imap)), Expect::Proxy("mbx1"));
}
