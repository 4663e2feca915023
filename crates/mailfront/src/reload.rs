//! Hot reload: on SIGHUP, on an admin request, or when the configuration file, the certificate,
//! its key or the cookie key file changes, the configuration is read and checked again and what
//! can change under a running node is swapped in at once: the topology (servers, sites,
//! databases — the Active Manager's copies with them), the client certificate, and the cookie
//! keys.
//!
//! A new configuration is all or nothing: if anything in it is wrong (a parse error, a bad
//! certificate, a server removed while the location map still makes it active…), the old one
//! stays in force and the error is logged, counted and returned to the admin caller. Sessions
//! already proxied never notice a reload: they hold their backend connection, and only new
//! logins see the new topology. Changes that need new sockets or rebuilt state (listeners, the
//! directory or location backend, timeouts, limits…) are reported as needing a restart.
//!
//! The directory file and the location file are not part of this: their own pollers follow
//! them continuously (`[reload] interval`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use mailfront_filewatch::FileWatch;
use mailfront_http::HttpFrontDoor;
use mailfront_http::cookie::CookieKeys;
use mailfront_location::Locator;
use mailfront_location::file::FileSource;
use mailfront_manager::active::ActiveManager;
use mailfront_metrics::{Metrics, OutcomeLabel};
use mailfront_net::tls::SharedAcceptor;
use mailfront_resolve::Resolver;
use tokio::sync::watch;

use crate::build::{self, LocationRules};
use crate::config::Config;

/// What a successful reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// What changed and was applied (`topology`, `certificate`, `cookie keys`).
    pub applied: Vec<String>,
    /// Sections that changed but only take effect after a restart.
    pub needs_restart: Vec<String>,
}

/// The outcome of the last reload, for `/status`.
#[derive(Clone, Debug, Default)]
pub struct ReloadStatus {
    /// When the configuration in force was loaded.
    pub loaded_at: Option<SystemTime>,
    /// The last rejected configuration's error, cleared by the next good one.
    pub last_error: Option<String>,
    /// Sections of the configuration in force that differ from the one the node started with
    /// and only take effect after a restart.
    pub pending_restart: Vec<String>,
}

/// Everything a reload swaps, and the configuration in force.
pub struct Reloader {
    path: PathBuf,
    current: ArcSwap<Config>,
    /// The restart-only sections as the node started with them: what a reload compares to.
    started: BTreeMap<&'static str, String>,
    resolver: Arc<Resolver>,
    locator: Arc<Locator>,
    metrics: Arc<Metrics>,
    mail_tls: Arc<SharedAcceptor>,
    http_tls: Arc<SharedAcceptor>,
    admin_tls: Arc<SharedAcceptor>,
    http: Option<Arc<HttpFrontDoor>>,
    rules: Arc<ArcSwap<LocationRules>>,
    location_file: Option<Arc<FileSource>>,
    manager: Arc<ActiveManager>,
    status: Mutex<ReloadStatus>,
    /// Hashes of the certificate and key, and of the cookie key file, in force (to report
    /// what a reload changed).
    loaded_files: Mutex<(u64, u64)>,
    /// One reload at a time (SIGHUP, the admin API and the file poller may coincide).
    running: Mutex<()>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The parts of a running node that a reload can replace.
pub struct Swappable {
    /// The resolver (its topology).
    pub resolver: Arc<Resolver>,
    /// The locator (its map is checked against new rules).
    pub locator: Arc<Locator>,
    /// The node's counters.
    pub metrics: Arc<Metrics>,
    /// The acceptor of mail and SIP listeners.
    pub mail_tls: Arc<SharedAcceptor>,
    /// The acceptor of HTTPS listeners.
    pub http_tls: Arc<SharedAcceptor>,
    /// The acceptor of the admin listener (when it speaks TLS).
    pub admin_tls: Arc<SharedAcceptor>,
    /// The HTTPS front door (its cookie keys), if configured.
    pub http: Option<Arc<HttpFrontDoor>>,
    /// The rules location maps are checked against.
    pub rules: Arc<ArcSwap<LocationRules>>,
    /// The location file source, when locations come from a file.
    pub location_file: Option<Arc<FileSource>>,
    /// The Active Manager (the databases' configured copies).
    pub manager: Arc<ActiveManager>,
}

/// Sections compared by their debug form; a change to any needs a restart.
fn restart_sections(config: &Config) -> BTreeMap<&'static str, String> {
    let http = config.http.as_ref().map(|h| {
        // The key file's content is reloadable, and so is its path.
        let mut h = h.clone();
        h.cookie_keys = PathBuf::new();
        h
    });
    BTreeMap::from([
        ("node", format!("{:?}", config.node)),
        ("directory", format!("{:?}", config.directory)),
        ("location", format!("{:?}", config.location)),
        ("backend_tls", format!("{:?}", config.backend_tls)),
        ("listener", format!("{:?}", config.listener)),
        ("limits", format!("{:?}", config.limits)),
        ("transport", format!("{:?}", config.transport)),
        ("outbound", format!("{:?}", config.outbound)),
        ("sip", format!("{:?}", config.sip)),
        ("http", format!("{http:?}")),
        ("timeouts", format!("{:?}", config.timeouts)),
        ("reload", format!("{:?}", config.reload)),
        ("log", format!("{:?}", config.log)),
        ("throttle", format!("{:?}", config.throttle)),
        ("proxy_protocol", format!("{:?}", config.proxy_protocol)),
        ("admin", format!("{:?}", config.admin)),
        ("health", format!("{:?}", config.health)),
        ("active_manager", format!("{:?}", config.active_manager)),
        ("placement", format!("{:?}", config.placement)),
    ])
}

