//! `mailfront admin …`: a small HTTP/1.1 client for the admin API of a running node.
//!
//! Blocking std I/O on purpose: one request, one answer, no runtime needed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use mailfront_net::tls::{
    self, ClientConfig,
    rustls::{ClientConnection, StreamOwned, pki_types::ServerName},
};

use crate::config::Config;

/// Which sessions an admin command is about.
#[derive(Debug, Default, Args)]
pub struct SessionFilter {
    /// Only this user.
    #[arg(long)]
    user: Option<String>,
    /// Only sessions proxied to this server.
    #[arg(long)]
    server: Option<String>,
    /// Only sessions of this database.
    #[arg(long)]
    database: Option<String>,
    /// Only this protocol (imap, pop3, submission).
    #[arg(long)]
    protocol: Option<String>,
}

impl SessionFilter {
    fn query(&self, extra: &[(&str, &str)]) -> String {
        let pairs = [
            ("user", self.user.as_deref()),
            ("server", self.server.as_deref()),
            ("database", self.database.as_deref()),
            ("protocol", self.protocol.as_deref()),
        ];
        let mut parts: Vec<String> = pairs
            .iter()
            .filter_map(|(k, v)| {
                v.map(|v| format!("{k}={}", mailfront_http::form::encode_component(v)))
            })
            .collect();
        parts.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

/// An admin action.
#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// The node's state (JSON).
    Status,
    /// The health page load balancers check.
    Health,
    /// The Prometheus metrics.
    Metrics,
    /// List live proxied sessions (JSON).
    Sessions(SessionFilter),
    /// Close live sessions: name a filter, or --all.
    Kick {
        /// Which sessions.
        #[command(flatten)]
        filter: SessionFilter,
        /// Close every session on the node.
        #[arg(long)]
        all: bool,
    },
    /// Maintenance on: health pages turn 503, live sessions continue.
    Drain,
    /// Maintenance off.
    Undrain,
    /// Reload the configuration, certificate and cookie keys.
    Reload,
    /// Every database: its active server, copies and their state, epoch, hold, last move.
    Databases,
    /// Every mailbox server: its endpoints' health, maintenance, active databases.
    Servers,
    /// Switch a database over to another server (refused for a server that is down or in
    /// maintenance unless --force, and always for one without a copy).
    Move {
        /// The database.
        database: String,
        /// The server to activate it on.
        server: String,
        /// Move even to a server that is down or in maintenance (never to one without a copy).
        #[arg(long)]
        force: bool,
    },
    /// Put a server in maintenance and move every database off it to its best other copy.
    Evacuate {
        /// The server.
        server: String,
    },
    /// Put a server in maintenance (it gets no database and no delivery), or take it out.
    Maintenance {
        /// The server.
        server: String,
        /// `on` or `off`.
        state: OnOff,
    },
    /// Placement by group: each group's server, each server's weight, share and groups (JSON).
    Groups,
    /// Even the groups' shares over the servers that take groups: the first
    /// `max_parallel_moves` moves are made (run again for the next); --dry-run only lists them.
    Rebalance {
        /// List the moves without making any.
        #[arg(long)]
        dry_run: bool,
    },
    /// Pin a user (placement by group) to a server: the user's sessions elsewhere close, and
    /// the user is served there whatever the group, until unpinned.
    Pin {
        /// The user (address or alias).
        user: String,
        /// The server.
        server: String,
    },
    /// Remove a user's pin: the user follows the group again.
    Unpin {
        /// The user (address or alias).
        user: String,
    },
    /// Put a database on hold (never moved automatically), or take it off.
    Hold {
        /// The database.
        database: String,
        /// `on` or `off`.
        state: OnOff,
    },
}

/// A switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

impl OnOff {
    fn word(self) -> &'static str {
        match self {
            OnOff::On => "yes",
            OnOff::Off => "no",
        }
    }
}

