//! The status page: `GET /` on the admin listener, a small HTML page in the spirit of HAProxy's
//! stats page, for people rather than scripts. The node, each mailbox server with its health per
//! endpoint and live sessions per protocol, each database and where it is active, and logins per
//! minute by result, each row with a bar. No script: the page reloads itself every few seconds.
//!
//! [`render`] is a pure function of a [`PageView`], so what the page says is tested without a
//! node; [`Admin::page`] gathers the view from the node's state.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::time::{Duration, Instant, SystemTime};

use mailfront_model::Protocol;
use mailfront_proxy::registry::Filter;

use super::{Admin, Answer};

/// How often the page reloads itself.
pub const REFRESH_SECONDS: u32 = 5;

/// One mailbox server's row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerRow {
    /// Its name.
    pub name: String,
    /// Each probed endpoint and its state (`up`, `down`, `maintenance`); empty when not probed.
    pub endpoints: Vec<(String, String)>,
    /// Live sessions on it, by protocol.
    pub sessions: BTreeMap<String, usize>,
    /// The databases active on it.
    pub databases: Vec<String>,
}

/// Everything the page shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PageView {
    /// The node's name.
    pub node: String,
    /// mailfront's version.
    pub version: String,
    /// Since the node started.
    pub uptime: Duration,
    /// Whether the node is draining.
    pub draining: bool,
    /// Whether it leads the array as its Active Manager.
    pub leader: bool,
    /// The mailbox servers.
    pub servers: Vec<ServerRow>,
    /// Each database and its active server.
    pub databases: Vec<(String, String)>,
    /// Logins by result: per minute lately, and in all since start.
    pub logins: Vec<(String, f64, u64)>,
}

/// Logins per minute from samples of the counters: the page is reloaded every few seconds, and
/// each view adds a sample; the rate is taken over the last minute or so.
#[derive(Debug)]
pub struct LoginRates {
    samples: VecDeque<(Instant, BTreeMap<String, u64>)>,
}

impl LoginRates {
    /// Rates counted from `started`, when every counter was zero.
    pub fn new(started: Instant) -> Self {
        Self {
            samples: VecDeque::from([(started, BTreeMap::new())]),
        }
    }

    /// Adds the totals seen `now` and returns each result's logins per minute since the oldest
    /// sample within the last minute (or the one just before it).
    pub fn observe(
        &mut self,
        now: Instant,
        totals: BTreeMap<String, u64>,
    ) -> BTreeMap<String, f64> {
        while self.samples.len() > 1
            && self
                .samples
                .get(1)
                .is_some_and(|(at, _)| now.duration_since(*at) >= Duration::from_secs(60))
        {
            self.samples.pop_front();
        }
        let (since, before) = self
            .samples
            .front()
            .cloned()
            .unwrap_or((now, BTreeMap::new()));
        let minutes = now.duration_since(since).as_secs_f64() / 60.0;
        let rates = totals
            .iter()
            .map(|(result, total)| {
                let earlier = before.get(result).copied().unwrap_or(0);
                let rate = if minutes > 0.0 {
                    total.saturating_sub(earlier) as f64 / minutes
                } else {
                    0.0
                };
                (result.clone(), rate)
            })
            .collect();
        self.samples.push_back((now, totals));
        rates
    }
}

use mailfront_http::form::html_escape as escape;

