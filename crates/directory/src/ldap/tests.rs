//! Tests of the LDAP backend that need no server: escaping, templates, configuration, entry
//! mapping. `tests/ldap_slapd.rs` runs the rest against a real slapd.

use super::entry::Mapping;
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
    let template = Template::parse(Profile::OpenLdap.default_filter(), &["login"]).unwrap();
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
        ..Entry::default()
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
    let principal =
        principal_from_entry(&entry(ALICE), &Mapping::plain(LdapAttributes::default())).unwrap();
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
    let principal = principal_from_entry(&e, &Mapping::plain(names.clone())).unwrap();
    assert_eq!(principal.tenant, "contoso.com");
    assert_eq!(
        principal.protocols,
        [Protocol::Imap, Protocol::Pop3].into_iter().collect()
    );
    for disabled in ["FALSE", "false", "0", "no", " No "] {
        e.attrs.insert("mailenabled".into(), vec![disabled.into()]);
        let principal = principal_from_entry(&e, &Mapping::plain(names.clone())).unwrap();
        assert_eq!(principal.protocols, ProtocolSet::NONE, "{disabled}");
    }
    for enabled in ["TRUE", "yes", "1"] {
        e.attrs.insert("mailenabled".into(), vec![enabled.into()]);
        let principal = principal_from_entry(&e, &Mapping::plain(names.clone())).unwrap();
        assert!(principal.allows(Protocol::Imap), "{enabled}");
    }
    // With `enabled` switched off, the flag is not consulted.
    e.attrs.insert("mailenabled".into(), vec!["FALSE".into()]);
    let ignore = LdapAttributes {
        enabled: None,
        ..LdapAttributes::default()
    };
    assert!(
        principal_from_entry(&e, &Mapping::plain(ignore.clone()))
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
    let principal = principal_from_entry(&e, &Mapping::plain(LdapAttributes::default())).unwrap();
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
        let problem =
            principal_from_entry(&entry(&pairs), &Mapping::plain(names.clone())).unwrap_err();
        assert_eq!(problem.key, key);
        assert_eq!(problem.attribute, attribute);
        assert_eq!(problem.problem, "missing");
    }
    let mut e = entry(ALICE);
    e.attrs
        .insert("mailboxversion".into(), vec!["fifteen".into()]);
    assert_eq!(
        principal_from_entry(&e, &Mapping::plain(names.clone()))
            .unwrap_err()
            .key,
        "version"
    );
    let mut e = entry(ALICE);
    e.attrs.insert("mail".into(), vec!["not-an-address".into()]);
    assert_eq!(
        principal_from_entry(&e, &Mapping::plain(names.clone()))
            .unwrap_err()
            .key,
        "address"
    );
    let mut e = entry(ALICE);
    e.attrs.insert("mailboxdatabase".into(), vec!["  ".into()]);
    assert_eq!(
        principal_from_entry(&e, &Mapping::plain(names.clone()))
            .unwrap_err()
            .key,
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
    let parsed = parse_entry(good.clone(), &[]).unwrap();
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
        assert_eq!(parse_entry(tag.clone(), &[]), None, "{tag:?}");
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

// --- The active-directory profile: the pure decoding, the mapping, the keys ---

use super::ad;
use super::paging::{PAGED_RESULTS_OID, response_cookie};

/// The example of the Microsoft GUID layout: the text's first three fields, byte-reversed.
const MS_BYTES: [u8; 16] = [
    0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
];
const MS_TEXT: &str = "00112233-4455-6677-8899-aabbccddeeff";

#[test]
fn binary_guids_are_read_in_microsoft_byte_order() {
    let sequential: Vec<u8> = (0..16).collect();
    let cases: &[(&[u8], &str)] = &[
        (&MS_BYTES, MS_TEXT),
        (&sequential, "03020100-0504-0706-0809-0a0b0c0d0e0f"),
        (&[0; 16], "00000000-0000-0000-0000-000000000000"),
        (&[0xff; 16], "ffffffff-ffff-ffff-ffff-ffffffffffff"),
    ];
    for (bytes, text) in cases {
        assert_eq!(ad::guid_text_from_ms_bytes(bytes).as_deref(), Ok(*text));
        assert_eq!(
            ad::ms_bytes_from_guid_text(text).map(|b| b.to_vec()),
            Some(bytes.to_vec()),
            "{text}"
        );
    }
    // Not the RFC 4122 (big-endian) reading of the same bytes.
    assert_ne!(
        ad::guid_text_from_ms_bytes(&MS_BYTES).unwrap(),
        "33221100-5544-7766-8899-aabbccddeeff"
    );
}

#[test]
fn a_binary_guid_of_the_wrong_length_is_refused() {
    for length in [0, 1, 15, 17, 36] {
        let problem = ad::guid_text_from_ms_bytes(&vec![0x41; length]).unwrap_err();
        assert_eq!(
            problem,
            format!("a binary GUID has 16 bytes, this value has {length}")
        );
    }
}

#[test]
fn guid_text_is_accepted_hyphenated_or_bare_in_any_case() {
    for text in [
        MS_TEXT,
        "00112233-4455-6677-8899-AABBCCDDEEFF",
        "00112233445566778899aabbccddeeff",
    ] {
        assert_eq!(ad::ms_bytes_from_guid_text(text), Some(MS_BYTES), "{text}");
    }
    for text in [
        "",
        "0011223-34455-6677-8899-aabbccddeeff",
        "00112233-4455-6677-8899-aabbccddeef",
        "00112233-4455-6677-8899-aabbccddeeffa",
        "00112233-4455-6677-8899-aabbccddeefg",
        "0011223344556677-8899aabbccddeeff",
        "{00112233-4455-6677-8899-aabbccddeeff}",
        "0011223344556677889９aabbccddeeff",
        "*",
    ] {
        assert_eq!(ad::ms_bytes_from_guid_text(text), None, "{text}");
    }
    assert_eq!(
        ad::escape_filter_bytes(&MS_BYTES),
        "\\33\\22\\11\\00\\55\\44\\77\\66\\88\\99\\aa\\bb\\cc\\dd\\ee\\ff"
    );
    assert_eq!(ad::escape_filter_bytes(b"(*)"), "\\28\\2a\\29");
}

#[test]
fn proxy_addresses_give_the_primary_and_the_aliases() {
    let cases: &[(&[&str], Option<&str>, &[&str])] = &[
        (
            &["SMTP:Alice@example.com", "smtp:a.smith@example.com"],
            Some("Alice@example.com"),
            &["a.smith@example.com"],
        ),
        // Only the prefix's case tells primary from secondary; other types are ignored.
        (
            &[
                "smtp:one@example.com",
                "X500:/o=Org/ou=Exchange/cn=Recipients/cn=alice",
                "SIP:alice@example.com",
                "x400:c=US;a= ;p=Org;o=Exchange;s=Alice;",
                "SMTP:two@example.com",
            ],
            Some("two@example.com"),
            &["one@example.com"],
        ),
        (&["smtp:only@example.com"], None, &["only@example.com"]),
        // A second SMTP: (a broken entry): the first is primary, the second an alias.
        (
            &["SMTP:first@example.com", "SMTP:second@example.com"],
            Some("first@example.com"),
            &["second@example.com"],
        ),
        (
            &["", "SMTP:", "smtp:  ", "nocolon", "Smtp:mixed@example.com"],
            None,
            &[],
        ),
        (
            &[" SMTP: spaced@example.com "],
            Some("spaced@example.com"),
            &[],
        ),
    ];
    for (values, primary, secondary) in cases {
        let parsed = ad::parse_proxy_addresses(values.iter().copied());
        assert_eq!(parsed.primary.as_deref(), *primary, "{values:?}");
        assert_eq!(parsed.secondary, *secondary, "{values:?}");
    }
}

#[test]
fn the_database_is_the_first_rdn_of_home_mdb() {
    let ok: &[(&str, &str)] = &[
        (
            "CN=DB01,CN=Databases,CN=Exchange Administrative Group,CN=Administrative Groups,\
             CN=Contoso,CN=Microsoft Exchange,CN=Services,CN=Configuration,DC=contoso,DC=com",
            "DB01",
        ),
        ("CN=DB\\2C01,CN=Databases,DC=x", "DB,01"),
        ("CN=DB\\,02,CN=Databases,DC=x", "DB,02"),
        ("cn=Mailbox Database 03+ou=x,dc=x", "Mailbox Database 03"),
        ("CN=\\#04;DC=x", "#04"),
        ("CN=J\\C3\\BCrgen", "Jürgen"),
        ("CN=Jürgen,DC=x", "Jürgen"),
        ("CN=a\\=b\\+c\\\\d", "a=b+c\\d"),
        ("CN = DB05 ,DC=x", "DB05"),
    ];
    for (dn, database) in ok {
        assert_eq!(ad::first_rdn_value(dn).as_deref(), Ok(*database), "{dn}");
    }
    for dn in [
        "DB01",
        "",
        "CN=,DC=x",
        "CN=#04020102",
        "CN=a\\",
        "CN=a\\2",
        "CN=a\\2x",
        "CN=\\FF,DC=x",
    ] {
        assert!(ad::first_rdn_value(dn).is_err(), "{dn}");
    }
}

#[test]
fn user_account_control_disables_with_bit_0x2() {
    let cases: &[(&str, Result<bool, ()>)] = &[
        ("512", Ok(false)),   // NORMAL_ACCOUNT
        ("514", Ok(true)),    // NORMAL_ACCOUNT | ACCOUNTDISABLE
        ("66048", Ok(false)), // | DONT_EXPIRE_PASSWORD
        ("66050", Ok(true)),  // | DONT_EXPIRE_PASSWORD | ACCOUNTDISABLE
        ("2", Ok(true)),
        ("0", Ok(false)),
        (" 514 ", Ok(true)),
        ("-2147483646", Ok(true)), // 0x80000002 as AD's signed 32-bit integer
        ("", Err(())),
        ("abc", Err(())),
        ("0x2", Err(())),
        ("514 512", Err(())),
        ("5.14", Err(())),
        ("99999999999999999999", Err(())),
    ];
    for (value, expected) in cases {
        assert_eq!(
            ad::account_disabled(value).map_err(|_| ()),
            *expected,
            "{value:?}"
        );
    }
}

fn ad_mapping() -> Mapping {
    Mapping {
        names: Profile::ActiveDirectory.default_attributes(),
        profile: Profile::ActiveDirectory,
        default_version: Some(Version::new(15, 1, 0)),
    }
}

/// An AD-style entry of alice, with binary GUIDs (`objectGUID` of all 0x11, the mailbox GUID
/// `MS_BYTES`).
fn ad_entry() -> Entry {
    let mut e = entry(&[
        ("userPrincipalName", &["asmith@corp.example.com"]),
        ("mail", &["alice.mail@example.com"]),
        (
            "proxyAddresses",
            &[
                "smtp:alice.smith@example.com",
                "SMTP:Alice@Example.com",
                "X500:/o=Org/cn=alice",
                "smtp:not-an-address",
            ],
        ),
        ("displayName", &["Alice Smith"]),
        (
            "homeMDB",
            &["CN=DB01,CN=Databases,CN=Exchange,DC=example,DC=com"],
        ),
        ("userAccountControl", &["512"]),
        ("telephoneNumber", &["4001"]),
    ]);
    e.binary
        .insert("msexchmailboxguid".into(), vec![MS_BYTES.to_vec()]);
    e.binary.insert("objectguid".into(), vec![vec![0x11; 16]]);
    e
}

#[test]
fn maps_an_active_directory_entry() {
    let principal = principal_from_entry(&ad_entry(), &ad_mapping()).unwrap();
    assert_eq!(
        principal,
        Principal {
            address: "alice@example.com".into(),
            aliases: vec![
                "alice.mail@example.com".into(),
                "alice.smith@example.com".into()
            ],
            display_name: Some("Alice Smith".into()),
            mailbox_guid: MS_TEXT.into(),
            tenant: "example.com".into(),
            database: DatabaseName::new("DB01"),
            version: Version::new(15, 1, 0),
            protocols: ProtocolSet::ALL,
            sip_extension: Some("4001".into()),
        }
    );
}

#[test]
fn active_directory_entries_case_by_case() {
    type Change = fn(&mut Entry);
    type Check = fn(&Principal) -> bool;
    // (what, change to alice's entry, the problem's key or None, then a check of the principal)
    let cases: &[(&str, Change, Option<&str>, Check)] = &[
        (
            "disabled by userAccountControl",
            |e| {
                e.attrs
                    .insert("useraccountcontrol".into(), vec!["514".into()]);
            },
            None,
            |p| p.protocols == ProtocolSet::NONE,
        ),
        (
            "an unreadable userAccountControl makes the entry unusable",
            |e| {
                e.attrs
                    .insert("useraccountcontrol".into(), vec!["enabled".into()]);
            },
            Some("account_control"),
            |_| true,
        ),
        (
            "no msExchMailboxGuid: objectGUID",
            |e| {
                e.binary.remove("msexchmailboxguid");
            },
            None,
            |p| p.mailbox_guid == "11111111-1111-1111-1111-111111111111",
        ),
        (
            "a mailbox GUID of the wrong length",
            |e| {
                e.binary
                    .insert("msexchmailboxguid".into(), vec![vec![1; 15]]);
            },
            Some("mailbox_guid"),
            |_| true,
        ),
        (
            "no GUID at all",
            |e| e.binary.clear(),
            Some("mailbox_guid"),
            |_| true,
        ),
        (
            "no SMTP: proxy address: mail is primary",
            |e| {
                e.attrs.insert(
                    "proxyaddresses".into(),
                    vec!["smtp:alice.smith@example.com".into()],
                );
            },
            None,
            |p| p.address == "alice.mail@example.com" && p.aliases == ["alice.smith@example.com"],
        ),
        (
            "neither SMTP: nor mail",
            |e| {
                e.attrs.remove("mail");
                e.attrs.remove("proxyaddresses");
            },
            Some("address"),
            |_| true,
        ),
        (
            "an SMTP: value that is no address",
            |e| {
                e.attrs
                    .insert("proxyaddresses".into(), vec!["SMTP:alice".into()]);
            },
            Some("proxy_addresses"),
            |_| true,
        ),
        (
            "homeMDB that is not a DN",
            |e| {
                e.attrs.insert("homemdb".into(), vec!["DB01".into()]);
            },
            Some("database"),
            |_| true,
        ),
        (
            "homeMDB with an escaped comma",
            |e| {
                e.attrs
                    .insert("homemdb".into(), vec!["CN=DB\\2C01,CN=Databases".into()]);
            },
            None,
            |p| p.database == DatabaseName::new("DB,01"),
        ),
        (
            "a version attribute beats the default",
            |e| {
                e.attrs.insert("mailboxversion".into(), vec!["14.3".into()]);
            },
            None,
            |p| p.version == Version::new(14, 3, 0),
        ),
    ];
    for (what, change, problem, check) in cases {
        let mut e = ad_entry();
        change(&mut e);
        match (principal_from_entry(&e, &ad_mapping()), problem) {
            (Ok(principal), None) => assert!(check(&principal), "{what}: {principal:?}"),
            (Err(found), Some(key)) => assert_eq!(found.key, *key, "{what}: {found:?}"),
            (other, _) => panic!("{what}: {other:?}"),
        }
    }
    // Without a default version, the attribute is required again.
    let mapping = Mapping {
        default_version: None,
        ..ad_mapping()
    };
    assert_eq!(
        principal_from_entry(&ad_entry(), &mapping).unwrap_err().key,
        "version"
    );
}

#[test]
fn binary_attributes_keep_their_bytes() {
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
    // One GUID happens to be valid UTF-8 (all ASCII); it must still not be taken as text.
    let tag = constructed(
        4,
        TagClass::Application,
        vec![
            octets(b"cn=a,dc=x"),
            constructed(
                16,
                TagClass::Universal,
                vec![
                    attribute("objectGUID", &[b"AAAAAAAAAAAAAAAA"]),
                    attribute("msExchMailboxGuid", &[&MS_BYTES]),
                    attribute("mail", &[b"a@x.org"]),
                ],
            ),
        ],
    );
    let binary = ad_mapping().binary_attributes();
    assert_eq!(binary, ["msExchMailboxGuid", "objectGUID"]);
    let parsed = parse_entry(tag.clone(), &binary).unwrap();
    assert_eq!(
        parsed.binary_values("OBJECTGUID"),
        [b"AAAAAAAAAAAAAAAA".to_vec()]
    );
    assert_eq!(
        parsed.binary_values("msexchmailboxguid"),
        [MS_BYTES.to_vec()]
    );
    assert!(parsed.values("objectguid").is_empty());
    assert_eq!(parsed.values("mail"), ["a@x.org".to_owned()]);
    // The text profile reads no attribute as binary: the non-UTF-8 GUID is dropped as before.
    let text = parse_entry(tag, &[]).unwrap();
    assert!(text.binary.is_empty());
    assert!(text.values("msexchmailboxguid").is_empty());
    assert_eq!(text.values("objectguid"), ["AAAAAAAAAAAAAAAA".to_owned()]);
}

fn ad_config() -> LdapConfig {
    LdapConfig::with_profile(
        Profile::ActiveDirectory,
        "ldap://127.0.0.1:3389",
        "dc=example,dc=com",
    )
}

#[test]
fn guid_lookups_filter_by_the_profiles_form() {
    let ad = LdapDirectory::new(&ad_config()).unwrap();
    let bytes = "\\33\\22\\11\\00\\55\\44\\77\\66\\88\\99\\aa\\bb\\cc\\dd\\ee\\ff";
    let expected =
        format!("(|(msExchMailboxGuid={bytes})(&(!(msExchMailboxGuid=*))(objectGUID={bytes})))");
    for guid in [MS_TEXT, "00112233445566778899AABBCCDDEEFF"] {
        let filter = ad.guid_filter(guid).unwrap();
        assert_eq!(filter, expected);
        assert!(ldap3::parse_filter(&filter).is_ok());
    }
    // Not a GUID: nothing is asked.
    assert_eq!(ad.guid_filter("alice@example.com"), None);
    assert_eq!(ad.guid_filter("*"), None);

    // The text profile compares text, escaped.
    let text = LdapDirectory::new(&config()).unwrap();
    assert_eq!(
        text.guid_filter(MS_TEXT).as_deref(),
        Some("(entryUUID=00112233-4455-6677-8899-aabbccddeeff)")
    );
    assert_eq!(
        text.guid_filter("a*)(x=*").as_deref(),
        Some("(entryUUID=a\\2a\\29\\28x=\\2a)")
    );
    assert_eq!(text.guid_filter(""), None);
}

#[test]
fn the_active_directory_profile_sets_the_defaults() {
    let config: LdapConfig = toml::from_str(
        "profile = \"active-directory\"\nurl = \"ldaps://dc1.corp.example.com\"\n\
         base = \"DC=corp,DC=example,DC=com\"\n",
    )
    .unwrap();
    config.validate().unwrap();
    assert_eq!(config.profile, Profile::ActiveDirectory);
    assert_eq!(
        config.filter,
        "(|(userPrincipalName={login})(mail={login})(proxyAddresses=smtp:{login}))"
    );
    assert_eq!(config.default_version.as_deref(), Some("15.1"));
    assert_eq!(config.page_size, 500);
    let a = &config.attributes;
    assert_eq!(
        (
            a.address.as_str(),
            a.aliases.as_str(),
            a.proxy_addresses.as_str(),
            a.display_name.as_str(),
            a.mailbox_guid.as_str(),
            a.mailbox_guid_fallback.as_str(),
            a.database.as_str(),
            a.account_control.as_str(),
            a.sip_extension.as_str(),
            a.enabled.as_deref(),
        ),
        (
            "mail",
            "",
            "proxyAddresses",
            "displayName",
            "msExchMailboxGuid",
            "objectGUID",
            "homeMDB",
            "userAccountControl",
            "telephoneNumber",
            None,
        )
    );
    // Every default stays overridable.
    let config = toml::from_str::<LdapConfig>(
        "profile = \"active-directory\"\nurl = \"ldap://x\"\nbase = \"dc=x\"\n\
         filter = \"(sAMAccountName={local})\"\npage_size = 1000\ndefault_version = \"\"\n\
         [attributes]\nmailbox_guid = \"objectGUID\"\nmailbox_guid_fallback = \"\"\n\
         sip_extension = \"msRTCSIP-Line\"\n",
    );
    let config = config.unwrap();
    assert_eq!(config.filter, "(sAMAccountName={local})");
    assert_eq!(config.page_size, 1000);
    assert_eq!(config.default_version, None);
    assert_eq!(config.attributes.mailbox_guid, "objectGUID");
    assert_eq!(config.attributes.mailbox_guid_fallback, "");
    assert_eq!(config.attributes.sip_extension, "msRTCSIP-Line");
    assert_eq!(config.attributes.proxy_addresses, "proxyAddresses");
    // Without a profile: the openldap defaults, as before.
    let plain: LdapConfig = toml::from_str("url = \"ldap://x\"\nbase = \"dc=x\"\n").unwrap();
    assert_eq!(plain.profile, Profile::OpenLdap);
    assert_eq!(plain.attributes, LdapAttributes::default());
    assert_eq!(plain.default_version, None);
    assert_eq!(plain.filter, Profile::OpenLdap.default_filter());
}

#[test]
fn profile_keys_are_validated_by_name() {
    let cases: &[(&str, &str)] = &[
        (
            "profile = \"ad\"",
            "directory.profile: `ad` is not a profile (expected `openldap` or `active-directory`)",
        ),
        ("profile = \"Active-Directory\"", "directory.profile:"),
        ("page_size = 0", "directory.page_size:"),
        ("page_size = 3000000000", "directory.page_size:"),
        (
            "default_version = \"fifteen\"",
            "directory.default_version:",
        ),
    ];
    for (line, expected) in cases {
        let config: LdapConfig =
            toml::from_str(&format!("url = \"ldap://x\"\nbase = \"dc=x\"\n{line}\n")).unwrap();
        let message = config.validate().unwrap_err();
        assert!(message.starts_with(expected), "{line}: {message}");
        assert!(LdapDirectory::new(&config).is_err(), "{line}");
    }
    let unknown = toml::from_str::<LdapConfig>(
        "url = \"ldap://x\"\nbase = \"dc=x\"\n[attributes]\nproxy = \"p\"\n",
    );
    assert!(unknown.is_err());
    assert_eq!(
        invalid(|c| c.attributes.account_control = "user Account".into())
            .split(':')
            .next(),
        Some("directory.attributes.account_control")
    );
}

#[test]
fn the_paged_results_cookie_is_read_without_panicking() {
    use ldap3::controls::{Control, RawControl};
    let control = |value: Option<&[u8]>| {
        Control(
            None,
            RawControl {
                ctype: PAGED_RESULTS_OID.to_owned(),
                crit: false,
                val: value.map(<[u8]>::to_vec),
            },
        )
    };
    // SEQUENCE { INTEGER 0, OCTET STRING "ab" } and { INTEGER 5, OCTET STRING "" }.
    let more = [0x30, 0x07, 0x02, 0x01, 0x00, 0x04, 0x02, b'a', b'b'];
    let last = [0x30, 0x05, 0x02, 0x01, 0x05, 0x04, 0x00];
    assert_eq!(response_cookie(&[]), Ok(None));
    assert_eq!(
        response_cookie(&[control(Some(&more))]),
        Ok(Some(b"ab".to_vec()))
    );
    assert_eq!(
        response_cookie(&[control(Some(&last))]),
        Ok(Some(Vec::new()))
    );
    let other = Control(
        None,
        RawControl {
            ctype: "1.2.3".into(),
            crit: false,
            val: None,
        },
    );
    assert_eq!(response_cookie(&[other]), Ok(None));
    for broken in [
        None,
        Some(&[][..]),
        Some(&[0x30][..]),
        Some(&[0x04, 0x00][..]),
        Some(&[0x30, 0x03, 0x02, 0x01, 0x00][..]),
        Some(&[0x30, 0x04, 0x30, 0x00, 0x04, 0x00][..]),
        Some(&[0x30, 0x05, 0x02, 0x01, 0x00, 0x30, 0x00][..]),
        Some(&[0x30, 0x7f, 0x02][..]),
    ] {
        let result = response_cookie(&[control(broken)]);
        assert!(
            result
                .as_ref()
                .is_err_and(|e| e.starts_with("malformed paged results control")),
            "{broken:?}: {result:?}"
        );
    }
}
