//! The `active-directory` profile against a real OpenLDAP slapd loaded with the AD look-alike
//! schema (`scripts/ldap/ad-lab.schema`, shared with `scripts/lab/ldap.py`): logins by
//! userPrincipalName and proxy address, binary GUIDs in Microsoft's byte order (entry mapping and
//! lookup), homeMDB with an escaped RDN, userAccountControl, and a listing longer than the
//! server's size limit (RFC 2696 paged search).
//!
//! Like `ldap_slapd.rs`, without slapd these tests fail (they do not skip): run `scripts/test`,
//! which installs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailfront_directory::ldap::{LdapConfig, LdapDirectory, Profile};
use mailfront_directory::{AuthError, Directory};
use mailfront_model::{DatabaseName, Protocol, ProtocolSet, Secret, Version};

const SUFFIX: &str = "dc=example,dc=com";
const PEOPLE: &str = "ou=people,dc=example,dc=com";
/// slapd's size limit per search (soft and hard); paged searches may go past it.
const SIZE_LIMIT: usize = 3;
/// How many users `users()` loads: more than the size limit.
const USERS: usize = 8;
const DATABASES: &str = "CN=Databases,CN=Exchange Administrative Group,CN=Administrative Groups,\
                         CN=Example,CN=Microsoft Exchange,CN=Services,CN=Configuration,DC=example,DC=com";

/// alice's objectGUID as AD stores it (Microsoft layout) and as text; she has no
/// msExchMailboxGuid, so it is her mailbox GUID.
const ALICE_OBJECT_GUID: [u8; 16] = [
    0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
];
const ALICE_GUID: &str = "00112233-4455-6677-8899-aabbccddeeff";
/// The same bytes read in RFC 4122 (big-endian) order: the wrong reading.
const ALICE_GUID_BIG_ENDIAN: &str = "33221100-5544-7766-8899-aabbccddeeff";
/// bob's msExchMailboxGuid (his mailbox GUID) and his objectGUID (not his mailbox GUID).
const BOB_MAILBOX_GUID: [u8; 16] = [
    0x04, 0x03, 0x02, 0x01, 0x06, 0x05, 0x08, 0x07, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
];
const BOB_GUID: &str = "01020304-0506-0708-090a-0b0c0d0e0f10";
const BOB_OBJECT_GUID: [u8; 16] = [0x42; 16];

fn schema(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/ldap")
        .join(name)
}

