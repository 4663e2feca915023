//! Tests of the LDAP backend that need no server: escaping, templates, configuration, entry
//! mapping. `tests/ldap_slapd.rs` runs the rest against a real slapd.

use super::config::default_filter;
use super::*;
use ldap3::asn1::{PL, StructureTag, TagClass};
use mailfront_model::{DatabaseName, Protocol, ProtocolSet, Version};
use serde::Deserialize;

#[test]
fn filter_values_are_escaped_per_rfc4515() {
    assert_eq!(
        escape_filter_value("alice@example.com"),
        "alice@example.com"
    );
    assert_eq!(escape_filter_value("*"), "\\2a");
    assert_eq!(escape_filter_value("a*)(uid=*"), "a\\2a\\29\\28uid=\\2a");
    assert_eq!(escape_filter_value("back\\slash"), "back\\5cslash");
    assert_eq!(escape_filter_value("nul\0byte"), "nul\\00byte");
    assert_eq!(escape_filter_value("(x)"), "\\28x\\29");
    // UTF-8 goes through as it is (RFC 4515 allows UTF-8 in values).
    assert_eq!(
        escape_filter_value("jürgen@exämple.com"),
        "jürgen@exämple.com"
    );
    assert_eq!(escape_filter_value(""), "");
}

#[test]
fn an_injection_attempt_stays_one_assertion_value() {
    let template = Template::parse(&default_filter(), &["login"]).unwrap();
    let filter = template.expand("*)(objectClass=*");
    assert_eq!(
        filter,
        "(|(mail=\\2a\\29\\28objectClass=\\2a)(mailAlternateAddress=\\2a\\29\\28objectClass=\\2a))"
    );
    assert!(ldap3::parse_filter(&filter).is_ok());
}

#[test]
fn dn_values_are_escaped_per_rfc4514() {
    assert_eq!(escape_dn_value("alice"), "alice");
    assert_eq!(escape_dn_value("a,b"), "a\\,b");
    assert_eq!(escape_dn_value("a+b=c"), "a\\+b=c");
    assert_eq!(escape_dn_value("\"q\";<>\\"), "\\\"q\\\"\\;\\<\\>\\\\");
    assert_eq!(escape_dn_value(" lead"), "\\ lead");
    assert_eq!(escape_dn_value("trail "), "trail\\ ");
    assert_eq!(escape_dn_value(" "), "\\ ");
    assert_eq!(escape_dn_value("#hash"), "\\#hash");
    assert_eq!(escape_dn_value("mid#dle mid"), "mid#dle mid");
    assert_eq!(escape_dn_value("nul\0"), "nul\\00");
    assert_eq!(escape_dn_value("jürgen"), "jürgen");
    assert_eq!(escape_dn_value(""), "");
}

#[test]
fn dn_templates_split_the_login() {
    let template = Template::parse(
        "uid={local},ou={domain},dc=example,dc=com",
        &["login", "local", "domain"],
    )
    .unwrap();
    assert_eq!(
        template.expand_dn("alice@example.com"),
        "uid=alice,ou=example.com,dc=example,dc=com"
    );
    assert_eq!(
        template.expand_dn("a,dmin=x@evil"),
        "uid=a\\,dmin=x,ou=evil,dc=example,dc=com"
    );
    // The last `@` splits: the local part may be quoted and contain one.
    assert_eq!(
        template.expand_dn("\"a@b\"@example.com"),
        "uid=\\\"a@b\\\",ou=example.com,dc=example,dc=com"
    );
    assert_eq!(
        template.expand_dn("alice"),
        "uid=alice,ou=,dc=example,dc=com"
    );
    let whole = Template::parse("mail={login},dc=x", &["login"]).unwrap();
    assert_eq!(whole.expand_dn("a+b@x.org"), "mail=a\\+b@x.org,dc=x");
}

#[test]
fn templates_reject_unknown_placeholders() {
    assert!(
        Template::parse("(mail={user})", &["login"])
            .unwrap_err()
            .contains("{user}")
    );
    assert!(
        Template::parse("(mail={login)", &["login"])
            .unwrap_err()
            .contains("unclosed")
    );
    assert!(
        Template::parse("(mail=login})", &["login"])
            .unwrap_err()
            .contains("unmatched")
    );
    assert!(
        !Template::parse("(mail=x)", &["login"])
            .unwrap()
            .uses_placeholders()
    );
}

fn config() -> LdapConfig {
    LdapConfig::new("ldap://127.0.0.1:3389", "dc=example,dc=com")
}

