//! A real etcd for tests (this crate's and the Active Manager's; feature `testing`): one server
//! on free loopback ports, its data in a temporary folder, killed (and reaped) on drop. Test
//! support only: it panics on any failure, which is what a test wants.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::missing_panics_doc,
    clippy::new_without_default
)]

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::etcd::EtcdConfig;

/// The longest any awaited change may take (generous: CI machines are slow and shared).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// One etcd server, killed (and reaped) on drop.
pub struct Etcd {
    pub dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    /// Serve clients over TLS with a certificate signed by `<dir>/ca.pem`.
    tls: bool,
}

pub fn free_ports() -> (u16, u16) {
    // Both listeners stay open until both ports are known, so the two differ.
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// Shows the source's log lines in the test output (`cargo test -- --nocapture` prints them).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "mailfront_location=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn require_etcd() {
    logs();
    // etcd takes `--version`, etcdctl a `version` command.
    for (tool, version) in [("etcd", "--version"), ("etcdctl", "version")] {
        let found = Command::new(tool)
            .arg(version)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        assert!(
            found,
            "`{tool}` is not installed: run scripts/test, which installs etcd-server and etcd-client \
             (or apt-get install --no-install-recommends etcd-server etcd-client)"
        );
    }
}

impl Etcd {
    /// Chooses ports and a data folder; does not start the server.
    pub fn new() -> Self {
        require_etcd();
        let (client_port, peer_port) = free_ports();
        Self {
            dir: tempfile::tempdir().unwrap(),
            client_port,
            peer_port,
            child: None,
            tls: false,
        }
    }

    /// A started server whose client URL is https, with a certificate for 127.0.0.1 signed by a
    /// fresh CA (`ca_file()`).
    pub fn start_tls() -> Self {
        let mut etcd = Self::new();
        etcd.tls = true;
        let dir = etcd.dir.path();
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for args in [
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=test etcd CA",
                ],
            ]
            .concat(),
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ][..]
                .to_vec(),
        ] {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stdin(Stdio::null())
                .output()
                .expect("openssl (installed by scripts/test)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        etcd.spawn();
        etcd
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A started server, ready for requests.
    pub fn start() -> Self {
        let mut etcd = Self::new();
        etcd.spawn();
        etcd
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    pub fn config(&self) -> EtcdConfig {
        let mut config = EtcdConfig::new([self.endpoint()]);
        // Short, so that reconnection attempts to a dead server fail fast.
        config.timeout = Duration::from_secs(1);
        if self.tls {
            config.ca_file = Some(self.ca_file());
        }
        config
    }

    /// Starts etcd (again, on the same ports and data) and waits until it answers.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        // Output to a file, never to a pipe (a pipe nobody reads blocks the server).
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let mut command = Command::new("etcd");
        if self.tls {
            let dir = self.dir.path();
            command
                .arg("--cert-file")
                .arg(dir.join("server.pem"))
                .arg("--key-file")
                .arg(dir.join("server.key"));
        }
        let child = command
            .args(["--name", "n1", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.endpoint()])
            .args(["--advertise-client-urls", &self.endpoint()])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("n1={peer}")])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "etcd exited ({status}) before it was ready; its log:\n{}",
                    std::fs::read_to_string(self.log()).unwrap_or_default()
                );
            }
            let health = self.etcdctl(&["endpoint", "health"]);
            if health.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd not healthy within {PATIENCE:?}: {}; its log:\n{}",
                String::from_utf8_lossy(&health.stderr),
                std::fs::read_to_string(self.log()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs etcdctl against this server (a short-lived client: capturing its output is fine).
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new("etcdctl");
        if self.tls {
            command.arg("--cacert").arg(self.ca_file());
        }
        command
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.endpoint(),
                "--dial-timeout=1s",
                "--command-timeout=2s",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Sends a signal to the server (`STOP`: it hangs with its connections open; `CONT`).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Kills the server and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