fn run(command: &mut Command) -> String {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// RFC 4648 base64, for binary values in LDIF (`name:: …`, RFC 2849).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The base entries and `USERS` AD-style users, all with the password `pw`.
fn users(password_hash: &str) -> String {
    let mut ldif = format!(
        "dn: {SUFFIX}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\n\
         o: Example\ndc: example\n\n\
         dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n"
    );
    let mut add = |cn: &str, lines: &[String]| {
        ldif.push_str(&format!(
            "dn: cn={cn},{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: mailfrontAdUser\n\
             cn: {cn}\nsn: {cn}\nuserPassword: {password_hash}\n"
        ));
        for line in lines {
            ldif.push_str(line);
            ldif.push('\n');
        }
        ldif.push('\n');
    };
    add(
        "alice",
        &[
            "userPrincipalName: asmith@corp.example.com".into(),
            "mail: alice.mail@example.com".into(),
            "proxyAddresses: SMTP:Alice@example.com".into(),
            "proxyAddresses: smtp:alice.alias@example.com".into(),
            "proxyAddresses: X500:/o=Example/cn=alice".into(),
            "displayName: Alice Smith".into(),
            "telephoneNumber: 4001".into(),
            format!("objectGUID:: {}", base64(&ALICE_OBJECT_GUID)),
            // An escaped comma in the database's RDN.
            format!("homeMDB: CN=DB\\2C01,{DATABASES}"),
            "userAccountControl: 512".into(),
        ],
    );
    add(
        "bob",
        &[
            "userPrincipalName: bob@corp.example.com".into(),
            "mail: bob@example.com".into(),
            format!("msExchMailboxGuid:: {}", base64(&BOB_MAILBOX_GUID)),
            format!("objectGUID:: {}", base64(&BOB_OBJECT_GUID)),
            format!("homeMDB: CN=DB02,{DATABASES}"),
            "userAccountControl: 66048".into(),
        ],
    );
    add(
        "eve",
        &[
            "userPrincipalName: eve@corp.example.com".into(),
            "proxyAddresses: SMTP:eve@example.com".into(),
            format!("objectGUID:: {}", base64(&[0x0e; 16])),
            format!("homeMDB: CN=DB01,{DATABASES}"),
            "userAccountControl: 514".into(),
        ],
    );
    for i in 1..=USERS - 3 {
        let guid = [u8::try_from(i).unwrap(); 16];
        add(
            &format!("user{i}"),
            &[
                format!("userPrincipalName: user{i}@corp.example.com"),
                format!("proxyAddresses: SMTP:user{i}@example.com"),
                format!("objectGUID:: {}", base64(&guid)),
                format!("homeMDB: CN=DB01,{DATABASES}"),
                "userAccountControl: 512".into(),
            ],
        );
    }
    ldif
}

/// One slapd for one test, killed (and waited for) when dropped.
struct Slapd {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Slapd {
    fn start() -> Self {
        for tool in [
            "/usr/sbin/slapd",
            "/usr/sbin/slapadd",
            "/usr/bin/ldapsearch",
        ] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is not installed: run scripts/test, which installs slapd and ldap-utils"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("data")).unwrap();
        let rootpw = run(Command::new("slappasswd").args(["-s", "root-secret"]));
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include {mailfront}\n\
             include {ad}\n\
             sizelimit size.soft={SIZE_LIMIT} size.hard={SIZE_LIMIT} size.prtotal=unlimited\n\
             pidfile {root}/slapd.pid\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             database mdb\n\
             maxsize 16777216\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"cn=admin,{SUFFIX}\"\n\
             rootpw {rootpw}\n\
             directory {root}/data\n\
             access to attrs=userPassword by self write by anonymous auth by * none\n\
             access to * by * read\n",
            mailfront = schema("mailfront-test.schema").display(),
            ad = schema("ad-lab.schema").display(),
            root = root.display(),
        );
        std::fs::write(root.join("slapd.conf"), conf).unwrap();
        let hash = run(Command::new("slappasswd").args(["-h", "{SSHA}", "-s", "pw"]));
        std::fs::write(root.join("base.ldif"), users(&hash)).unwrap();
        run(Command::new("slapadd")
            .args(["-q", "-f"])
            .arg(root.join("slapd.conf"))
            .arg("-l")
            .arg(root.join("base.ldif")));
        let mut slapd = Self {
            dir,
            port: free_port(),
            child: None,
        };
        slapd.launch();
        slapd
    }

    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    /// Starts slapd in the foreground (output to a file) and polls until it answers.
    fn launch(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("slapd.log"))
            .unwrap();
        let child = Command::new("slapd")
            .args(["-h", &format!("{}/", self.url()), "-d", "stats", "-f"])
            .arg(self.dir.path().join("slapd.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answered = Command::new("ldapsearch")
                .args(["-x", "-H", &self.url(), "-b", "", "-s", "base"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if answered {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("slapd exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "slapd did not answer within 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn config(&self) -> LdapConfig {
        LdapConfig::with_profile(Profile::ActiveDirectory, self.url(), PEOPLE)
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn pw(text: &str) -> Secret<Vec<u8>> {
    Secret::new(text.as_bytes().to_vec())
}

#[tokio::test]
async fn active_directory_entries_against_slapd() {
    let slapd = Slapd::start();
    let directory = LdapDirectory::new(&slapd.config()).unwrap();

    // By userPrincipalName, by an smtp: proxy address, by the SMTP: one in another case, by mail.
    for login in [
        "asmith@corp.example.com",
        "alice.alias@example.com",
        "ALICE@EXAMPLE.COM",
        "alice.mail@example.com",
    ] {
        let alice = directory
            .authenticate(login, &pw("pw"))
            .await
            .unwrap()
            .principal;
        assert_eq!(alice.address, "alice@example.com", "{login}");
        assert_eq!(
            alice.aliases,
            ["alice.mail@example.com", "alice.alias@example.com"]
        );
        assert_eq!(alice.mailbox_guid, ALICE_GUID);
        assert_eq!(alice.database, DatabaseName::new("DB,01"));
        assert_eq!(alice.version, Version::new(15, 1, 0));
        assert_eq!(alice.display_name.as_deref(), Some("Alice Smith"));
        assert_eq!(alice.sip_extension.as_deref(), Some("4001"));
        assert_eq!(alice.protocols, ProtocolSet::ALL);
    }
    assert_eq!(
        directory
            .authenticate("asmith@corp.example.com", &pw("wrong"))
            .await,
        Err(AuthError::InvalidCredentials)
    );
    // Not a login: the X500: proxy address.
    assert_eq!(
        directory
            .authenticate("/o=Example/cn=alice", &pw("pw"))
            .await,
        Err(AuthError::InvalidCredentials)
    );

    // userAccountControl 514: the password is right, no protocol is allowed.
    let eve = directory
        .authenticate("eve@corp.example.com", &pw("pw"))
        .await
        .unwrap()
        .principal;
    assert_eq!(eve.protocols, ProtocolSet::NONE);
    assert!(!eve.allows(Protocol::Imap));
    let bob = directory
        .lookup("bob@corp.example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bob.mailbox_guid, BOB_GUID);
    assert_eq!(bob.database, DatabaseName::new("DB02"));
    assert!(bob.allows(Protocol::Imap), "66048 has no disabled bit");
}

#[tokio::test]
async fn binary_guid_lookups_use_microsofts_byte_order() {
    let slapd = Slapd::start();
    let directory = LdapDirectory::new(&slapd.config()).unwrap();
    let found = |guid: &'static str| {
        let directory = &directory;
        async move {
            directory
                .lookup_guid(guid)
                .await
                .unwrap()
                .map(|p| p.address)
        }
    };
    assert_eq!(
        found(ALICE_GUID).await.as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        found("00112233445566778899AABBCCDDEEFF").await.as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(found(BOB_GUID).await.as_deref(), Some("bob@example.com"));
    // The bytes read big-endian name nobody; nor does bob's objectGUID (he has a mailbox GUID).
    assert_eq!(found(ALICE_GUID_BIG_ENDIAN).await, None);
    assert_eq!(found("42424242-4242-4242-4242-424242424242").await, None);
    assert_eq!(found("not-a-guid").await, None);

    // With objectGUID as the only GUID attribute, bob is found by it.
    let mut config = slapd.config();
    config.attributes.mailbox_guid = "objectGUID".into();
    config.attributes.mailbox_guid_fallback = String::new();
    let by_object = LdapDirectory::new(&config).unwrap();
    let bob = by_object
        .lookup_guid("42424242-4242-4242-4242-424242424242")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bob.address, "bob@example.com");
}

#[tokio::test]
async fn the_listing_pages_past_the_size_limit() {
    let slapd = Slapd::start();
    // The server cuts a search that does not page.
    let (connection, mut ldap) = ldap3::LdapConnAsync::new(&slapd.url()).await.unwrap();
    tokio::spawn(async move { connection.drive().await });
    let ldap3::SearchResult(entries, outcome) = ldap
        .search(PEOPLE, ldap3::Scope::Subtree, "(proxyAddresses=*)", ["1.1"])
        .await
        .unwrap();
    assert_eq!(outcome.rc, 4, "{outcome}");
    assert_eq!(entries.len(), SIZE_LIMIT);

    // Pages smaller than the limit, and one page larger than it: everyone, once.
    for page_size in [2, 3, 500] {
        let mut config = slapd.config();
        config.page_size = page_size;
        let directory = LdapDirectory::new(&config).unwrap();
        let mut listed: Vec<String> = directory
            .list("example.com")
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.address)
            .collect();
        listed.sort();
        let mut expected: Vec<String> = ["alice", "bob", "eve"]
            .into_iter()
            .map(str::to_owned)
            .chain((1..=USERS - 3).map(|i| format!("user{i}")))
            .map(|local| format!("{local}@example.com"))
            .collect();
        expected.sort();
        assert_eq!(listed, expected, "page size {page_size}");
    }
}