fn invalid(change: impl FnOnce(&mut LdapConfig)) -> String {
    let mut config = config();
    change(&mut config);
    config.validate().unwrap_err()
}

#[test]
fn defaults_are_valid() {
    config().validate().unwrap();
    let config = config();
    assert!(!config.starttls);
    assert_eq!(
        config.filter,
        "(|(mail={login})(mailAlternateAddress={login}))"
    );
    assert_eq!(config.timeout, Duration::from_secs(5));
    assert_eq!(config.pool_size, 8);
    assert_eq!(config.cache_ttl, Duration::from_secs(60));
    assert_eq!(config.negative_cache_ttl, Duration::from_secs(10));
    assert_eq!(config.attributes.enabled.as_deref(), Some("mailEnabled"));
    assert_eq!(config.attributes.tenant, None);
}

#[test]
fn validation_names_the_key() {
    let cases: Vec<(String, &str)> = vec![
        (invalid(|c| c.url = "http://x".into()), "directory.url:"),
        (invalid(|c| c.url = "ldap://".into()), "directory.url:"),
        (invalid(|c| c.url = "ldap:///".into()), "directory.url:"),
        (invalid(|c| c.url = "ldap://h:0".into()), "directory.url:"),
        (invalid(|c| c.url = "ldap://h:x".into()), "directory.url:"),
        (
            invalid(|c| c.url = "ldap://h/dc=x".into()),
            "directory.url:",
        ),
        (
            invalid(|c| {
                c.url = "ldaps://h".into();
                c.starttls = true;
            }),
            "directory.starttls:",
        ),
        (
            invalid(|c| c.ca_file = Some("ca.pem".into())),
            "directory.ca_file:",
        ),
        (invalid(|c| c.base = " ".into()), "directory.base:"),
        (
            invalid(|c| c.filter = "(mail=x)".into()),
            "directory.filter:",
        ),
        (
            invalid(|c| c.filter = "(mail={login}".into()),
            "directory.filter:",
        ),
        (
            invalid(|c| c.filter = "(mail={name})".into()),
            "directory.filter:",
        ),
        (
            invalid(|c| c.user_dn = Some("uid=x".into())),
            "directory.user_dn:",
        ),
        (
            invalid(|c| c.user_dn = Some("uid={who}".into())),
            "directory.user_dn:",
        ),
        (
            invalid(|c| c.service_dn = Some("cn=s".into())),
            "directory.service_password_file:",
        ),
        (
            invalid(|c| c.service_password_file = Some("pw".into())),
            "directory.service_dn:",
        ),
        (
            invalid(|c| c.timeout = Duration::ZERO),
            "directory.timeout:",
        ),
        (invalid(|c| c.pool_size = 0), "directory.pool_size:"),
        (
            invalid(|c| c.attributes.database = String::new()),
            "directory.attributes.database:",
        ),
        (
            invalid(|c| c.attributes.display_name = "c n".into()),
            "directory.attributes.display_name:",
        ),
        (
            invalid(|c| c.attributes.tenant = Some("1x".into())),
            "directory.attributes.tenant:",
        ),
    ];
    for (message, key) in cases {
        assert!(
            message.starts_with(key),
            "{message:?} should start with {key}"
        );
    }
}

