use super::*;
use mailfront_password::{Scheme, hash_password};

fn ssha(password: &str) -> String {
    hash_password(Scheme::Ssha, password.as_bytes()).unwrap()
}

fn set(protocols: &[Protocol]) -> ProtocolSet {
    protocols.iter().copied().collect()
}

#[test]
fn ldap_values_parse_or_name_the_part() {
    let hash = ssha("secret");
    let plain = "{PLAIN}secret".to_owned();
    type Expected = Result<(&'static str, ProtocolSet), AppPasswordError>;
    let cases: Vec<(String, Expected)> = vec![
        (
            format!("phone;imap,submission;2026-12-04T17:00:00Z;{hash}"),
            Ok(("phone", set(&[Protocol::Imap, Protocol::Submission]))),
        ),
        (
            format!(" phone ; IMAP , pop3 ;2026-12-04T17:00:00Z; {hash}"),
            Ok(("phone", set(&[Protocol::Imap, Protocol::Pop3]))),
        ),
        (
            "phone;imap;2026-12-04T17:00:00Z".to_owned(),
            Err(AppPasswordError::Fields),
        ),
        (String::new(), Err(AppPasswordError::Fields)),
        (
            format!(";imap;2026-12-04T17:00:00Z;{hash}"),
            Err(AppPasswordError::Name),
        ),
        (
            format!("my phone;imap;2026-12-04T17:00:00Z;{hash}"),
            Err(AppPasswordError::Name),
        ),
        (
            format!("{};imap;2026-12-04T17:00:00Z;{hash}", "n".repeat(65)),
            Err(AppPasswordError::Name),
        ),
        (
            format!("phone;;2026-12-04T17:00:00Z;{hash}"),
            Err(AppPasswordError::NoProtocol),
        ),
        (
            format!("phone;imap,gopher;2026-12-04T17:00:00Z;{hash}"),
            Err(AppPasswordError::Protocol(
                "unknown protocol `gopher` (expected one of imap, pop3, submission, smtp, http, sip)"
                    .to_owned(),
            )),
        ),
        (
            format!("phone;imap;yesterday;{hash}"),
            Err(AppPasswordError::Created("yesterday".to_owned())),
        ),
        (
            "phone;imap;2026-12-04T17:00:00Z;$6$nothing".to_owned(),
            Err(AppPasswordError::Hash(PasswordHashError::MissingScheme)),
        ),
        (
            format!("phone;imap;2026-12-04T17:00:00Z;{plain}"),
            Err(AppPasswordError::Plaintext),
        ),
    ];
    for (value, expected) in cases {
        let parsed = AppPassword::from_ldap_value(&value);
        match (&parsed, &expected) {
            (Ok(app), Ok((name, protocols))) => {
                assert_eq!(app.name(), *name, "{value}");
                assert_eq!(app.protocols(), *protocols, "{value}");
            }
            (Err(error), Err(want)) => assert_eq!(error, want, "{value}"),
            _ => panic!("{value}: got {parsed:?}, want {expected:?}"),
        }
    }
}

#[test]
fn a_hash_may_contain_the_separator() {
    // {PLAIN} is refused, so take a scheme whose encoded part is free text up to the parser:
    // the separator split must leave everything after the third `;` to the hash.
    let value = format!("phone;imap;2026-12-04T17:00:00Z;{}", ssha("a;b"));
    let app = AppPassword::from_ldap_value(&value).unwrap();
    assert!(app.verify(b"a;b"));
    let value = "phone;imap;2026-12-04T17:00:00Z;{SSHA};x";
    assert!(matches!(
        AppPassword::from_ldap_value(value),
        Err(AppPasswordError::Hash(_))
    ));
}

#[test]
fn the_ldap_value_written_is_the_one_read() {
    let created = humantime::parse_rfc3339("2026-12-04T17:00:00Z").unwrap();
    let hash = ssha("pw");
    let protocols = set(&[Protocol::Imap, Protocol::Submission]);
    let value = ldap_value("phone", protocols, created, &hash);
    assert_eq!(
        value,
        format!("phone;imap,submission;2026-12-04T17:00:00Z;{hash}")
    );
    let app = AppPassword::from_ldap_value(&value).unwrap();
    assert_eq!(app.created(), created);
    assert_eq!(app.protocols(), protocols);
    assert!(app.verify(b"pw"));
}

#[test]
fn sets_refuse_duplicates_and_excess() {
    let one = |name: &str| {
        AppPassword::new(name, ProtocolSet::ALL, "2026-12-04T17:00:00Z", &ssha("x")).unwrap()
    };
    let mut apps = Vec::new();
    assert_eq!(add(&mut apps, one("phone")), Ok(()));
    assert_eq!(
        add(&mut apps, one("Phone")),
        Err(AppPasswordError::DuplicateName("Phone".to_owned()))
    );
    for i in 1..MAX_APP_PASSWORDS {
        assert_eq!(add(&mut apps, one(&format!("p{i}"))), Ok(()));
    }
    assert_eq!(add(&mut apps, one("last")), Err(AppPasswordError::TooMany));
    assert_eq!(apps.len(), MAX_APP_PASSWORDS);
    assert_eq!(AppPasswordError::TooMany.part(), None);
    assert_eq!(AppPasswordError::Plaintext.part(), Some("hash"));
}

#[test]
fn the_credential_decides_the_protocols() {
    let phone = Credential::App {
        name: "phone".to_owned(),
        protocols: set(&[Protocol::Imap]),
    };
    let web_only = Credential::Password {
        protocols: set(&[Protocol::Http]),
    };
    let cases = [
        (&phone, Protocol::Imap, true),
        (&phone, Protocol::Submission, false),
        (&phone, Protocol::Pop3, false),
        (&phone, Protocol::Http, false),
        (&web_only, Protocol::Http, true),
        (&web_only, Protocol::Imap, false),
        (&Credential::MAIN, Protocol::Submission, true),
    ];
    for (credential, protocol, allowed) in cases {
        assert_eq!(
            credential.allows(protocol),
            allowed,
            "{credential} {protocol}"
        );
    }
    assert_eq!(phone.to_string(), "app password `phone`");
    assert_eq!(Credential::MAIN.to_string(), "the main password");
}

#[test]
fn the_matching_app_password_is_named_and_its_debug_shows_no_hash() {
    let (one, two) = (ssha("one"), ssha("two"));
    let apps = vec![
        AppPassword::new(
            "phone",
            set(&[Protocol::Imap]),
            "2026-12-04T17:00:00Z",
            &one,
        )
        .unwrap(),
        AppPassword::new("laptop", ProtocolSet::ALL, "2026-12-04T17:00:00Z", &two).unwrap(),
    ];
    assert_eq!(
        matching_app_password(&apps, b"two"),
        Some(Credential::App {
            name: "laptop".to_owned(),
            protocols: ProtocolSet::ALL
        })
    );
    assert_eq!(matching_app_password(&apps, b"three"), None);
    let debug = format!("{apps:?}");
    for hash in [one, two] {
        let encoded = hash.trim_start_matches("{SSHA}");
        assert!(!debug.contains(encoded), "{debug}");
    }
}

#[test]
fn new_app_passwords_are_four_groups_of_four() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let password = generate().unwrap();
        let text = password.expose();
        let groups: Vec<&str> = text.split('-').collect();
        assert_eq!(groups.len(), 4, "{text}");
        for group in groups {
            assert_eq!(group.len(), 4, "{text}");
            assert!(group.bytes().all(|b| ALPHABET.contains(&b)), "{text}");
        }
        assert!(seen.insert(text.clone()), "a repeat: {text}");
    }
}