impl Admin {
    /// The status page, from the node's state now.
    pub(super) fn page(&self) -> Answer {
        let board = self.services.resolver.health().snapshot();
        let map = self.locator.snapshot();
        let mut sessions: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for session in self.services.registry.list(&Filter::default()) {
            *sessions
                .entry(session.server.to_string())
                .or_default()
                .entry(session.protocol.as_str().to_owned())
                .or_default() += 1;
        }
        let servers = self
            .services
            .resolver
            .topology()
            .servers
            .keys()
            .map(|name| {
                let health = board.get(name);
                let endpoints = health
                    .map(|h| {
                        h.endpoints
                            .iter()
                            .map(|(protocol, up)| {
                                let state = if h.maintenance {
                                    "maintenance"
                                } else if *up {
                                    "up"
                                } else {
                                    "down"
                                };
                                (protocol.as_str().to_owned(), state.to_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let databases = map
                    .iter()
                    .flat_map(|m| m.iter())
                    .filter(|(_, server)| *server == name)
                    .map(|(database, _)| database.to_string())
                    .collect();
                ServerRow {
                    name: name.to_string(),
                    endpoints,
                    sessions: sessions.remove(name.as_str()).unwrap_or_default(),
                    databases,
                }
            })
            .collect();
        let databases = map
            .iter()
            .flat_map(|m| m.iter())
            .map(|(database, server)| (database.to_string(), server.to_string()))
            .collect();
        let mut totals = BTreeMap::new();
        for protocol in self
            .protocols
            .iter()
            .filter(|p| matches!(p, Protocol::Imap | Protocol::Pop3 | Protocol::Submission))
        {
            for result in mailfront_metrics::LOGIN_RESULTS {
                let labels = mailfront_metrics::ResultLabels {
                    protocol: protocol.as_str().to_owned(),
                    result: result.to_owned(),
                };
                let count = self.services.metrics.logins.get_or_create(&labels).get();
                *totals.entry(result.to_owned()).or_insert(0) += count;
            }
        }
        let rates = self
            .login_rates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(Instant::now(), totals.clone());
        let logins = mailfront_metrics::LOGIN_RESULTS
            .iter()
            .map(|result| {
                let rate = rates.get(*result).copied().unwrap_or(0.0);
                let total = totals.get(*result).copied().unwrap_or(0);
                ((*result).to_owned(), rate, total)
            })
            .collect();
        let view = PageView {
            node: self.node.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime: SystemTime::now()
                .duration_since(self.started)
                .unwrap_or(Duration::ZERO),
            draining: self.state.is_draining(),
            leader: self.manager.as_ref().is_some_and(|m| m.is_leader()),
            servers,
            databases,
            logins,
        };
        Answer::html(render(&view))
    }
}

/// A bar `value / max` wide.
fn bar(value: f64, max: f64) -> String {
    let percent = if max > 0.0 {
        (value / max * 100.0).clamp(0.0, 100.0)
    } else {
        0.0
    };
    format!("<span class=\"bar\"><span style=\"width:{percent:.0}%\"></span></span>")
}

fn uptime(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60);
    match (days, hours) {
        (0, 0) => format!("{minutes} min {} s", seconds % 60),
        (0, _) => format!("{hours} h {minutes} min"),
        _ => format!("{days} d {hours} h"),
    }
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}\
table{border-collapse:collapse;min-width:40em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
th{background:#eee}.up{background:#cfc}.down{background:#fcc}.maintenance{background:#ffc}\
.bar{display:inline-block;width:8em;height:.8em;background:#eee;margin-left:.5em;vertical-align:middle}\
.bar span{display:block;height:100%;background:#68c}.note{color:#666}";

/// The page.
pub fn render(view: &PageView) -> String {
    let mut page = String::new();
    let node = escape(&view.node);
    let _ = write!(
        page,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>mailfront {node}</title><style>{STYLE}</style></head><body>\
         <h1>mailfront <span id=\"node\">{node}</span></h1>\
         <p>version {version} · up {uptime} · {state} · {role}</p>",
        version = escape(&view.version),
        uptime = uptime(view.uptime),
        state = if view.draining {
            "<b>draining</b>"
        } else {
            "serving"
        },
        role = if view.leader {
            "Active Manager leader"
        } else {
            "not the leader"
        },
    );
    servers(&mut page, view);
    databases(&mut page, view);
    logins(&mut page, view);
    let _ = writeln!(
        page,
        "<p class=\"note\">This page reloads every {REFRESH_SECONDS} s. The same data as JSON: \
         /status, /servers, /databases, /sessions; metrics: /metrics.</p></body></html>"
    );
    page
}

fn servers(page: &mut String, view: &PageView) {
    let most = view
        .servers
        .iter()
        .map(|s| s.sessions.values().sum::<usize>())
        .max()
        .unwrap_or(0) as f64;
    page.push_str(
        "<h2>Mailbox servers</h2><table id=\"servers\"><tr><th>server</th><th>endpoints</th>\
         <th>sessions</th><th>active databases</th></tr>",
    );
    for server in &view.servers {
        let endpoints: String = if server.endpoints.is_empty() {
            "<span class=\"note\">not probed</span>".to_owned()
        } else {
            server
                .endpoints
                .iter()
                .map(|(protocol, state)| {
                    format!(
                        "<span class=\"{state}\">{} {}</span> ",
                        escape(protocol),
                        escape(state)
                    )
                })
                .collect()
        };
        let total: usize = server.sessions.values().sum();
        let by_protocol: Vec<String> = server
            .sessions
            .iter()
            .map(|(protocol, n)| format!("{} {n}", escape(protocol)))
            .collect();
        let _ = write!(
            page,
            "<tr><td>{name}</td><td>{endpoints}</td><td>{total}{detail}{bar}</td><td>{dbs}</td></tr>",
            name = escape(&server.name),
            detail = if by_protocol.is_empty() {
                String::new()
            } else {
                format!(" ({})", by_protocol.join(", "))
            },
            bar = bar(total as f64, most),
            dbs = escape(&server.databases.join(", ")),
        );
    }
    page.push_str("</table>");
}

fn databases(page: &mut String, view: &PageView) {
    page.push_str(
        "<h2>Databases</h2><table id=\"databases\"><tr><th>database</th><th>active on</th></tr>",
    );
    for (database, server) in &view.databases {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(database),
            escape(server)
        );
    }
    page.push_str("</table>");
}

fn logins(page: &mut String, view: &PageView) {
    let most = view
        .logins
        .iter()
        .map(|(_, rate, _)| *rate)
        .fold(0.0, f64::max);
    page.push_str(
        "<h2>Logins</h2><table id=\"logins\"><tr><th>result</th><th>per minute</th>\
         <th>since start</th></tr>",
    );
    for (result, rate, total) in &view.logins {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{rate:.1}{}</td><td>{total}</td></tr>",
            escape(result),
            bar(*rate, most)
        );
    }
    page.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_shows_servers_databases_and_logins_and_escapes_names() {
        let view = PageView {
            node: "cas<1>".to_owned(),
            version: "0.1.0".to_owned(),
            uptime: Duration::from_secs(3723),
            draining: true,
            leader: true,
            servers: vec![ServerRow {
                name: "mbx1".to_owned(),
                endpoints: vec![
                    ("imap".to_owned(), "up".to_owned()),
                    ("pop3".to_owned(), "down".to_owned()),
                ],
                sessions: BTreeMap::from([("imap".to_owned(), 3), ("pop3".to_owned(), 1)]),
                databases: vec!["DB01".to_owned()],
            }],
            databases: vec![("DB01".to_owned(), "mbx1".to_owned())],
            logins: vec![
                ("ok".to_owned(), 12.0, 40),
                ("auth_failed".to_owned(), 3.0, 5),
            ],
        };
        let page = render(&view);
        for needle in [
            "<span id=\"node\">cas&lt;1&gt;</span>",
            "up 1 h 2 min",
            "<b>draining</b>",
            "Active Manager leader",
            "<span class=\"up\">imap up</span>",
            "<span class=\"down\">pop3 down</span>",
            "4 (imap 3, pop3 1)",
            "<td>DB01</td><td>mbx1</td>",
            "<td>ok</td><td>12.0",
            "style=\"width:25%\"",
            "http-equiv=\"refresh\"",
        ] {
            assert!(page.contains(needle), "{needle} missing in {page}");
        }
        assert!(!page.contains("cas<1>"));
    }

    #[test]
    fn rates_are_per_minute_over_the_last_minute() {
        let start = Instant::now();
        let mut rates = LoginRates::new(start);
        let totals = |n: u64| BTreeMap::from([("ok".to_owned(), n)]);
        // 30 logins in the first 30 s: 60 a minute.
        let first = rates.observe(start + Duration::from_secs(30), totals(30));
        assert!((first["ok"] - 60.0).abs() < 1e-9, "{first:?}");
        // Then none for two minutes: the rate falls to zero once the busy samples are old.
        rates.observe(start + Duration::from_secs(90), totals(30));
        let later = rates.observe(start + Duration::from_secs(160), totals(30));
        assert!(later["ok"] < 1e-9, "{later:?}");
    }
}
