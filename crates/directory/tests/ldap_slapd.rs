//! The LDAP backend against a real OpenLDAP slapd (Debian's `slapd` and `ldap-utils`).
//!
//! Each test starts its own slapd on free 127.0.0.1 ports in a temporary directory (tests run
//! in parallel), loads users with `slapadd` before starting it, and kills it when the test ends.
//! The schema is `scripts/ldap/mailfront-test.schema`, shared with `scripts/lab_ldap.py`.
//!
//! Without slapd these tests fail (they do not skip): run `scripts/test`, which installs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailfront_directory::ldap::{LdapConfig, LdapDirectory};
use mailfront_directory::{AuthError, Directory};
use mailfront_model::{DatabaseName, Protocol, ProtocolSet, Secret, Version};

const SUFFIX: &str = "dc=example,dc=com";
const PEOPLE: &str = "ou=people,dc=example,dc=com";
const SERVICE_DN: &str = "cn=mailfront,ou=services,dc=example,dc=com";
const SERVICE_PASSWORD: &str = "service-secret-1";

fn schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ldap/mailfront-test.schema")
}

/// The commands these tests need, and the fix when one is missing.
fn require_tools() {
    for (tool, package) in [
        ("/usr/sbin/slapd", "slapd"),
        ("/usr/sbin/slapadd", "slapd"),
        ("/usr/sbin/slappasswd", "slapd"),
        ("/usr/bin/ldapsearch", "ldap-utils"),
        ("/usr/bin/openssl", "openssl"),
    ] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is not installed (Debian package {package}): run scripts/test, which installs \
             slapd and ldap-utils (or: apt-get install --no-install-recommends slapd ldap-utils)"
        );
    }
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

/// Who may read what: the recipe's open directory, or one where only the service account and
/// the users themselves can read entries (anonymous may only bind).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Open,
    ServiceOnly,
}