/// `name=value` pairs as a query string, the values escaped.
fn query(pairs: &[(&str, &str)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", mailfront_http::form::encode_component(v)))
        .collect();
    format!("?{}", parts.join("&"))
}

/// The method and path of an action.
fn route(action: &AdminAction) -> (&'static str, String) {
    match action {
        AdminAction::Status => ("GET", "/status".to_owned()),
        AdminAction::Health => ("GET", "/health".to_owned()),
        AdminAction::Metrics => ("GET", "/metrics".to_owned()),
        AdminAction::Sessions(filter) => ("GET", format!("/sessions{}", filter.query(&[]))),
        AdminAction::Kick { filter, all } => {
            let extra: &[(&str, &str)] = if *all { &[("all", "yes")] } else { &[] };
            ("POST", format!("/sessions/kick{}", filter.query(extra)))
        }
        AdminAction::Drain => ("POST", "/drain".to_owned()),
        AdminAction::Undrain => ("POST", "/undrain".to_owned()),
        AdminAction::Reload => ("POST", "/reload".to_owned()),
        AdminAction::Databases => ("GET", "/databases".to_owned()),
        AdminAction::Servers => ("GET", "/servers".to_owned()),
        AdminAction::Move {
            database,
            server,
            force,
        } => {
            let force = if *force { "yes" } else { "no" };
            let q = query(&[("database", database), ("server", server), ("force", force)]);
            ("POST", format!("/databases/move{q}"))
        }
        AdminAction::Evacuate { server } => (
            "POST",
            format!("/servers/evacuate{}", query(&[("server", server)])),
        ),
        AdminAction::Maintenance { server, state } => {
            let q = query(&[("server", server), ("on", state.word())]);
            ("POST", format!("/servers/maintenance{q}"))
        }
        AdminAction::Groups => ("GET", "/groups".to_owned()),
        AdminAction::Rebalance { dry_run } => {
            let q = if *dry_run { "?dry_run=yes" } else { "" };
            ("POST", format!("/groups/rebalance{q}"))
        }
        AdminAction::Pin { user, server } => {
            let q = query(&[("user", user), ("server", server)]);
            ("POST", format!("/users/pin{q}"))
        }
        AdminAction::Unpin { user } => {
            ("POST", format!("/users/unpin{}", query(&[("user", user)])))
        }
        AdminAction::Hold { database, state } => {
            let q = query(&[("database", database), ("on", state.word())]);
            ("POST", format!("/databases/hold{q}"))
        }
    }
}

/// Where the admin API is and how to authenticate to it.
#[derive(Debug, Args)]
pub struct AdminTarget {
    /// The node's configuration (for the admin address and token file).
    #[arg(long, short)]
    config: Option<std::path::PathBuf>,
    /// The admin address (default: from the configuration, else 127.0.0.1:9090).
    #[arg(long)]
    address: Option<String>,
    /// A file holding the bearer token (default: from the configuration).
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// A client certificate (PEM) for an admin listener that requires one (`admin.client_ca`).
    #[arg(long, requires = "key")]
    certificate: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "certificate")]
    key: Option<std::path::PathBuf>,
}

/// An admin call that failed: the message for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AdminError(String);

fn resolve(address: &str) -> Result<SocketAddr, AdminError> {
    address
        .to_socket_addrs()
        .map_err(|e| AdminError(format!("cannot resolve {address}: {e}")))?
        .next()
        .ok_or_else(|| AdminError(format!("{address} has no address")))
}

fn read_token(file: &Path) -> Result<String, AdminError> {
    std::fs::read_to_string(file)
        .map(|t| t.trim().to_owned())
        .map_err(|e| AdminError(format!("cannot read {}: {e}", file.display())))
}

