//! The command line: `serve`, `check`, `init`, `route`, `admin`, `hash-password`,
//! `app-password`, `cookie-key`, `manpage`, `completions`.

mod app_password;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use mailfront_location::Locator;
use mailfront_metrics::Metrics;
use mailfront_model::{Principal, Protocol};
use mailfront_password::{Scheme, hash_password};
use mailfront_resolve::moves::MoveHold;
use mailfront_resolve::{Mailbox, Resolver};
use mailfront_routing::{Decision, HttpRequest, Request, Topology};
use tracing_subscriber::EnvFilter;

use crate::admin_client::{self, AdminAction, AdminTarget};
use crate::app;
use crate::build;
use crate::config::{Config, LogFormat};
use crate::init;

/// mailfront: a stateless Client Access Server for mail.
#[derive(Debug, Parser)]
#[command(name = "mailfront", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node.
    Serve {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration and everything it refers to; exit non-zero on error.
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write a starter configuration into a folder: the configuration, users file, location map,
    /// a self-signed certificate and a cookie key. Only missing files are written; `check`
    /// passes on the result.
    Init {
        /// The folder (made if needed), e.g. /etc/mailfront.
        dir: PathBuf,
        /// The node's name (default: this machine's host name).
        #[arg(long)]
        node: Option<String>,
    },
    /// Explain where a user would be routed, and why.
    Route {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The user's address or alias.
        user: String,
        /// The protocol to route.
        #[arg(long, short, default_value = "imap")]
        protocol: Protocol,
        /// For `--protocol http`: the service (`[[http.service]] name`).
        #[arg(long)]
        service: Option<String>,
        /// For `--protocol http`: the URL the client used (default: the service's external URL
        /// in this node's site, else `https://localhost<path>`). A mailbox it names (MAPI's
        /// `MailboxId=`, the service's anchor parameter, a DAV path with `anchor_path`) is
        /// routed as the server routes it.
        #[arg(long)]
        url: Option<String>,
        /// For `--protocol http`: the request's `X-AnchorMailbox` (an address, `SMTP:address`,
        /// or `<mailbox GUID>@<tenant>`): the mailbox the request acts on, whose server it goes
        /// to. USER stays the caller.
        #[arg(long)]
        anchor: Option<String>,
    },
    /// Talk to a running node's admin API (status, sessions, kick, drain, reload…).
    Admin {
        /// Where the node's admin API is.
        #[command(flatten)]
        target: AdminTarget,
        /// What to do.
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Print a new cookie key entry for the HTTP key file (`[http] cookie_keys`).
    CookieKey {
        /// The new key's id (larger than every id already in the file).
        #[arg(long, default_value_t = 1)]
        id: u32,
    },
    /// Print a password hash for the password read from standard input.
    HashPassword {
        /// The scheme: SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, ARGON2ID, SSHA, SSHA512.
        #[arg(long, short, default_value = "SHA512-CRYPT")]
        scheme: Scheme,
    },
    /// Print a new random app password (four groups of four letters and digits) and, on the next
    /// lines, its users-file entry (for the user's `app_passwords`) and its LDAP value
    /// (`name;protocols;created;hash`). The password is shown once and kept nowhere.
    AppPassword {
        /// The app password's name, unique for the user (e.g. `phone`).
        #[arg(long)]
        name: String,
        /// The protocols it may be used for, comma-separated (e.g. `imap,submission`).
        #[arg(long)]
        protocols: String,
        /// The hash scheme: ARGON2ID, SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, SSHA, SSHA512.
        #[arg(long, short, default_value = "ARGON2ID")]
        scheme: Scheme,
    },
    /// Print the manual page (roff), e.g. `mailfront manpage | man -l -`; with --out-dir, write
    /// one page per command instead (`mailfront.1`, `mailfront-admin.1`, `mailfront-admin-move.1`, …).
    Manpage {
        /// Write every page into this directory.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Check { config } => check(config),
        Command::Init { dir, node } => init_command(&dir, node),
        Command::Manpage { out_dir } => manpage(out_dir.as_deref()),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "mailfront",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Route {
            config,
            user,
            protocol,
            service,
            url,
            anchor,
        } => route_command(
            config,
            &user,
            protocol,
            HttpArgs {
                service: service.as_deref(),
                url: url.as_deref(),
                anchor: anchor.as_deref(),
            },
        ),
        Command::HashPassword { scheme } => hash(scheme),
        Command::AppPassword {
            name,
            protocols,
            scheme,
        } => app_password::run(&name, &protocols, scheme),
        Command::Admin { target, action } => match admin_client::run(&target, &action) {
            Ok(body) => {
                print!("{body}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::CookieKey { id } => {
            print!("{}", mailfront_http::cookie::CookieKeys::generate_entry(id));
            ExitCode::SUCCESS
        }
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, std::io::Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn serve(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => return fail(e),
    };
    init_logging(&config);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async {
        let node = match app::RunningNode::start(&path, config).await {
            Ok(node) => node,
            Err(e) => {
                tracing::error!("{e}");
                return fail(e);
            }
        };
        tracing::info!(node = %node.reloader.config().node.name, listeners = node.bound.len(), "mailfront ready");
        crate::systemd::ready();
        wait_for_signal().await;
        tracing::info!("shutting down");
        crate::systemd::stopping();
        node.stop().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn check(path: PathBuf) -> ExitCode {
    match check_config(&path) {
        Ok((summary, warnings)) => {
            for warning in &warnings {
                eprintln!("warning: {warning}");
            }
            println!("{}: OK ({summary})", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// Everything `check` checks: the configuration, the users (file, or LDAP reachable), the
/// location map, the certificate and backend trust. A one-line summary and the warnings, or the
/// first error (naming the file).
pub fn check_config(path: &std::path::Path) -> Result<(String, Vec<String>), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let at = |e: String| format!("{}: {e}", path.display());
    let topology = build::topology(&config).map_err(at)?;
    let mut warnings = config.warnings();
    let runtime = runtime().map_err(|e| format!("cannot start the runtime: {e}"))?;
    let users = match build::load_directory_file(&config).map_err(at)? {
        Some(users) => {
            for address in users.plaintext_passwords() {
                warnings.push(format!(
                    "directory: {address} has a {{PLAIN}} password; store a hash (mailfront hash-password)"
                ));
            }
            let placeless = users.without_database();
            if let (None, Some(first)) = (&config.placement, placeless.first()) {
                warnings.push(format!(
                    "directory: {} users name no database and [placement] is not configured: \
                     they cannot log in (first: {})",
                    placeless.len(),
                    first
                ));
            }
            format!("{} users", users.len())
        }
        None => match runtime.block_on(build::probe_directory(&config)) {
            Ok(_) => "LDAP directory reachable".to_owned(),
            // Unreachable now is not a configuration error: say it, but pass.
            Err(e) if e.starts_with("directory.url") => {
                warnings.push(e);
                "LDAP directory not reachable".to_owned()
            }
            Err(e) => return Err(at(e)),
        },
    };
    let (map, rejected) = runtime
        .block_on(build::load_locations(&config))
        .map_err(at)?;
    warnings.extend(rejected);
    build::acceptor(&config)
        .and_then(|_| build::connector(&config))
        .map_err(at)?;
    let summary = format!(
        "{} servers, {}, {} databases located, {} listeners",
        topology.servers.len(),
        users,
        map.iter().count(),
        config.listener.len()
    );
    Ok((summary, warnings))
}

fn init_command(dir: &std::path::Path, node: Option<String>) -> ExitCode {
    let node = node.unwrap_or_else(init::host_name);
    match init::init(dir, &node) {
        Ok(report) => {
            for path in &report.created {
                println!("created {}", path.display());
            }
            for path in &report.kept {
                println!("kept    {} (it exists)", path.display());
            }
            print!("{}", init::next_steps(dir));
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn manpage(out_dir: Option<&std::path::Path>) -> ExitCode {
    let written = match out_dir {
        Some(dir) => clap_mangen::generate_to(Cli::command(), dir),
        None => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// What `route` was told of an HTTP request (`--service`, `--url`, `--anchor`).
#[derive(Clone, Copy)]
struct HttpArgs<'a> {
    service: Option<&'a str>,
    url: Option<&'a str>,
    anchor: Option<&'a str>,
}

/// The HTTP part of a request `route` explains: the service's kind and legacy URL from the
/// configuration, the URL the client used, and the mailbox the request names (its anchor).
struct HttpAsked {
    service: String,
    browser_app: bool,
    legacy_url: Option<String>,
    url: String,
    anchor: Option<String>,
}

fn http_asked(
    config: &Config,
    protocol: Protocol,
    args: HttpArgs<'_>,
) -> Result<Option<HttpAsked>, String> {
    let HttpArgs {
        service,
        url,
        anchor,
    } = args;
    if protocol != Protocol::Http {
        return match service.or(url).or(anchor) {
            Some(_) => Err("--service, --url and --anchor go with --protocol http".to_owned()),
            None => Ok(None),
        };
    }
    let services = config
        .http
        .as_ref()
        .map(|h| h.service.as_slice())
        .unwrap_or_default();
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    let Some(name) = service else {
        return Err(format!(
            "--protocol http needs --service (one of: {})",
            names.join(", ")
        ));
    };
    let Some(found) = services.iter().find(|s| s.name == name) else {
        return Err(format!(
            "no service `{name}` in [http] (there are: {})",
            names.join(", ")
        ));
    };
    let url = url.map(str::to_owned).unwrap_or_else(|| {
        config
            .site
            .iter()
            .find(|s| s.name == config.node.site)
            .and_then(|s| s.external_urls.get(name).cloned())
            .unwrap_or_else(|| format!("https://localhost{}", found.path))
    });
    // The anchor as the server finds it, from the same request: the header, else the URL.
    let mut request = hyper::Request::builder().uri(url.as_str());
    if let Some(anchor) = anchor {
        request = request.header("x-anchormailbox", anchor);
    }
    let request = request
        .body(())
        .map_err(|e| format!("--url/--anchor: not a request: {e}"))?;
    Ok(Some(HttpAsked {
        service: found.name.clone(),
        browser_app: found.browser_app,
        legacy_url: found.legacy_url.clone(),
        anchor: mailfront_http::anchor_of(found, &request),
        url,
    }))
}

fn route_command(path: PathBuf, user: &str, protocol: Protocol, args: HttpArgs<'_>) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => return fail(e),
    };
    let http = match http_asked(&config, protocol, args) {
        Ok(http) => http,
        Err(e) => return fail(e),
    };
    let request = Request {
        protocol,
        http: http.as_ref().map(|h| HttpRequest {
            service: &h.service,
            browser_app: h.browser_app,
            requested_url: &h.url,
            legacy_url: h.legacy_url.as_deref(),
        }),
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let locator = Arc::new(Locator::new());
    let loaded = build::topology(&config).and_then(|t| {
        let directory = runtime.block_on(async { build::directory(&config, false, &locator) })?;
        let (map, _) = runtime.block_on(build::load_locations(&config))?;
        Ok((t, directory, map))
    });
    let (topology, directory, map) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => return fail(format!("{}: {e}", path.display())),
    };
    locator.publish(map);
    let resolver = Resolver::new(
        directory,
        locator,
        topology,
        build::resolver_settings(&config),
        Arc::new(Metrics::new()),
    );
    // An explanation does not wait for a move under way: it says the move is under way.
    resolver.set_move_hold(MoveHold {
        move_timeout: Duration::ZERO,
        groups: config.placement.as_ref().map(|p| p.groups),
        presence: None,
    });
    // A request naming a mailbox goes where that mailbox is (the caller is still USER).
    let anchor = http.as_ref().and_then(|h| h.anchor.as_deref());
    let mailbox = match anchor {
        Some(anchor) => Mailbox::Anchor(anchor),
        None => Mailbox::Address(user),
    };
    let resolved = runtime.block_on(resolver.resolve(mailbox, &request));
    if let Some(why) = &resolved.directory_error {
        return fail(why);
    }
    let topology = resolved.topology();
    let principal = &resolved.principal;
    let decision = &resolved.decision;
    let mut out = std::io::stdout().lock();
    let _ = match (&principal, anchor) {
        // The caller authenticates as themself; the request goes where the anchor is.
        (_, Some(_)) => writeln!(out, "user:     {user} (the caller)"),
        (Some(p), None) => writeln!(
            out,
            "user:     {} (database {}, version {})",
            p.address, p.database, p.version
        ),
        (None, None) => writeln!(out, "user:     {user} (not in the directory)"),
    };
    if let Some(anchor) = anchor {
        let _ = match &principal {
            Some(p) => writeln!(
                out,
                "anchor:   {anchor} (mailbox {}, database {}, version {})",
                p.address, p.database, p.version
            ),
            None => writeln!(out, "anchor:   {anchor} (names no mailbox)"),
        };
    }
    let _ = writeln!(out, "protocol: {protocol}");
    if let Some(h) = &http {
        let kind = if h.browser_app {
            "browser app"
        } else {
            "service"
        };
        let _ = writeln!(out, "service:  {} ({kind}) at {}", h.service, h.url);
    }
    let _ = writeln!(
        out,
        "decision: {}",
        describe(decision, topology, protocol, principal.as_ref(), user)
    );
    let _ = writeln!(out, "reason:   {}", decision.reason());
    ExitCode::SUCCESS
}

/// What `route` prints after `decision: ` — where the session would go.
fn describe(
    decision: &Decision,
    topology: &Topology,
    protocol: Protocol,
    principal: Option<&Principal>,
    user: &str,
) -> String {
    match decision {
        Decision::Proxy { server, .. } => {
            let endpoint = topology
                .server(server)
                .and_then(|s| s.endpoints.for_protocol(protocol))
                .map(|e| format!(" ({}:{})", e.host, e.port))
                .unwrap_or_default();
            format!("proxy to {server}{endpoint}")
        }
        Decision::Redirect { location, .. } => {
            // A SIP Contact template names the dialed user; show it as a caller dialing the
            // user's address would get it.
            let location = match (protocol, principal) {
                (Protocol::Sip, Some(p)) => mailfront_protocol::sip::contact_uri(
                    location,
                    user.split('@').next().unwrap_or(user),
                    p.sip_extension.as_deref(),
                ),
                _ => location.clone(),
            };
            format!("redirect to {location}")
        }
        Decision::Reject { kind, .. } => format!(
            "reject ({})",
            if kind.is_temporary() {
                "temporary"
            } else {
                "permanent"
            }
        ),
    }
}

fn hash(scheme: Scheme) -> ExitCode {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    if let Err(e) = stdin.lock().read_line(&mut line) {
        return fail(format!("cannot read the password: {e}"));
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return fail("empty password");
    }
    match hash_password(scheme, password.as_bytes()) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
