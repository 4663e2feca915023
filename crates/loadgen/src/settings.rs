//! The command line and the users file.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Connect, LOGIN, LOGOUT, as fast as possible at `--concurrency`.
    LoginStorm,
    /// `--sessions` sessions logged in and in IDLE, held until SIGTERM or `--hold` seconds.
    Idle,
    /// NOOP round trips over `--sessions` logged-in sessions at `--concurrency`.
    Latency,
    /// `FETCH 1 BODY.PEEK[]` of the first user's first message, repeatedly.
    Throughput,
    /// Inbound SMTP deliveries to `--rcpt`, one connection per worker, many messages each.
    Smtp,
    /// HTTP/1.1 GETs of `--path` over keep-alive connections.
    Https,
}

impl Scenario {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::LoginStorm => "login-storm",
            Scenario::Idle => "idle",
            Scenario::Latency => "latency",
            Scenario::Throughput => "throughput",
            Scenario::Smtp => "smtp",
            Scenario::Https => "https",
        }
    }
}

/// `mailfront-bench`: load for one front door, one scenario; a JSON report at the end.
#[derive(Clone, Debug, Parser)]
#[command(name = "mailfront-bench", version)]
pub struct Args {
    /// The scenario.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// The front door, `host:port`.
    #[arg(long)]
    pub target: SocketAddr,
    /// Implicit TLS to the target (certificates are not verified: benchmark labs use their own).
    #[arg(long)]
    pub tls: bool,
    /// A file of users, one `address password` per line.
    #[arg(long)]
    pub users: Option<PathBuf>,
    /// Workers running at once (for `idle`: sessions being opened at once).
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// Sessions held (`idle`, `latency`).
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the measurement starts.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Local addresses to connect from, comma-separated (round robin), for more than one
    /// address's worth of ephemeral ports.
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<IpAddr>,
    /// `throughput`: the expected size of the fetched message (a check, 0 to skip it).
    #[arg(long, default_value_t = 0)]
    pub fetch_size: u64,
    /// `smtp`: the recipient.
    #[arg(long, default_value = "sink@example.com")]
    pub rcpt: String,
    /// `smtp`: bytes per message.
    #[arg(long, default_value_t = 10 * 1024)]
    pub message_size: usize,
    /// `https`: the path requested.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// `https`: send the users' credentials as HTTP Basic authentication.
    #[arg(long)]
    pub basic: bool,
    /// `idle`: written with `READY opened=N errors=E` once every session is open.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// `idle`: seconds to hold the sessions (SIGTERM ends it sooner).
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// Where the JSON report goes (also printed on stdout).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Seconds to wait for any one reply before counting an error.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
}

impl Args {
    /// The reply timeout as a duration.
    pub fn reply_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout.max(0.001))
    }
}

/// A user of the users file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The login name.
    pub address: String,
    /// The password, in clear.
    pub password: String,
}

/// Why the users file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        error: std::io::Error,
    },
    /// A line is not `address password`.
    #[error("{path}:{line}: expected `address password`")]
    Malformed {
        /// The file.
        path: String,
        /// The line number, from 1.
        line: usize,
    },
    /// No users at all.
    #[error("{path}: no users")]
    Empty {
        /// The file.
        path: String,
    },
}

/// Parses a users file's text: `address password` per line; blank lines and `#` comments skipped.
pub fn parse_users(text: &str, path: &str) -> Result<Vec<User>, UsersError> {
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next(), fields.next()) {
            (Some(address), Some(password), None) => users.push(User {
                address: address.to_owned(),
                password: password.to_owned(),
            }),
            _ => {
                return Err(UsersError::Malformed {
                    path: path.to_owned(),
                    line: i + 1,
                });
            }
        }
    }
    if users.is_empty() {
        return Err(UsersError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(users)
}

/// Reads a users file.
pub fn load_users(path: &std::path::Path) -> Result<Vec<User>, UsersError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| UsersError::Read {
        path: name.clone(),
        error,
    })?;
    parse_users(&text, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file() {
        let users = parse_users("# bench\na@x pw1\n\n  b@x pw2  \n", "u").unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[1].address, "b@x");
        assert_eq!(users[1].password, "pw2");
        assert!(matches!(
            parse_users("a@x\n", "u"),
            Err(UsersError::Malformed { line: 1, .. })
        ));
        assert!(matches!(
            parse_users("a@x p q\n", "u"),
            Err(UsersError::Malformed { line: 1, .. })
        ));
        assert!(matches!(
            parse_users("", "u"),
            Err(UsersError::Empty { .. })
        ));
    }
}