fn topology_form(config: &Config) -> String {
    format!("{:?}{:?}{:?}", config.server, config.site, config.database)
}

/// The files whose change triggers a reload: the configuration, the certificates and keys, the
/// cookie key file.
fn watched_paths(path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut paths = vec![path.to_owned()];
    if let Some(tls) = &config.tls {
        paths.extend(tls.files().into_iter().cloned());
    }
    if let Some(http) = &config.http {
        paths.push(http.cookie_keys.clone());
    }
    paths.extend(config.admin.as_ref().and_then(|a| a.client_ca.clone()));
    paths
}

impl Reloader {
    /// A reloader for the node started from `config`, read from `path`.
    pub fn new(path: PathBuf, config: Config, parts: Swappable) -> Self {
        let mut started = restart_sections(&config);
        started.insert("tls", format!("{}", config.tls.is_some()));
        Self {
            path,
            started,
            current: ArcSwap::from_pointee(config),
            resolver: parts.resolver,
            locator: parts.locator,
            metrics: parts.metrics,
            mail_tls: parts.mail_tls,
            http_tls: parts.http_tls,
            admin_tls: parts.admin_tls,
            http: parts.http,
            rules: parts.rules,
            location_file: parts.location_file,
            manager: parts.manager,
            status: Mutex::new(ReloadStatus {
                loaded_at: Some(SystemTime::now()),
                last_error: None,
                pending_restart: Vec::new(),
            }),
            loaded_files: Mutex::new((0, 0)),
            running: Mutex::new(()),
        }
        .remember_files()
    }

    fn file_hashes(config: &Config) -> (u64, u64) {
        let certificate = config
            .tls
            .as_ref()
            .map(|t| {
                let mut files: Vec<&Path> = t.files().into_iter().map(PathBuf::as_path).collect();
                // The admin listener's client CAs are reloaded with the certificates.
                files.extend(config.admin.as_ref().and_then(|a| a.client_ca.as_deref()));
                content_hash(&files)
            })
            .unwrap_or_default();
        let keys = config
            .http
            .as_ref()
            .map(|h| content_hash(&[&h.cookie_keys]))
            .unwrap_or_default();
        (certificate, keys)
    }

    fn remember_files(self) -> Self {
        let hashes = Self::file_hashes(&self.current.load());
        *self.loaded_files.lock().unwrap_or_else(|p| p.into_inner()) = hashes;
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.current.load_full()
    }