/// Runs `action` against the node `target` names; returns the answer body for standard output.
pub fn run(target: &AdminTarget, action: &AdminAction) -> Result<String, AdminError> {
    let config = target
        .config
        .as_deref()
        .map(Config::load)
        .transpose()
        .map_err(|e| AdminError(e.to_string()))?;
    let admin = config.as_ref().and_then(|c| c.admin.as_ref());
    let address = match (&target.address, admin) {
        (Some(a), _) => resolve(a)?,
        (None, Some(admin)) => admin.address,
        (None, None) => SocketAddr::from(([127, 0, 0, 1], 9090)),
    };
    let token = match (
        &target.token_file,
        admin.and_then(|a| a.token_file.as_ref()),
    ) {
        (Some(file), _) | (None, Some(file)) => Some(read_token(file)?),
        (None, None) => None,
    };
    let tls = client_tls(config.as_ref(), target)?;
    let (method, path) = route(action);
    let (status, body) = request(address, tls, method, &path, token.as_deref())?;
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(AdminError(format!(
            "{method} {path}: HTTP {status}: {}",
            body.trim()
        )))
    }
}

/// TLS towards the admin listener when the configuration has it speak TLS (`admin.tls`): the
/// node's own certificate (`[tls] certificate`) is the one trusted, and the client certificate
/// of `--certificate`/`--key` shown if given.
fn client_tls(
    config: Option<&Config>,
    target: &AdminTarget,
) -> Result<Option<Arc<ClientConfig>>, AdminError> {
    let Some(config) = config else {
        return Ok(None);
    };
    let (Some(admin), Some(server)) = (&config.admin, &config.tls) else {
        return Ok(None);
    };
    if !admin.tls {
        return Ok(None);
    }
    let client = target.certificate.clone().zip(target.key.clone());
    if admin.client_ca.is_some() && client.is_none() {
        return Err(AdminError(
            "the admin listener requires a client certificate (admin.client_ca): give --certificate and --key"
                .to_owned(),
        ));
    }
    tls::pinned_client_config(&server.certificate, client.as_ref())
        .map(|c| Some(Arc::new(c)))
        .map_err(|e| AdminError(format!("admin TLS: {e}")))
}

/// One HTTP/1.1 request with `Connection: close` (over TLS with `tls`); the status and the body.
fn request(
    address: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), AdminError> {
    let fail = |e: std::io::Error| AdminError(format!("admin API at {address}: {e}"));
    let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).map_err(fail)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(fail)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    let raw = match tls {
        None => exchange(stream, &head),
        Some(config) => {
            let connection = ClientConnection::new(config, ServerName::from(address.ip()))
                .map_err(|e| AdminError(format!("admin API at {address}: {e}")))?;
            exchange(StreamOwned::new(connection, stream), &head)
        }
    }
    .map_err(fail)?;
    parse_response(&raw)
        .ok_or_else(|| AdminError(format!("admin API at {address}: not an HTTP answer")))
}

/// Writes `head` and reads the answer to the end.
fn exchange(mut stream: impl Read + Write, head: &str) -> std::io::Result<Vec<u8>> {
    stream.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        // A server closing TCP without TLS's close_notify after a complete answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        result => result.map(|_| raw),
    }
}

/// Splits an HTTP/1.1 answer into status and body (`Content-Length` or read to close; the
/// admin server never chunks fixed bodies).
fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    let body = match length {
        Some(n) => body.get(..n).unwrap_or(body),
        None => body,
    };
    Some((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_queries() {
        assert_eq!(
            parse_response(b"HTTP/1.1 422 Unprocessable\r\ncontent-length: 5\r\n\r\nhelloextra"),
            Some((422, "hello".into()))
        );
        assert_eq!(parse_response(b"garbage"), None);
        let filter = SessionFilter {
            user: Some("a b@example.com".into()),
            protocol: Some("imap".into()),
            ..SessionFilter::default()
        };
        assert_eq!(
            filter.query(&[("all", "yes")]),
            "?user=a%20b%40example.com&protocol=imap&all=yes"
        );
        assert_eq!(SessionFilter::default().query(&[]), "");
    }
}
