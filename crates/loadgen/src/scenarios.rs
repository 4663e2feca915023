//! The scenarios: each runs its workers over a [`Window`] and returns one [`Report`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::conn::{Dialer, Stream};
use crate::imap::{ImapClient, ImapError};
use crate::report::{Report, ReportBase, Tally, Window};
use crate::settings::{Args, Scenario, User, UsersError, load_users};
use crate::smtp::{SmtpClient, message};

/// Why a run could not be made at all (errors during the load are counted, not returned).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The users file.
    #[error(transparent)]
    Users(#[from] UsersError),
    /// The scenario needs `--users`.
    #[error("{0} needs --users FILE")]
    NoUsers(&'static str),
    /// The TLS client could not be set up.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The ready file or the report could not be written.
    #[error("cannot write {path}: {error}")]
    Write {
        /// The file.
        path: String,
        /// What went wrong.
        error: std::io::Error,
    },
    /// Not one session could be opened for a scenario that needs them.
    #[error("no session could be opened: {0}")]
    NoSessions(String),
}

/// What every worker shares.
struct Shared {
    args: Args,
    dialer: Dialer,
    users: Vec<User>,
}

impl Shared {
    fn user(&self, i: usize) -> Option<&User> {
        self.users.get(i % self.users.len().max(1))
    }
}

/// Runs the scenario `args` names and returns its report.
pub async fn run(args: Args) -> Result<Report, RunError> {
    let users = match &args.users {
        Some(path) => load_users(path)?,
        None if matches!(args.scenario, Scenario::Smtp)
            || (args.scenario == Scenario::Https && !args.basic) =>
        {
            Vec::new()
        }
        None => return Err(RunError::NoUsers(args.scenario.name())),
    };
    let dialer = Dialer::new(args.target, args.sources.clone(), args.tls)?;
    let shared = Arc::new(Shared {
        args,
        dialer,
        users,
    });
    let a = &shared.args;
    let base = ReportBase {
        scenario: a.scenario.name(),
        target: a.target.to_string(),
        tls: a.tls,
        concurrency: a.concurrency,
        sessions: matches!(a.scenario, Scenario::Idle | Scenario::Latency).then_some(a.sessions),
    };
    match a.scenario {
        Scenario::Idle => idle(shared.clone(), base).await,
        Scenario::Latency => latency(shared.clone(), base).await,
        scenario => {
            let window = Window::after(
                Duration::from_secs_f64(a.warmup.max(0.0)),
                Duration::from_secs_f64(a.duration.max(0.001)),
            );
            let tally = timed(shared.clone(), scenario, window).await;
            Ok(tally.report(base, window.end.duration_since(window.start)))
        }
    }
}

/// Runs `--concurrency` workers of `scenario` over `window` and merges their tallies.
async fn timed(shared: Arc<Shared>, scenario: Scenario, window: Window) -> Tally {
    let workers: Vec<_> = (0..shared.args.concurrency.max(1))
        .map(|w| {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut tally = Tally::new(window);
                match scenario {
                    Scenario::LoginStorm => login_storm(&shared, w, &mut tally).await,
                    Scenario::Throughput => throughput(&shared, w, &mut tally).await,
                    Scenario::Smtp => smtp(&shared, &mut tally).await,
                    Scenario::Https => https(&shared, w, &mut tally).await,
                    Scenario::Idle | Scenario::Latency => {}
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::new(window);
    for worker in workers {
        match worker.await {
            Ok(tally) => total.merge(tally),
            Err(e) => total.error(format!("worker failed: {e}")),
        }
    }
    total
}

/// After a failure, a short pause so that a refusing target is not hammered in a tight loop.
async fn pause_after_error(window: &Window) {
    if !window.over() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn imap_session(shared: &Shared, user: &User) -> Result<ImapClient, ImapError> {
    let timeout = shared.args.reply_timeout();
    let stream = tokio::time::timeout(timeout, shared.dialer.connect())
        .await
        .map_err(|_| ImapError::Timeout(timeout))??;
    let mut client = ImapClient::open(stream, timeout).await?;
    client.login(&user.address, &user.password).await?;
    Ok(client)
}

async fn login_storm(shared: &Shared, w: usize, tally: &mut Tally) {
    let window = tally.window();
    let step = shared.args.concurrency.max(1);
    let mut k = w;
    while !window.over() {
        let Some(user) = shared.user(k) else { return };
        k += step;
        let began = Instant::now();
        let cycle = async {
            let mut client = imap_session(shared, user).await?;
            client.logout().await
        };
        match cycle.await {
            Ok(()) => tally.record(began, 0),
            Err(e) => {
                tally.error(e);
                pause_after_error(&window).await;
            }
        }
    }
}

async fn throughput(shared: &Shared, w: usize, tally: &mut Tally) {
    let window = tally.window();
    let expected = shared.args.fetch_size;
    while !window.over() {
        let Some(user) = shared.user(w) else { return };
        let opened = async {
            let mut client = imap_session(shared, user).await?;
            client.select_inbox().await?;
            Ok::<_, ImapError>(client)
        };
        let mut client = match opened.await {
            Ok(client) => client,
            Err(e) => {
                tally.error(e);
                pause_after_error(&window).await;
                continue;
            }
        };
        while !window.over() {
            let began = Instant::now();
            match client.fetch_first().await {
                Ok(bytes) if expected == 0 || bytes == expected => tally.record(began, bytes),
                Ok(bytes) => {
                    tally.error(format!("fetched {bytes} bytes, expected {expected}"));
                    pause_after_error(&window).await;
                }
                Err(e) => {
                    tally.error(e);
                    pause_after_error(&window).await;
                    break;
                }
            }
        }
    }
}

async fn smtp(shared: &Shared, tally: &mut Tally) {
    let window = tally.window();
    let content = message(shared.args.message_size);
    let timeout = shared.args.reply_timeout();
    while !window.over() {
        let opened = async {
            let stream = tokio::time::timeout(timeout, shared.dialer.connect())
                .await
                .map_err(|_| crate::smtp::SmtpError::Timeout(timeout))??;
            SmtpClient::open(stream, timeout).await
        };
        let mut client = match opened.await {
            Ok(client) => client,
            Err(e) => {
                tally.error(e);
                pause_after_error(&window).await;
                continue;
            }
        };
        let mut healthy = true;
        while healthy && !window.over() {
            let began = Instant::now();
            match client.deliver(&shared.args.rcpt, &content).await {
                Ok(()) => tally.record(began, content.len() as u64),
                Err(e) => {
                    tally.error(e);
                    healthy = false;
                    pause_after_error(&window).await;
                }
            }
        }
        if healthy {
            client.quit().await;
        }
    }
}

async fn https(shared: &Shared, w: usize, tally: &mut Tally) {
    let window = tally.window();
    let authorization = match (shared.args.basic, shared.user(w)) {
        (true, Some(user)) => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", user.address, user.password))
        )),
        _ => None,
    };
    let host = shared.args.target.to_string();
    while !window.over() {
        let stream = match shared.dialer.connect().await {
            Ok(stream) => stream,
            Err(e) => {
                tally.error(e);
                pause_after_error(&window).await;
                continue;
            }
        };
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
            {
                Ok(pair) => pair,
                Err(e) => {
                    tally.error(e);
                    pause_after_error(&window).await;
                    continue;
                }
            };
        let driver = tokio::spawn(connection);
        while !window.over() {
            let mut request = hyper::Request::get(shared.args.path.as_str())
                .header(hyper::header::HOST, host.as_str());
            if let Some(value) = &authorization {
                request = request.header(hyper::header::AUTHORIZATION, value.as_str());
            }
            let request = match request.body(Empty::new()) {
                Ok(request) => request,
                Err(e) => {
                    tally.error(e);
                    return;
                }
            };
            let began = Instant::now();
            let exchange = async {
                let response = sender.send_request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, body.len()))
            };
            match tokio::time::timeout(shared.args.reply_timeout(), exchange).await {
                Ok(Ok((status, len))) if status.is_success() => tally.record(began, len as u64),
                Ok(Ok((status, _))) => {
                    tally.error(format!("HTTP status {status}"));
                    pause_after_error(&window).await;
                }
                Ok(Err(e)) => {
                    tally.error(e);
                    pause_after_error(&window).await;
                    break;
                }
                Err(_) => {
                    tally.error("no response within the timeout");
                    break;
                }
            }
        }
        driver.abort();
    }
}

/// Opens `--sessions` sessions (logged in, INBOX selected, in IDLE if `idle`), `--concurrency`
/// at a time. Returns the sessions and a tally of the failures.
async fn open_sessions(shared: &Arc<Shared>, idle: bool) -> (Vec<ImapClient>, Tally) {
    let sessions = shared.args.sessions;
    let openers = shared.args.concurrency.clamp(1, sessions.max(1));
    let never = Window::after(Duration::from_secs(86_400 * 365), Duration::from_secs(1));
    let tasks: Vec<_> = (0..openers)
        .map(|w| {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut tally = Tally::new(never);
                let mut clients = Vec::new();
                for i in (w..sessions).step_by(openers) {
                    let Some(user) = shared.user(i) else { break };
                    let opened = async {
                        let mut client = imap_session(&shared, user).await?;
                        client.select_inbox().await?;
                        if idle {
                            client.idle().await?;
                        }
                        Ok::<_, ImapError>(client)
                    };
                    match opened.await {
                        Ok(client) => clients.push(client),
                        Err(e) => tally.error(e),
                    }
                }
                (clients, tally)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(sessions);
    let mut total = Tally::new(never);
    for task in tasks {
        match task.await {
            Ok((clients, tally)) => {
                all.extend(clients);
                total.merge(tally);
            }
            Err(e) => total.error(format!("opener failed: {e}")),
        }
    }
    (all, total)
}

async fn idle(shared: Arc<Shared>, base: ReportBase) -> Result<Report, RunError> {
    let began = Instant::now();
    let (clients, failures) = open_sessions(&shared, true).await;
    let open_s = began.elapsed();
    // Only the connections are kept: the clients' read buffers would make this process, not
    // the front door, the memory hog of the run.
    let streams: Vec<Stream> = clients.into_iter().map(ImapClient::into_stream).collect();
    let opened = streams.len() as u64;
    let ready = format!("READY opened={opened} errors={}\n", failures.errors);
    if let Some(path) = &shared.args.ready_file {
        write_atomically(path, ready.as_bytes())?;
    }
    print!("{ready}");
    hold(Duration::from_secs_f64(shared.args.hold.max(0.0))).await;
    drop(streams);
    let mut report = failures.report(base, open_s);
    report.ops = opened;
    report.ops_per_s = (opened as f64 / open_s.as_secs_f64().max(1e-9) * 1000.0).round() / 1000.0;
    report.opened = Some(opened);
    report.open_s = Some((open_s.as_secs_f64() * 1000.0).round() / 1000.0);
    Ok(report)
}

async fn latency(shared: Arc<Shared>, base: ReportBase) -> Result<Report, RunError> {
    let (clients, failures) = open_sessions(&shared, false).await;
    if clients.is_empty() {
        return Err(RunError::NoSessions(
            failures
                .first_error
                .unwrap_or_else(|| "none asked for".into()),
        ));
    }
    let a = &shared.args;
    let window = Window::after(
        Duration::from_secs_f64(a.warmup.max(0.0)),
        Duration::from_secs_f64(a.duration.max(0.001)),
    );
    // Worker w takes sessions w, w + C, …, one NOOP at a time, in turn.
    let workers = a.concurrency.clamp(1, clients.len());
    let mut shares: Vec<Vec<ImapClient>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, client) in clients.into_iter().enumerate() {
        if let Some(share) = shares.get_mut(i % workers) {
            share.push(client);
        }
    }
    let tasks: Vec<_> = shares
        .into_iter()
        .map(|mut share| {
            tokio::spawn(async move {
                let mut tally = Tally::new(window);
                let mut i = 0;
                while !window.over() && !share.is_empty() {
                    i = (i + 1) % share.len();
                    let Some(client) = share.get_mut(i) else {
                        break;
                    };
                    let began = Instant::now();
                    match client.noop().await {
                        Ok(()) => tally.record(began, 0),
                        Err(e) => {
                            tally.error(e);
                            share.swap_remove(i);
                        }
                    }
                }
                for client in &mut share {
                    let _ = client.logout().await;
                }
                tally
            })
        })
        .collect();
    let mut merged = Tally::new(window);
    merged.merge(failures);
    for task in tasks {
        match task.await {
            Ok(tally) => merged.merge(tally),
            Err(e) => merged.error(format!("worker failed: {e}")),
        }
    }
    Ok(merged.report(base, window.end.duration_since(window.start)))
}

/// Until SIGTERM, SIGINT or `limit` (0: not at all).
async fn hold(limit: Duration) {
    if limit.is_zero() {
        return;
    }
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(limit) => {}
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Writes `bytes` to `path` through a temporary file, so that a reader never sees half of it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let error = |error| RunError::Write {
        path: path.display().to_string(),
        error,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, bytes).map_err(error)?;
    std::fs::rename(&temporary, path).map_err(error)
}