    /// The outcome of the last reload.
    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the configuration again and applies it, or keeps the old one and returns why not.
    /// `trigger` says what asked (for the log).
    pub fn reload(&self, trigger: &str) -> Result<ReloadReport, String> {
        let _one_at_a_time = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.try_reload();
        let metrics = &self.metrics;
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(report) => {
                status.loaded_at = Some(SystemTime::now());
                status.last_error = None;
                status.pending_restart = report.needs_restart.clone();
                metrics
                    .config_reloads
                    .get_or_create(&OutcomeLabel {
                        result: "ok".into(),
                    })
                    .inc();
                tracing::info!(
                    trigger,
                    applied = %if report.applied.is_empty() {
                        "nothing".to_owned()
                    } else {
                        report.applied.join(", ")
                    },
                    "configuration reloaded"
                );
                for section in &report.needs_restart {
                    tracing::warn!(
                        trigger,
                        section = %section,
                        "configuration section changed; it takes effect after a restart"
                    );
                }
            }
            Err(error) => {
                status.last_error = Some(error.clone());
                metrics
                    .config_reloads
                    .get_or_create(&OutcomeLabel {
                        result: "rejected".into(),
                    })
                    .inc();
                tracing::error!(trigger, %error, "configuration reload rejected; the previous configuration stays in force");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<ReloadReport, String> {
        let new = Config::load(&self.path).map_err(|e| e.to_string())?;
        let old = self.current.load_full();
        // Build everything first; apply only when all of it is good.
        let topology = build::topology(&new)?;
        let rules = LocationRules::from_config(&new);
        if let Some(map) = self.locator.snapshot() {
            rules.check(&map).map_err(|e| {
                format!("the location map in force does not fit the new configuration: {e}")
            })?;
        }
        let mail_acceptor = build::acceptor(&new)?;
        let http_acceptor = build::http_acceptor(&new)?;
        let admin_acceptor = build::admin_acceptor(&new)?;
        let keys = match (&new.http, &self.http) {
            (Some(http), Some(_)) => Some(
                CookieKeys::load(&http.cookie_keys)
                    .map_err(|e| format!("http.cookie_keys: {e}"))?,
            ),
            _ => None,
        };

        let mut report = ReloadReport::default();
        // Against the configuration the node started with: a change stays pending (and
        // reported) on every reload until a restart.
        let mut new_sections = restart_sections(&new);
        new_sections.insert("tls", format!("{}", new.tls.is_some()));
        for (section, form) in &new_sections {
            if self.started.get(section) != Some(form) {
                report.needs_restart.push((*section).to_owned());
            }
        }

        if topology_form(&old) != topology_form(&new) {
            report.applied.push("topology".to_owned());
        }
        self.resolver.set_topology(topology);
        self.rules.store(Arc::new(rules));
        self.manager.set_copies(build::copies(&new));
        if let Some(source) = &self.location_file
            && let Err(e) = source.reload()
        {
            // The map in force was checked above; a bad file on disk is the file's problem
            // (its poller logs it too) and does not make the configuration wrong.
            tracing::warn!(error = %e, "the location file does not load; keeping the map in force");
        }
        let (certificate_hash, keys_hash) = Self::file_hashes(&new);
        let mut loaded = self.loaded_files.lock().unwrap_or_else(|p| p.into_inner());
        // TLS is swapped only where it was configured at start (a listener without TLS stays so).
        if self.mail_tls.is_some() && mail_acceptor.is_some() {
            self.mail_tls.set(mail_acceptor);
            self.http_tls.set(http_acceptor);
            if self.admin_tls.is_some() && admin_acceptor.is_some() {
                self.admin_tls.set(admin_acceptor);
            }
            if loaded.0 != certificate_hash {
                report.applied.push("certificate".to_owned());
            }
            loaded.0 = certificate_hash;
        }
        if let (Some(front), Some(keys)) = (&self.http, keys) {
            front.set_keys(keys);
            if loaded.1 != keys_hash {
                report.applied.push("cookie keys".to_owned());
            }
            loaded.1 = keys_hash;
        }
        drop(loaded);
        self.current.store(Arc::new(new));
        Ok(report)
    }

    /// Reloads on SIGHUP and whenever a watched file changes, until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; reload by file change or the admin API");
                None
            }
        };
        let mut watches = self.fresh_watches();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => "SIGHUP",
                _ = ticker.tick() => {
                    if !poll_any(&mut watches) {
                        continue;
                    }
                    // Files renewed together (a certificate and its key) are written one after
                    // the other: let the set settle for one interval before reading it.
                    tokio::time::sleep(interval).await;
                    poll_any(&mut watches);
                    "file change"
                }
            };
            let reloader = Arc::clone(&self);
            let trigger_owned = trigger.to_owned();
            // Reading certificates and the configuration is blocking file I/O.
            let _ = tokio::task::spawn_blocking(move || reloader.reload(&trigger_owned)).await;
            // The set of watched files may have changed with the configuration.
            let paths = watched_paths(&self.path, &self.current.load());
            if paths
                .iter()
                .map(PathBuf::as_path)
                .ne(watches.iter().map(FileWatch::path))
            {
                watches = self.fresh_watches();
            }
        }
    }

    fn fresh_watches(&self) -> Vec<FileWatch> {
        watched_paths(&self.path, &self.current.load())
            .into_iter()
            .map(|path| {
                let mut watch = FileWatch::new(path);
                // Remember the current content, so that only a later change triggers.
                let _ = watch.read();
                watch
            })
            .collect()
    }
}

/// A hash of the files' contents (unreadable files hash as empty).
fn content_hash(paths: &[&Path]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    for path in paths {
        std::fs::read(path).unwrap_or_default().hash(&mut hasher);
    }
    hasher.finish()
}

/// Polls every watch (all of them, so each remembers the latest content); whether any changed.
fn poll_any(watches: &mut [FileWatch]) -> bool {
    let mut changed = false;
    for watch in watches.iter_mut() {
        if matches!(watch.poll(), Ok(Some(_))) {
            changed = true;
        }
    }
    changed
}
