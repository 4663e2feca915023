//! Tests of the embedded directory file.

use super::*;

/// `{PLAIN}` keeps these tests fast; the schemes themselves are tested in mailfront-password.
const USERS: &str = r#"
[[user]]
address = "Alice@Example.com"
aliases = ["a.smith@example.com"]
display_name = "Alice Smith"
password = "{PLAIN}demo-password-1"
mailbox_guid = "guid-alice"
database = "DB01"
version = "15.1"
sip_extension = "4001"

[[user]]
address = "bob@example.com"
password = "{SSHA}5WlVtptmV8dBaFOmBENGWrSe/wg2ZjcwOTE="
mailbox_guid = "guid-bob"
tenant = "Example.com"
database = "DB02"
version = "15"
protocols = ["imap"]
"#;

fn password(text: &str) -> Secret<Vec<u8>> {
    Secret::new(text.as_bytes().to_vec())
}

#[tokio::test]
async fn authenticates_by_address_or_alias_in_any_case() {
    let directory = FileDirectory::from_users(parse(USERS).unwrap());
    for login in [
        "alice@example.com",
        "ALICE@example.COM",
        "a.smith@example.com",
    ] {
        let principal = directory
            .authenticate(login, &password("demo-password-1"))
            .await
            .unwrap()
            .principal;
        assert_eq!(principal.address, "alice@example.com");
        assert_eq!(principal.tenant, "example.com");
        assert_eq!(principal.database, DatabaseName::new("DB01"));
        assert_eq!(principal.version, Version::new(15, 1, 0));
        assert_eq!(principal.protocols, ProtocolSet::ALL);
        assert_eq!(principal.sip_extension.as_deref(), Some("4001"));
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_the_same_error() {
    let directory = FileDirectory::from_users(parse(USERS).unwrap());
    assert_eq!(
        directory
            .authenticate("alice@example.com", &password("nope"))
            .await,
        Err(AuthError::InvalidCredentials)
    );
    assert_eq!(
        directory
            .authenticate("nobody@example.com", &password("nope"))
            .await,
        Err(AuthError::InvalidCredentials)
    );
    assert_eq!(
        directory
            .authenticate("alice@example.com", &password(""))
            .await,
        Err(AuthError::InvalidCredentials)
    );
}

#[tokio::test]
async fn lookup_without_password() {
    let directory = FileDirectory::from_users(parse(USERS).unwrap());
    let bob = directory.lookup("BOB@example.com").await.unwrap().unwrap();
    assert_eq!(
        bob.protocols.iter().collect::<Vec<_>>(),
        vec![mailfront_model::Protocol::Imap]
    );
    assert_eq!(bob.tenant, "example.com");
    assert_eq!(directory.lookup("nobody@example.com").await.unwrap(), None);
}

#[tokio::test]
async fn lookup_by_extension() {
    let directory = FileDirectory::from_users(parse(USERS).unwrap());
    let alice = directory.lookup_extension("4001").await.unwrap().unwrap();
    assert_eq!(alice.address, "alice@example.com");
    assert_eq!(alice.sip_extension.as_deref(), Some("4001"));
    // Exact: no prefix, no other spelling; bob has no extension at all.
    for nobody in ["400", "40011", "+4001", " 4001", "", "alice@example.com"] {
        assert_eq!(
            directory.lookup_extension(nobody).await.unwrap(),
            None,
            "{nobody:?}"
        );
    }
    // Written with spaces around it, the extension is trimmed.
    let spaced = USERS.replace("sip_extension = \"4001\"", "sip_extension = \" 4001 \"");
    let directory = FileDirectory::from_users(parse(&spaced).unwrap());
    assert!(directory.lookup_extension("4001").await.unwrap().is_some());
}

#[test]
fn extensions_are_unique() {
    let user = |address: &str, guid: &str, extension: &str| {
        format!(
            "[[user]]\naddress = \"{address}\"\npassword = \"{{PLAIN}}p\"\nmailbox_guid = \"{guid}\"\ndatabase = \"DB01\"\nversion = \"15\"\nsip_extension = \"{extension}\"\n"
        )
    };
    let twice = format!("{}{}", user("a@x", "g1", "4001"), user("b@x", "g2", "4001"));
    let error = parse(&twice).unwrap_err();
    assert_eq!(
        error,
        "user[1].sip_extension: `4001` is already the extension of another user"
    );
    let error = parse(&user("a@x", "g1", " ")).unwrap_err();
    assert!(
        error.starts_with("user[0].sip_extension: must not be empty"),
        "{error}"
    );
    let fine = format!("{}{}", user("a@x", "g1", "4001"), user("b@x", "g2", "4002"));
    assert_eq!(parse(&fine).unwrap().len(), 2);
}

#[test]
fn plaintext_passwords_are_reported() {
    let users = parse(USERS).unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(users.plaintext_passwords(), ["alice@example.com"]);
}

#[test]
fn errors_name_the_key() {
    let user = |extra: &str| {
        format!(
            "[[user]]\naddress = \"a@x\"\npassword = \"{{PLAIN}}p\"\nmailbox_guid = \"g1\"\ndatabase = \"DB01\"\nversion = \"15\"\n{extra}"
        )
    };
    let cases = [
        (user("").replace("a@x", "not-an-address"), "user[0].address"),
        (user("").replace("{PLAIN}p", "md5:p"), "user[0].password"),
        (
            user("").replace("version = \"15\"", "version = \"fifteen\""),
            "user[0].version",
        ),
        (user("protocols = [\"gopher\"]"), "user[0].protocols"),
        (user("colour = \"red\""), "colour"),
        (user("aliases = [\"bad alias\"]"), "user[0].aliases[0]"),
        (
            format!("{}{}", user(""), user("").replace("g1", "g2")),
            "user[1].address",
        ),
        (
            format!("{}{}", user(""), user("").replace("a@x", "b@x")),
            "user[1].mailbox_guid",
        ),
    ];
    for (text, key) in cases {
        let error = parse(&text).unwrap_err();
        assert!(error.contains(key), "expected `{key}` in `{error}`");
        assert!(
            !error.contains("{PLAIN}p"),
            "a password leaked into `{error}`"
        );
    }
    // No database: a user placed by group ([placement]), not an error.
    let placed = parse(&user("").replace("database = \"DB01\"\n", "")).expect("no database");
    assert_eq!(placed.len(), 1);
}

#[tokio::test]
async fn follows_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    std::fs::write(&path, USERS).unwrap();
    let directory = FileDirectory::start(&path, Duration::from_millis(10)).unwrap();
    assert!(
        directory
            .lookup("carol@example.com")
            .await
            .unwrap()
            .is_none()
    );

    let carol = "\n[[user]]\naddress = \"carol@example.com\"\npassword = \"{PLAIN}c\"\nmailbox_guid = \"guid-carol\"\ndatabase = \"DB01\"\nversion = \"15\"\n";
    std::fs::write(&path, format!("{USERS}{carol}")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while directory
        .lookup("carol@example.com")
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new user never appeared"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        directory
            .authenticate("carol@example.com", &password("c"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn lists_a_tenant_once_per_user() {
    let directory = FileDirectory::from_users(parse(USERS).unwrap());
    let listed = directory.list("example.com").await.unwrap();
    let addresses: Vec<&str> = listed.iter().map(|p| p.address.as_str()).collect();
    assert_eq!(addresses, ["alice@example.com", "bob@example.com"]);
    assert!(directory.list("other.org").await.unwrap().is_empty());
}

/// A user with app passwords: `phone-secret` for IMAP, `laptop-secret` for everything but
/// HTTP; the main password only for HTTP.
const WITH_APPS: &str = r#"
[[user]]
address = "frank@example.com"
password = "{PLAIN}main"
mailbox_guid = "g-frank"
database = "DB01"
version = "15.1"
password_protocols = ["http"]
app_passwords = [
  { name = "phone", protocols = ["imap"], created = "2026-12-04T17:00:00Z", hash = "{SSHA}QquDqETO8D6NXfB8D2uCr3J2eK5zYWx0c2FsdA==" },
  { name = "laptop", protocols = ["imap", "pop3", "submission"], created = 2026-12-04T17:00:00Z, hash = "{SSHA}6JSaAb1ZofTGU8PkmIHH0A5xBcBwZXBwZXIxMg==" },
]
"#;

#[tokio::test]
async fn app_passwords_and_the_main_password_name_their_credential() {
    use mailfront_model::Protocol;
    let directory = FileDirectory::from_users(parse(WITH_APPS).unwrap());
    let set = |list: &[Protocol]| list.iter().copied().collect::<ProtocolSet>();
    let cases = [
        (
            "phone-secret",
            Some(Credential::App {
                name: "phone".to_owned(),
                protocols: set(&[Protocol::Imap]),
            }),
        ),
        (
            "laptop-secret",
            Some(Credential::App {
                name: "laptop".to_owned(),
                protocols: set(&[Protocol::Imap, Protocol::Pop3, Protocol::Submission]),
            }),
        ),
        (
            "main",
            Some(Credential::Password {
                protocols: set(&[Protocol::Http]),
            }),
        ),
        ("wrong", None),
        ("", None),
    ];
    for (secret, expected) in cases {
        let answer = directory
            .authenticate("frank@example.com", &password(secret))
            .await;
        match expected {
            Some(credential) => {
                let authenticated = answer.unwrap();
                assert_eq!(authenticated.credential, credential, "{secret}");
                assert_eq!(authenticated.principal.address, "frank@example.com");
            }
            None => assert_eq!(answer, Err(AuthError::InvalidCredentials), "{secret}"),
        }
    }
    // Without password_protocols the main password may be used everywhere.
    let alice = FileDirectory::from_users(parse(USERS).unwrap())
        .authenticate("alice@example.com", &password("demo-password-1"))
        .await
        .unwrap();
    assert_eq!(alice.credential, Credential::MAIN);
}

#[test]
fn app_password_errors_name_the_key() {
    let app = |fields: &str| {
        format!(
            "[[user]]\naddress = \"a@x\"\npassword = \"{{PLAIN}}p\"\nmailbox_guid = \"g1\"\nversion = \"15\"\napp_passwords = [{fields}]\n"
        )
    };
    let hash = "{SSHA}QquDqETO8D6NXfB8D2uCr3J2eK5zYWx0c2FsdA==";
    let good = |name: &str| {
        format!(
            "{{ name = \"{name}\", protocols = [\"imap\"], created = \"2026-12-04T17:00:00Z\", hash = \"{hash}\" }}"
        )
    };
    let cases = [
        (
            app(&good("my phone")),
            "user[0].app_passwords[0].name: must be 1 to 64 characters",
        ),
        (
            app(&format!("{}, {}", good("phone"), good("PHONE"))),
            "user[0].app_passwords[1].name: `PHONE` is the name of another app password",
        ),
        (
            app(&good("phone").replace("[\"imap\"]", "[]")),
            "user[0].app_passwords[0].protocols: must name at least one protocol",
        ),
        (
            app(&good("phone").replace("[\"imap\"]", "[\"gopher\"]")),
            "user[0].app_passwords[0].protocols[0]: unknown variant `gopher`",
        ),
        (
            app(&good("phone").replace("2026-12-04T17:00:00Z", "soon")),
            "user[0].app_passwords[0].created: `soon` is not an RFC 3339 time",
        ),
        (
            app(&good("phone").replace(hash, "{PLAIN}phone-secret")),
            "user[0].app_passwords[0].hash: {PLAIN} is not allowed",
        ),
        (
            app(&good("phone").replace(hash, "{SSHA}!!")),
            "user[0].app_passwords[0].hash: SSHA hash is not valid base64",
        ),
        (
            app(&good("phone").replace("name = \"phone\", ", "")),
            "user[0].app_passwords[0]: missing field `name`",
        ),
        (
            app(&good("phone").replace(" }", ", colour = \"red\" }")),
            "user[0].app_passwords[0].colour: unknown field `colour`",
        ),
        (
            format!("{}password_protocols = [\"gopher\"]\n", app(&good("phone"))),
            "user[0].password_protocols[0]: unknown variant `gopher`",
        ),
        (
            app(&(0..=crate::credential::MAX_APP_PASSWORDS)
                .map(|i| good(&format!("p{i}")))
                .collect::<Vec<_>>()
                .join(", ")),
            "user[0].app_passwords[20]: a user has at most 20 app passwords",
        ),
    ];
    for (text, expected) in cases {
        let error = parse(&text).unwrap_err();
        assert!(
            error.starts_with(expected),
            "expected `{expected}…`, got `{error}`"
        );
        assert!(
            !error.contains("QquDqETO8D6"),
            "a hash leaked into `{error}`"
        );
        assert!(
            !error.contains("phone-secret"),
            "a password leaked into `{error}`"
        );
    }
    assert_eq!(parse(&app(&good("phone"))).unwrap().len(), 1);
}
