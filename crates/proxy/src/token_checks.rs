//! Sessions opened with an OAuth access token, checked again while they last: with the
//! provider's introspection endpoint (RFC 7662) every `recheck`, a token it calls inactive
//! (revoked, or expired there) closes every session it opened, with the protocol's goodbye; with
//! `session_max = "token"`, a session also ends when its token expires. A provider that does not
//! answer changes nothing (the sessions go on; logged).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailfront_model::Secret;
use mailfront_oauth::Provider;
use tokio::time::Instant;

use crate::registry::{Registry, StopReason};

/// How often an expiry is looked for (a session ends at most this late).
const EXPIRY_TICK: Duration = Duration::from_secs(1);

/// The provider's introspection, as this node's client.
pub struct Introspection {
    /// The provider.
    pub provider: Arc<Provider>,
    /// mailfront's client id at the provider.
    pub client_id: String,
    /// Its secret.
    pub secret: Secret<String>,
}

/// What is checked, and how often.
pub struct TokenChecks {
    /// Time between two introspections of a live session's token.
    pub every: Duration,
    /// End a session when its token expires.
    pub end_at_expiry: bool,
    /// Introspection, if configured.
    pub introspection: Option<Introspection>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the checks over `registry`'s token sessions for as long as the node runs.
pub async fn run(registry: Arc<Registry>, checks: TokenChecks) {
    let mut next_introspection = Instant::now() + checks.every;
    loop {
        tokio::time::sleep(EXPIRY_TICK.min(checks.every)).await;
        let sessions = registry.with_tokens();
        if checks.end_at_expiry {
            let now = now_unix();
            for (key, watched) in &sessions {
                if watched.expires <= now
                    && let Some(user) = registry.stop_session(*key, &StopReason::TokenExpired)
                {
                    tracing::info!(user = %user, "session closed: its access token expired");
                }
            }
        }
        let Some(introspection) = &checks.introspection else {
            continue;
        };
        if Instant::now() < next_introspection {
            continue;
        }
        next_introspection = Instant::now() + checks.every;
        // One question per token, however many sessions it opened.
        let mut answers: HashMap<&[u8], Option<bool>> = HashMap::new();
        for (key, watched) in &sessions {
            let token = watched.token.expose().as_slice();
            if !answers.contains_key(token) {
                let answer = introspection
                    .provider
                    .introspect(
                        token,
                        &introspection.client_id,
                        introspection.secret.expose(),
                    )
                    .await;
                if let Err(error) = &answer {
                    tracing::warn!(%error, "cannot re-check a session's access token; the session goes on");
                }
                answers.insert(token, answer.ok());
            }
            if answers.get(token) == Some(&Some(false))
                && let Some(user) = registry.stop_session(*key, &StopReason::TokenRevoked)
            {
                tracing::info!(user = %user, "session closed: its access token is no longer active");
            }
        }
    }
}