/// A CA and a server certificate it signed for 127.0.0.1.
struct Certificates {
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_certificates(dir: &Path) -> Certificates {
    let path = |name: &str| dir.join(name);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (ca, key, subject) in [
        ("ca.pem", "ca-key.pem", "/CN=mailfront test CA"),
        ("other-ca.pem", "other-ca-key.pem", "/CN=another test CA"),
    ] {
        run(Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .args(["-days", "2", "-subj", subject])
            .arg("-keyout")
            .arg(path(key))
            .arg("-out")
            .arg(path(ca)));
    }
    run(Command::new("openssl")
        .arg("req")
        .args(ec)
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(path("server-key.pem"))
        .arg("-out")
        .arg(path("server.csr")));
    std::fs::write(
        path("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
        .arg(path("server.csr"))
        .arg("-CA")
        .arg(path("ca.pem"))
        .arg("-CAkey")
        .arg(path("ca-key.pem"))
        .arg("-extfile")
        .arg(path("ext.cnf"))
        .arg("-out")
        .arg(path("server.pem")));
    Certificates {
        ca: path("ca.pem"),
        other_ca: path("other-ca.pem"),
        cert: path("server.pem"),
        key: path("server-key.pem"),
    }
}

/// A user entry for the LDIF.
struct User<'a> {
    uid: &'a str,
    mail: &'a str,
    /// The `userPassword` value, with its `{SCHEME}`.
    password: String,
    extra: &'a [(&'a str, &'a str)],
}

fn ssha(password: &str) -> String {
    run(Command::new("slappasswd").args(["-h", "{SSHA}", "-s", password]))
}

fn sha512_crypt(password: &str) -> String {
    // slapd checks {CRYPT} with the system's crypt(3), which knows $6$ (SHA-512) on Debian.
    format!(
        "{{CRYPT}}{}",
        run(Command::new("openssl").args(["passwd", "-6", password]))
    )
}

/// The users every test gets.
fn users() -> String {
    let mut ldif = format!(
        "dn: {SUFFIX}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\n\
         o: Example\ndc: example\n\n\
         dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n\n\
         dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
         cn: mailfront\nuserPassword: {}\n\n",
        ssha(SERVICE_PASSWORD)
    );
    let users = [
        User {
            uid: "alice",
            mail: "alice@example.com",
            password: ssha("alice-pw"),
            extra: &[
                ("cn", "Alice Smith"),
                ("mailAlternateAddress", "a.smith@example.com"),
                ("mailboxDatabase", "DB01"),
                ("mailboxVersion", "15.1"),
                ("telephoneNumber", "4001"),
            ],
        },
        User {
            uid: "bob",
            mail: "bob@example.com",
            password: sha512_crypt("bob-pw"),
            extra: &[
                ("cn", "Bob"),
                ("mailboxDatabase", "DB02"),
                ("mailboxVersion", "15.0.3"),
                ("mailProtocol", "imap"),
                ("mailEnabled", "TRUE"),
            ],
        },
        User {
            uid: "carol",
            mail: "carol@example.com",
            password: ssha("carol-pw"),
            extra: &[
                ("cn", "Carol"),
                ("mailboxDatabase", "DB01"),
                ("mailboxVersion", "15.1"),
                ("mailEnabled", "FALSE"),
            ],
        },
        // No mailboxDatabase: cannot be routed.
        User {
            uid: "dave",
            mail: "dave@example.com",
            password: ssha("dave-pw"),
            extra: &[("cn", "Dave"), ("mailboxVersion", "15.1")],
        },
        // Two entries answer to shared@example.com: ambiguous.
        User {
            uid: "erin",
            mail: "erin@example.com",
            password: ssha("erin-pw"),
            extra: &[
                ("cn", "Erin"),
                ("mailAlternateAddress", "shared@example.com"),
                ("mailboxDatabase", "DB01"),
                ("mailboxVersion", "15.1"),
                ("telephoneNumber", "4100"),
            ],
        },
        User {
            uid: "frank",
            mail: "frank@example.com",
            password: ssha("frank-pw"),
            extra: &[
                ("cn", "Frank"),
                ("mailAlternateAddress", "shared@example.com"),
                ("mailboxDatabase", "DB01"),
                ("mailboxVersion", "15.1"),
                ("telephoneNumber", "4100"),
            ],
        },
    ];
    for user in users {
        ldif.push_str(&format!(
            "dn: uid={},{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: mailfrontUser\n\
             uid: {}\nsn: {}\nmail: {}\nuserPassword: {}\n",
            user.uid, user.uid, user.uid, user.mail, user.password
        ));
        for (name, value) in user.extra {
            ldif.push_str(&format!("{name}: {value}\n"));
        }
        ldif.push('\n');
    }
    ldif
}

/// One slapd for one test, killed (and waited for) when dropped.
struct Slapd {
    dir: tempfile::TempDir,
    port: u16,
    ldaps_port: Option<u16>,
    child: Option<Child>,
    certificates: Option<Certificates>,
}

impl Slapd {
    fn start(access: Access, tls: bool) -> Self {
        require_tools();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("data")).unwrap();
        let certificates = tls.then(|| make_certificates(root));
        let tls_lines = certificates
            .as_ref()
            .map(|c| {
                format!(
                    "TLSCACertificateFile {}\nTLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                    c.ca.display(),
                    c.cert.display(),
                    c.key.display()
                )
            })
            .unwrap_or_default();
        let acl = match access {
            Access::Open => "access to * by * read\n".to_owned(),
            Access::ServiceOnly => format!(
                "access to * by dn.exact=\"{SERVICE_DN}\" read by self read by anonymous auth \
                 by * none\n"
            ),
        };
        let rootpw = run(Command::new("slappasswd").args(["-s", "root-secret"]));
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             include {schema}\n\
             pidfile {root}/slapd.pid\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             {tls_lines}\
             database mdb\n\
             maxsize 16777216\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"cn=admin,{SUFFIX}\"\n\
             rootpw {rootpw}\n\
             directory {root}/data\n\
             index mail,mailAlternateAddress eq\n\
             access to attrs=userPassword by self write by anonymous auth by * none\n\
             {acl}",
            schema = schema_path().display(),
            root = root.display(),
        );
        std::fs::write(root.join("slapd.conf"), conf).unwrap();
        std::fs::write(root.join("base.ldif"), users()).unwrap();
        run(Command::new("slapadd")
            .args(["-q", "-f"])
            .arg(root.join("slapd.conf"))
            .arg("-l")
            .arg(root.join("base.ldif")));
        let mut slapd = Self {
            dir,
            port: free_port(),
            ldaps_port: tls.then(free_port),
            child: None,
            certificates,
        };
        slapd.launch();
        slapd
    }

    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port.unwrap())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("slapd.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts slapd in the foreground (`-d stats`, output to a file) and polls until it answers.
    fn launch(&mut self) {
        let mut urls = self.url() + "/";
        if self.ldaps_port.is_some() {
            urls = format!("{urls} {}/", self.ldaps_url());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new("slapd")
            .args(["-h", &urls, "-d", "stats", "-f"])
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
                .args([
                    "-x",
                    "-H",
                    &self.url(),
                    "-b",
                    "",
                    "-s",
                    "base",
                    "namingContexts",
                ])
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

    /// Kills slapd and waits until it is gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        run(Command::new("kill").args([signal, &pid]));
        // kill(2) returns before every thread of the target has stopped: a request in flight
        // can still be answered. Wait until each thread is seen stopped (or running again).
        let want_stopped = signal == "-STOP";
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let states = thread_states(&pid);
            let stopped = !states.is_empty() && states.iter().all(|s| *s == 'T' || *s == 't');
            if stopped == want_stopped {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "slapd threads still {states:?} after {signal}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The simple binds slapd logged for `dn` (`-d stats` writes one line per BIND).
    fn binds_logged(&self, dn: &str) -> usize {
        let needle = format!("BIND dn=\"{dn}\" method=128");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// Polls the log until `count` binds for `dn` are there (slapd writes them asynchronously).
    fn wait_for_binds(&self, dn: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.binds_logged(dn) < count {
            assert!(
                Instant::now() < deadline,
                "no bind for {dn} logged:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn config(&self) -> LdapConfig {
        LdapConfig::new(self.url(), SUFFIX)
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        // SIGKILL works on a stopped (SIGSTOP) process too.
        self.kill();
    }
}

fn pw(text: &str) -> Secret<Vec<u8>> {
    Secret::new(text.as_bytes().to_vec())
}

async fn refused(directory: &LdapDirectory, login: &str, password: &str) {
    assert_eq!(
        directory.authenticate(login, &pw(password)).await,
        Err(AuthError::InvalidCredentials),
        "{login} / {password}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_mode_with_anonymous_searches() {
    let slapd = Slapd::start(Access::Open, false);
    let directory = LdapDirectory::new(&slapd.config()).unwrap();
    directory.probe().await.unwrap();

    // By address and by alias, in any case.
    for login in [
        "alice@example.com",
        "ALICE@Example.COM",
        "a.smith@example.com",
        "A.Smith@EXAMPLE.com",
    ] {
        let alice = directory
            .authenticate(login, &pw("alice-pw"))
            .await
            .unwrap_or_else(|e| panic!("{login}: {e}"))
            .principal;
        assert_eq!(alice.address, "alice@example.com");
        assert_eq!(alice.aliases, vec!["a.smith@example.com".to_owned()]);
        assert_eq!(alice.display_name.as_deref(), Some("Alice Smith"));
        assert_eq!(alice.tenant, "example.com");
        assert_eq!(alice.database, DatabaseName::new("DB01"));
        assert_eq!(alice.version, Version::new(15, 1, 0));
        assert_eq!(alice.protocols, ProtocolSet::ALL);
        assert_eq!(alice.sip_extension.as_deref(), Some("4001"));
        // entryUUID: the server's RFC 4122 UUID for the entry.
        assert_eq!(alice.mailbox_guid.len(), 36, "{}", alice.mailbox_guid);
        assert_eq!(alice.mailbox_guid.matches('-').count(), 4);
        // Found again by that GUID (entryUUID's own equality rule: any case).
        let by_guid = directory
            .lookup_guid(&alice.mailbox_guid.to_ascii_uppercase())
            .await
            .unwrap()
            .expect("alice by her GUID");
        assert_eq!(by_guid.address, "alice@example.com");
        assert_eq!(
            directory
                .lookup_guid("00000000-0000-0000-0000-000000000000")
                .await,
            Ok(None)
        );
    }

    // {CRYPT}$6$ (SHA-512 crypt) verified by slapd itself; mailProtocol: imap only.
    let bob = directory
        .authenticate("bob@example.com", &pw("bob-pw"))
        .await
        .unwrap()
        .principal;
    assert_eq!(bob.database, DatabaseName::new("DB02"));
    assert_eq!(bob.version, Version::new(15, 0, 3));
    assert_eq!(bob.protocols, [Protocol::Imap].into_iter().collect());
    assert!(bob.aliases.is_empty());
    refused(&directory, "bob@example.com", "alice-pw").await;

    // Disabled: the password is right, the principal may use nothing.
    let carol = directory
        .authenticate("carol@example.com", &pw("carol-pw"))
        .await
        .unwrap()
        .principal;
    assert_eq!(carol.protocols, ProtocolSet::NONE);
    assert!(Protocol::ALL.iter().all(|p| !carol.allows(*p)));

    // Wrong password, unknown user, incomplete entry, ambiguous name, filter metacharacters.
    refused(&directory, "alice@example.com", "wrong").await;
    refused(&directory, "alice@example.com", "alice-pw ").await;
    refused(&directory, "nobody@example.com", "alice-pw").await;
    refused(&directory, "dave@example.com", "dave-pw").await;
    refused(&directory, "shared@example.com", "erin-pw").await;
    refused(&directory, "*", "alice-pw").await;
    refused(&directory, "alice@example.com)(mail=*", "alice-pw").await;
    refused(&directory, "a*@example.com", "alice-pw").await;

    // An empty password never reaches slapd: only the wrong-password bind after it is logged.
    let alice_dn = format!("uid=alice,{PEOPLE}");
    let before = slapd.binds_logged(&alice_dn);
    refused(&directory, "alice@example.com", "").await;
    refused(&directory, "alice@example.com", "wrong-again").await;
    slapd.wait_for_binds(&alice_dn, before + 1);
    assert_eq!(slapd.binds_logged(&alice_dn), before + 1, "{}", slapd.log());

    // Lookups need no password, and no user bind happens.
    let found = directory
        .lookup("A.SMITH@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.address, "alice@example.com");
    assert_eq!(found.database, DatabaseName::new("DB01"));
    let bob = directory.lookup("bob@example.com").await.unwrap().unwrap();
    assert_eq!(bob.protocols, [Protocol::Imap].into_iter().collect());
    assert_eq!(directory.lookup("nobody@example.com").await, Ok(None));
    assert_eq!(directory.lookup("dave@example.com").await, Ok(None));
    assert_eq!(directory.lookup("shared@example.com").await, Ok(None));
    assert_eq!(directory.lookup("*").await, Ok(None));

    // SIP calls to an extension: a search on telephoneNumber, with its own matching rule
    // (telephoneNumberMatch ignores spaces), the value escaped; two entries with one number
    // are ambiguous.
    for extension in ["4001", "40 01"] {
        let alice = directory
            .lookup_extension(extension)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(alice.address, "alice@example.com", "{extension}");
        assert_eq!(alice.sip_extension.as_deref(), Some("4001"));
    }
    assert_eq!(directory.lookup_extension("4999").await, Ok(None));
    assert_eq!(directory.lookup_extension("4100").await, Ok(None));
    assert_eq!(directory.lookup_extension("*").await, Ok(None));
    assert_eq!(directory.lookup_extension("4001)(mail=*").await, Ok(None));
    assert_eq!(directory.lookup_extension("").await, Ok(None));
    assert_eq!(slapd.binds_logged(&alice_dn), before + 1);

    // Many logins at once share the bounded pools.
    let mut tasks = Vec::new();
    let directory = std::sync::Arc::new(directory);
    for i in 0..40 {
        let directory = std::sync::Arc::clone(&directory);
        tasks.push(tokio::spawn(async move {
            let (login, password) = if i % 2 == 0 {
                ("alice@example.com", "alice-pw")
            } else {
                ("bob@example.com", "bob-pw")
            };
            directory.authenticate(login, &pw(password)).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_mode() {
    // Only the service account (and each user, for their own entry) may read entries.
    let slapd = Slapd::start(Access::ServiceOnly, false);

    // Anonymous searches are refused here (insufficientAccessRights): that is the directory's
    // configuration, not the user's fault, so "unavailable" — and proof the service mode is
    // what makes the rest of this test work.
    let anonymous = LdapDirectory::new(&slapd.config()).unwrap();
    match anonymous
        .authenticate("alice@example.com", &pw("alice-pw"))
        .await
    {
        Err(AuthError::Unavailable(message)) => {
            assert!(message.contains("insufficientAccessRights"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(anonymous.lookup("alice@example.com").await.is_err());

    let password_file = slapd.dir.path().join("service.pw");
    std::fs::write(&password_file, format!("{SERVICE_PASSWORD}\n")).unwrap();
    let mut config = slapd.config();
    config.service_dn = Some(SERVICE_DN.to_owned());
    config.service_password_file = Some(password_file.clone());
    config.pool_size = 2;
    let directory = LdapDirectory::new(&config).unwrap();
    directory.probe().await.unwrap();
    let alice = directory
        .authenticate("a.smith@example.com", &pw("alice-pw"))
        .await
        .unwrap()
        .principal;
    assert_eq!(alice.address, "alice@example.com");
    assert_eq!(alice.database, DatabaseName::new("DB01"));
    refused(&directory, "alice@example.com", "wrong").await;
    refused(&directory, "nobody@example.com", "wrong").await;
    let bob = directory.lookup("bob@example.com").await.unwrap().unwrap();
    assert_eq!(bob.database, DatabaseName::new("DB02"));
    // Searches after a user bind still run as the service account (separate bind pool).
    for _ in 0..3 {
        directory
            .authenticate("bob@example.com", &pw("bob-pw"))
            .await
            .unwrap();
        assert!(
            directory
                .lookup("alice@example.com")
                .await
                .unwrap()
                .is_some()
        );
    }

    // A wrong service password is the directory's problem, not the user's: unavailable.
    std::fs::write(&password_file, "not-the-service-password\n").unwrap();
    let broken = LdapDirectory::new(&config).unwrap();
    match broken
        .authenticate("alice@example.com", &pw("alice-pw"))
        .await
    {
        Err(AuthError::Unavailable(message)) => {
            assert!(message.contains("service account bind"), "{message}");
            assert!(!message.contains("not-the-service-password"), "{message}");
            assert!(!message.contains("alice-pw"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(broken.lookup("alice@example.com").await.is_err());
    assert!(broken.probe().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_dn_template_mode() {
    // No service account and no anonymous reads: the user binds and reads their own entry.
    let slapd = Slapd::start(Access::ServiceOnly, false);
    let mut config = slapd.config();
    config.user_dn = Some(format!("uid={{local}},{PEOPLE}"));
    let directory = LdapDirectory::new(&config).unwrap();

    let alice = directory
        .authenticate("alice@example.com", &pw("alice-pw"))
        .await
        .unwrap()
        .principal;
    assert_eq!(alice.address, "alice@example.com");
    assert_eq!(alice.aliases, vec!["a.smith@example.com".to_owned()]);
    assert_eq!(alice.database, DatabaseName::new("DB01"));
    let bob = directory
        .authenticate("BOB@example.com", &pw("bob-pw"))
        .await
        .unwrap()
        .principal;
    assert_eq!(bob.protocols, [Protocol::Imap].into_iter().collect());
    refused(&directory, "alice@example.com", "wrong").await;
    refused(&directory, "alice@example.com", "").await;
    refused(&directory, "nobody@example.com", "alice-pw").await;
    // The template maps an alias to a DN that does not exist: aliases need search mode.
    refused(&directory, "a.smith@example.com", "alice-pw").await;
    // DN metacharacters stay inside the value.
    refused(&directory, "alice,ou=people@example.com", "alice-pw").await;
    // The right password, but the entry lacks mailboxDatabase.
    refused(&directory, "dave@example.com", "dave-pw").await;
    // The bind went straight to the DN: no search was needed to find it.
    assert_eq!(slapd.binds_logged(&format!("uid=alice,{PEOPLE}")), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let slapd = Slapd::start(Access::Open, true);
    let certificates = slapd.certificates.as_ref().unwrap();

    // Implicit TLS.
    let mut ldaps = LdapConfig::new(slapd.ldaps_url(), SUFFIX);
    ldaps.ca_file = Some(certificates.ca.clone());
    let directory = LdapDirectory::new(&ldaps).unwrap();
    let alice = directory
        .authenticate("alice@example.com", &pw("alice-pw"))
        .await
        .unwrap()
        .principal;
    assert_eq!(alice.database, DatabaseName::new("DB01"));
    refused(&directory, "alice@example.com", "wrong").await;

    // StartTLS on the plain port.
    let mut starttls = slapd.config();
    starttls.starttls = true;
    starttls.ca_file = Some(certificates.ca.clone());
    let directory = LdapDirectory::new(&starttls).unwrap();
    let bob = directory
        .authenticate("bob@example.com", &pw("bob-pw"))
        .await
        .unwrap()
        .principal;
    assert_eq!(bob.database, DatabaseName::new("DB02"));
    assert!(
        directory
            .lookup("alice@example.com")
            .await
            .unwrap()
            .is_some()
    );

    // Without ca_file, the system's CA certificates: they did not sign this one either.
    let mut system = ldaps.clone();
    system.ca_file = None;
    let directory = LdapDirectory::new(&system).unwrap();
    assert!(matches!(
        directory
            .authenticate("alice@example.com", &pw("alice-pw"))
            .await,
        Err(AuthError::Unavailable(_))
    ));

    // A CA that did not sign the server's certificate: the certificate is refused.
    for mut config in [ldaps, starttls] {
        config.ca_file = Some(certificates.other_ca.clone());
        let directory = LdapDirectory::new(&config).unwrap();
        match directory
            .authenticate("alice@example.com", &pw("alice-pw"))
            .await
        {
            Err(AuthError::Unavailable(message)) => {
                eprintln!("untrusted certificate: {message}");
                assert!(message.contains("connect"), "{message}");
                assert!(message.contains("UnknownIssuer"), "{message}");
            }
            other => panic!("{}: expected Unavailable, got {other:?}", config.url),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_when_the_server_comes_back() {
    let mut slapd = Slapd::start(Access::Open, false);
    let mut config = slapd.config();
    config.timeout = Duration::from_secs(1);
    let directory = LdapDirectory::new(&config).unwrap();
    directory
        .authenticate("alice@example.com", &pw("alice-pw"))
        .await
        .unwrap();

    // Down: refused connections give "unavailable" at once, never "invalid credentials".
    slapd.kill();
    let started = Instant::now();
    let result = directory
        .authenticate("alice@example.com", &pw("alice-pw"))
        .await;
    eprintln!("server down: {result:?}");
    assert!(
        matches!(&result, Err(AuthError::Unavailable(m)) if !m.contains("alice-pw")),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(directory.lookup("alice@example.com").await.is_err());

    // Back on the same port: the same directory works again, no restart.
    slapd.launch();
    let alice = directory
        .authenticate("alice@example.com", &pw("alice-pw"))
        .await
        .unwrap()
        .principal;
    assert_eq!(alice.database, DatabaseName::new("DB01"));
    assert!(directory.lookup("bob@example.com").await.unwrap().is_some());

    // Hung (SIGSTOP: the kernel still accepts connections, nobody answers): "unavailable"
    // within the timeout.
    slapd.signal("-STOP");
    let started = Instant::now();
    let result = directory
        .authenticate("alice@example.com", &pw("alice-pw"))
        .await;
    let elapsed = started.elapsed();
    eprintln!("server hung: {result:?} after {elapsed:?}");
    assert!(
        matches!(&result, Err(AuthError::Unavailable(_))),
        "{result:?}"
    );
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    let started = Instant::now();
    assert!(directory.lookup("alice@example.com").await.is_err());
    assert!(started.elapsed() < Duration::from_secs(2));

    slapd.signal("-CONT");
    directory
        .authenticate("alice@example.com", &pw("alice-pw"))
        .await
        .unwrap();
    refused(&directory, "alice@example.com", "wrong").await;
}

/// The scheduler state letter of each thread of process `pid` (`R`, `S`, `T` for stopped…).
fn thread_states(pid: &str) -> Vec<char> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            stat.rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .chars()
                .next()
        })
        .collect()
}