#[test]
fn valid_variants() {
    for url in [
        "ldap://ldap.example.com",
        "LDAPS://ldap.example.com:636/",
        "ldap://[::1]:389",
        "ldap://127.0.0.1:3389",
    ] {
        let mut c = config();
        c.url = url.into();
        c.validate().unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    let mut c = config();
    c.starttls = true;
    c.ca_file = Some("ca.pem".into());
    c.user_dn = Some("uid={local},ou=people,dc=example,dc=com".into());
    c.attributes.mailbox_guid = "2.5.4.45".into();
    c.attributes.sip_extension = String::new();
    c.attributes.enabled = Some(String::new());
    c.validate().unwrap();
}

#[test]
fn clear_text_to_a_remote_server_is_a_warning() {
    assert!(config().warnings().is_empty());
    let mut c = config();
    c.url = "ldap://localhost".into();
    assert!(c.warnings().is_empty());
    c.url = "ldap://ldap.example.com".into();
    assert!(c.warnings()[0].starts_with("directory.url:"));
    c.starttls = true;
    assert!(c.warnings().is_empty());
    c.starttls = false;
    c.url = "ldaps://ldap.example.com".into();
    assert!(c.warnings().is_empty());
}

#[test]
fn parses_from_toml_with_defaults_and_durations() {
    let config: LdapConfig = toml::from_str(
        r#"
        url = "ldaps://ldap.example.com"
        base = "ou=people,dc=example,dc=com"
        timeout = "1500ms"
        cache_ttl = "2m"
        [attributes]
        database = "exchDb"
        tenant = "o"
        "#,
    )
    .unwrap();
    config.validate().unwrap();
    assert_eq!(config.timeout, Duration::from_millis(1500));
    assert_eq!(config.cache_ttl, Duration::from_secs(120));
    assert_eq!(config.negative_cache_ttl, Duration::from_secs(10));
    assert_eq!(config.attributes.database, "exchDb");
    assert_eq!(config.attributes.address, "mail");
    assert_eq!(config.attributes.tenant.as_deref(), Some("o"));
    assert_eq!(config.cache_settings().ttl, Duration::from_secs(120));

    let unknown = toml::from_str::<LdapConfig>("url = \"ldap://x\"\nbase = \"dc=x\"\nbind = 1\n");
    assert!(unknown.unwrap_err().to_string().contains("unknown field"));
    let unknown_attribute = toml::from_str::<LdapConfig>(
        "url = \"ldap://x\"\nbase = \"dc=x\"\n[attributes]\nquota = \"q\"\n",
    );
    assert!(unknown_attribute.is_err());
}

fn entry(pairs: &[(&str, &[&str])]) -> Entry {
    Entry {
        dn: "uid=alice,ou=people,dc=example,dc=com".into(),
        attrs: pairs
            .iter()
            .map(|(name, values)| {
                (
                    name.to_ascii_lowercase(),
                    values.iter().map(|v| (*v).to_owned()).collect(),
                )
            })
            .collect(),
    }
}

const ALICE: &[(&str, &[&str])] = &[
    ("mail", &["Alice@Example.com"]),
    ("mailAlternateAddress", &["A.Smith@example.com", "bad"]),
    ("cn", &["Alice Smith"]),
    ("entryUUID", &["4f0b3c4e-0000-1000-8000-000000000001"]),
    ("mailboxDatabase", &["DB01"]),
    ("mailboxVersion", &["15.1"]),
    ("telephoneNumber", &["4001"]),
];

#[test]
fn maps_an_entry_to_a_principal() {
    let principal = principal_from_entry(&entry(ALICE), &LdapAttributes::default()).unwrap();
    assert_eq!(
        principal,
        Principal {
            address: "alice@example.com".into(),
            aliases: vec!["a.smith@example.com".into()],
            display_name: Some("Alice Smith".into()),
            mailbox_guid: "4f0b3c4e-0000-1000-8000-000000000001".into(),
            tenant: "example.com".into(),
            database: DatabaseName::new("DB01"),
            version: Version::new(15, 1, 0),
            protocols: ProtocolSet::ALL,
            sip_extension: Some("4001".into()),
        }
    );
}

#[test]
fn protocols_enabled_and_tenant() {
    let names = LdapAttributes {
        tenant: Some("o".into()),
        ..LdapAttributes::default()
    };
    let mut e = entry(ALICE);
    e.attrs.insert("o".into(), vec!["Contoso.COM".into()]);
    e.attrs.insert(
        "mailprotocol".into(),
        vec!["IMAP".into(), "pop3".into(), "gopher".into()],
    );
    let principal = principal_from_entry(&e, &names).unwrap();
    assert_eq!(principal.tenant, "contoso.com");
    assert_eq!(
        principal.protocols,
        [Protocol::Imap, Protocol::Pop3].into_iter().collect()
    );
    for disabled in ["FALSE", "false", "0", "no", " No "] {
        e.attrs.insert("mailenabled".into(), vec![disabled.into()]);
        let principal = principal_from_entry(&e, &names).unwrap();
        assert_eq!(principal.protocols, ProtocolSet::NONE, "{disabled}");
    }
    for enabled in ["TRUE", "yes", "1"] {
        e.attrs.insert("mailenabled".into(), vec![enabled.into()]);
        let principal = principal_from_entry(&e, &names).unwrap();
        assert!(principal.allows(Protocol::Imap), "{enabled}");
    }
    // With `enabled` switched off, the flag is not consulted.
    e.attrs.insert("mailenabled".into(), vec!["FALSE".into()]);
    let ignore = LdapAttributes {
        enabled: None,
        ..LdapAttributes::default()
    };
    assert!(
        principal_from_entry(&e, &ignore)
            .unwrap()
            .allows(Protocol::Imap)
    );
}

#[test]
fn further_address_values_are_aliases() {
    let mut e = entry(ALICE);
    e.attrs.insert(
        "mail".into(),
        vec!["alice@example.com".into(), "Alice2@example.com".into()],
    );
    let principal = principal_from_entry(&e, &LdapAttributes::default()).unwrap();
    assert_eq!(principal.address, "alice@example.com");
    assert_eq!(
        principal.aliases,
        vec![
            "alice2@example.com".to_owned(),
            "a.smith@example.com".to_owned()
        ]
    );
    assert!(principal.answers_to("ALICE2@example.com"));
}

#[test]
fn incomplete_entries_name_the_attribute() {
    let names = LdapAttributes::default();
    for (attribute, key) in [
        ("mail", "address"),
        ("entryUUID", "mailbox_guid"),
        ("mailboxDatabase", "database"),
        ("mailboxVersion", "version"),
    ] {
        let pairs: Vec<(&str, &[&str])> = ALICE
            .iter()
            .copied()
            .filter(|(n, _)| *n != attribute)
            .collect();
        let problem = principal_from_entry(&entry(&pairs), &names).unwrap_err();
        assert_eq!(problem.key, key);
        assert_eq!(problem.attribute, attribute);
        assert_eq!(problem.problem, "missing");
    }
    let mut e = entry(ALICE);
    e.attrs
        .insert("mailboxversion".into(), vec!["fifteen".into()]);
    assert_eq!(principal_from_entry(&e, &names).unwrap_err().key, "version");
    let mut e = entry(ALICE);
    e.attrs.insert("mail".into(), vec!["not-an-address".into()]);
    assert_eq!(principal_from_entry(&e, &names).unwrap_err().key, "address");
    let mut e = entry(ALICE);
    e.attrs.insert("mailboxdatabase".into(), vec!["  ".into()]);
    assert_eq!(
        principal_from_entry(&e, &names).unwrap_err().key,
        "database"
    );
}

fn octets(bytes: &[u8]) -> StructureTag {
    StructureTag {
        class: TagClass::Universal,
        id: 4,
        payload: PL::P(bytes.to_vec()),
    }
}

fn constructed(id: u64, class: TagClass, inner: Vec<StructureTag>) -> StructureTag {
    StructureTag {
        class,
        id,
        payload: PL::C(inner),
    }
}

#[test]
fn parses_search_result_entries_without_panicking() {
    let attribute = |name: &str, values: &[&[u8]]| {
        constructed(
            16,
            TagClass::Universal,
            vec![
                octets(name.as_bytes()),
                constructed(
                    17,
                    TagClass::Universal,
                    values.iter().map(|v| octets(v)).collect(),
                ),
            ],
        )
    };
    let good = constructed(
        4,
        TagClass::Application,
        vec![
            octets(b"uid=a,dc=x"),
            constructed(
                16,
                TagClass::Universal,
                vec![
                    attribute("Mail", &[b"a@x.org"]),
                    attribute("jpegPhoto", &[b"\xff\xd8"]),
                ],
            ),
        ],
    );
    let parsed = parse_entry(good.clone()).unwrap();
    assert_eq!(parsed.dn, "uid=a,dc=x");
    assert_eq!(parsed.values("MAIL"), ["a@x.org".to_owned()]);
    assert!(parsed.values("jpegphoto").is_empty());

    // Every way of cutting the structure short gives None, never a panic.
    let mut broken = vec![
        octets(b"x"),
        constructed(5, TagClass::Application, vec![]),
        constructed(4, TagClass::Application, vec![]),
        constructed(4, TagClass::Application, vec![octets(b"dn")]),
        constructed(4, TagClass::Application, vec![octets(b"\xff"), octets(b"")]),
        constructed(4, TagClass::Application, vec![octets(b"dn"), octets(b"")]),
        constructed(
            4,
            TagClass::Application,
            vec![
                octets(b"dn"),
                constructed(16, TagClass::Universal, vec![octets(b"flat")]),
            ],
        ),
        constructed(
            4,
            TagClass::Application,
            vec![
                octets(b"dn"),
                constructed(
                    16,
                    TagClass::Universal,
                    vec![constructed(16, TagClass::Universal, vec![octets(b"mail")])],
                ),
            ],
        ),
    ];
    broken.push(StructureTag {
        class: TagClass::Application,
        id: 4,
        payload: PL::P(b"primitive".to_vec()),
    });
    for tag in broken {
        assert_eq!(parse_entry(tag.clone()), None, "{tag:?}");
    }
}

#[test]
fn setup_reads_the_files_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.service_dn = Some("cn=svc,dc=example,dc=com".into());
    c.service_password_file = Some(dir.path().join("missing.pw"));
    let error = LdapDirectory::new(&c).unwrap_err().to_string();
    assert!(
        error.starts_with("directory.service_password_file:"),
        "{error}"
    );

    let pw = dir.path().join("svc.pw");
    std::fs::write(&pw, "").unwrap();
    c.service_password_file = Some(pw.clone());
    assert!(LdapDirectory::new(&c).is_err());
    std::fs::write(&pw, "s3cret\n").unwrap();
    let directory = LdapDirectory::new(&c).unwrap();
    let (_, password) = directory.settings.service.as_ref().unwrap();
    assert_eq!(password.expose(), "s3cret");
    assert!(!format!("{directory:?}").contains("s3cret"));

    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let mut c = config();
    c.url = "ldaps://127.0.0.1".into();
    c.ca_file = Some(ca);
    let error = LdapDirectory::new(&c).unwrap_err().to_string();
    assert!(error.starts_with("directory.ca_file:"), "{error}");
    c.ca_file = Some(dir.path().join("missing.pem"));
    assert!(LdapDirectory::new(&c).is_err());
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn secret(text: &str) -> Secret<Vec<u8>> {
    Secret::new(text.as_bytes().to_vec())
}

#[tokio::test]
async fn an_empty_password_is_refused_before_any_connection() {
    // Nothing listens there: if the directory tried to connect, it would say "unavailable".
    let mut c = config();
    c.url = format!("ldap://127.0.0.1:{}", closed_port());
    let directory = LdapDirectory::new(&c).unwrap();
    assert_eq!(
        directory
            .authenticate("alice@example.com", &secret(""))
            .await,
        Err(AuthError::InvalidCredentials)
    );
    assert_eq!(
        directory.authenticate("", &secret("pw")).await,
        Err(AuthError::InvalidCredentials)
    );
    assert_eq!(
        directory
            .authenticate("alice@example.com", &Secret::new(vec![0xff, 0xfe]))
            .await,
        Err(AuthError::InvalidCredentials)
    );
    assert_eq!(directory.lookup("").await, Ok(None));
}

#[tokio::test]
async fn a_server_that_is_not_there_is_unavailable_and_the_password_stays_out() {
    let mut c = config();
    c.url = format!("ldap://127.0.0.1:{}", closed_port());
    let directory = LdapDirectory::new(&c).unwrap();
    match directory
        .authenticate("alice@example.com", &secret("hunter2-secret"))
        .await
    {
        Err(AuthError::Unavailable(message)) => {
            assert!(message.contains(&c.url), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(directory.lookup("alice@example.com").await.is_err());
    assert!(directory.probe().await.is_err());
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    // Accepts connections (the kernel does) but never speaks LDAP.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = config();
    c.url = format!("ldap://127.0.0.1:{}", listener.local_addr().unwrap().port());
    c.timeout = Duration::from_millis(300);
    let directory = LdapDirectory::new(&c).unwrap();
    let started = std::time::Instant::now();
    let result = directory.lookup("alice@example.com").await;
    let elapsed = started.elapsed();
    let message = result.unwrap_err().0;
    assert!(message.contains("no answer within 300ms"), "{message}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[test]
fn embeds_in_an_internally_tagged_directory_table() {
    // How the binary is expected to embed it: `[directory] backend = "ldap"` plus these keys.
    #[derive(Deserialize)]
    #[serde(tag = "backend", rename_all = "lowercase")]
    enum Backend {
        Ldap(LdapConfig),
    }
    let Backend::Ldap(config) = toml::from_str(
        "backend = \"ldap\"\nurl = \"ldap://127.0.0.1\"\nbase = \"dc=x\"\ntimeout = \"2s\"\n\
         [attributes]\nversion = \"v\"\n",
    )
    .unwrap();
    assert_eq!(config.timeout, Duration::from_secs(2));
    assert_eq!(config.attributes.version, "v");
    let unknown = toml::from_str::<Backend>(
        "backend = \"ldap\"\nurl = \"ldap://127.0.0.1\"\nbase = \"dc=x\"\nuser = \"x\"\n",
    );
    assert!(unknown.is_err());
}
