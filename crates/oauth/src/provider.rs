//! The OpenID provider's signing keys: discovery (`<issuer>/.well-known/openid-configuration`,
//! whose `issuer` must be the configured one), then its `jwks_uri`. The keys are kept and
//! served from memory; they are fetched again every `refresh`, and when a token names a key not
//! seen yet (a rotation) — at most once per `min_refetch`, so a stream of made-up `kid`s cannot
//! turn into a stream of requests to the provider. A failed fetch keeps the keys already known:
//! a provider that is unreachable for a while does not stop logins; one never reached makes
//! token logins fail temporarily.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Bytes;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::JwkSet;
use serde_json::Value;
use tokio::time::Instant;

/// Largest discovery document or key set read.
const MAX_DOCUMENT: usize = 1024 * 1024;

/// Where the provider is and how often its keys are fetched.
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    /// The issuer identifier (an `https://` URL; `http://` only on loopback).
    pub issuer: String,
    /// A PEM file of CA certificates for the provider's TLS; default: the system's.
    pub ca_file: Option<PathBuf>,
    /// How often the keys are fetched again.
    pub refresh: Duration,
    /// The least time between two fetches caused by unknown key ids.
    pub min_refetch: Duration,
    /// The longest one request to the provider may take.
    pub timeout: Duration,
}

/// The provider's keys are not known: never fetched, and the provider cannot be reached now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the OpenID provider's keys are unavailable: {0}")]
pub struct Unavailable(pub String);

/// What the last successful fetch found.
struct Known {
    keys: Arc<JwkSet>,
    /// The discovery document (its endpoints, for introspection and clients).
    discovery: Arc<Value>,
}

/// One provider's keys, shared by every session of a node.
pub struct Provider {
    settings: ProviderSettings,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// For POSTs (introspection).
    poster: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    known: ArcSwapOption<Known>,
    /// One fetch at a time; those who waited use its result.
    fetching: tokio::sync::Mutex<()>,
    /// When a fetch was last tried (successful or not).
    last_attempt: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// A provider with nothing fetched yet; reads the CA file. Errors name the problem.
    pub fn new(settings: ProviderSettings) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        match &settings.ca_file {
            Some(path) => {
                use rustls_pki_types::CertificateDer;
                use rustls_pki_types::pem::PemObject;
                let certificates = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                for certificate in certificates {
                    let certificate =
                        certificate.map_err(|e| format!("{}: {e}", path.display()))?;
                    roots
                        .add(certificate)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
            }
            None => {
                for certificate in rustls_native_certs::load_native_certs().certs {
                    // A system certificate rustls cannot use is skipped, not fatal.
                    let _ = roots.add(certificate);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // http:// is for a provider on loopback (checked where the configuration is read).
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector.clone());
        let poster = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            settings,
            client,
            poster,
            known: ArcSwapOption::empty(),
            fetching: tokio::sync::Mutex::new(()),
            last_attempt: Mutex::new(None),
        })
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// Where the provider's discovery document is (for clients, in error challenges).
    pub fn discovery_url(&self) -> String {
        discovery_url(&self.settings.issuer)
    }

    /// An endpoint the discovery document names (`introspection_endpoint`, …), if fetched.
    pub fn endpoint(&self, name: &str) -> Option<String> {
        self.known
            .load()
            .as_ref()
            .and_then(|k| k.discovery.get(name)?.as_str().map(str::to_owned))
    }

    /// The keys: those known, or fetched now if none are.
    pub async fn keys(&self) -> Result<Arc<JwkSet>, Unavailable> {
        if let Some(known) = self.known.load_full() {
            return Ok(Arc::clone(&known.keys));
        }
        self.refresh().await?;
        self.known
            .load_full()
            .map(|k| Arc::clone(&k.keys))
            .ok_or_else(|| Unavailable("no keys".to_owned()))
    }

    /// Fetches the keys again because a token names one not seen yet; the new keys, or `None`
    /// when a fetch was tried less than `min_refetch` ago or fails.
    pub async fn refetch_for_unknown_key(&self) -> Option<Arc<JwkSet>> {
        let recent = self
            .lock_attempt()
            .is_some_and(|at| at.elapsed() < self.settings.min_refetch);
        if recent {
            return None;
        }
        self.refresh().await.ok()?;
        self.known.load_full().map(|k| Arc::clone(&k.keys))
    }

    fn lock_attempt(&self) -> Option<Instant> {
        *self
            .last_attempt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fetches discovery and the keys; on failure the keys known stay.
    pub async fn refresh(&self) -> Result<(), Unavailable> {
        let started = Instant::now();
        let _one = self.fetching.lock().await;
        // Someone else fetched while this one waited: that result will do.
        if self.lock_attempt().is_some_and(|at| at >= started) && self.known.load().is_some() {
            return Ok(());
        }
        *self
            .last_attempt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
        let result = self.fetch().await;
        match &result {
            Ok(known) => {
                tracing::info!(issuer = %self.settings.issuer, keys = known.keys.keys.len(), "OpenID provider's keys fetched");
            }
            Err(e) => {
                tracing::warn!(issuer = %self.settings.issuer, error = %e, kept = self.known.load().is_some(), "cannot fetch the OpenID provider's keys");
            }
        }
        let known = result?;
        self.known.store(Some(Arc::new(known)));
        Ok(())
    }

    async fn fetch(&self) -> Result<Known, Unavailable> {
        let discovery = self.get_json(&self.discovery_url()).await?;
        let issuer = discovery.get("issuer").and_then(Value::as_str);
        if issuer != Some(self.settings.issuer.as_str()) {
            return Err(Unavailable(format!(
                "the discovery document's issuer is {issuer:?}, not {:?}",
                self.settings.issuer
            )));
        }
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| Unavailable("the discovery document has no jwks_uri".to_owned()))?
            .to_owned();
        let keys: JwkSet = serde_json::from_value(self.get_json(&jwks_uri).await?)
            .map_err(|e| Unavailable(format!("{jwks_uri}: not a key set: {e}")))?;
        Ok(Known {
            keys: Arc::new(keys),
            discovery: Arc::new(discovery),
        })
    }

    /// GETs `url` and reads its JSON body (at most [`MAX_DOCUMENT`] bytes, within the timeout).
    async fn get_json(&self, url: &str) -> Result<Value, Unavailable> {
        let fail = |what: String| Unavailable(format!("{url}: {what}"));
        let uri: hyper::Uri = url.parse().map_err(|e| fail(format!("{e}")))?;
        let work = async {
            let response = self
                .client
                .get(uri)
                .await
                .map_err(|e| fail(e.to_string()))?;
            json_body(response).await.map_err(fail)
        };
        tokio::time::timeout(self.settings.timeout, work)
            .await
            .map_err(|_| fail(format!("no answer within {:?}", self.settings.timeout)))?
    }

    /// Asks the provider's introspection endpoint (RFC 7662) whether `token` is still active,
    /// as the client `client_id` with `secret` (HTTP Basic, RFC 7662 §2.1).
    pub async fn introspect(
        &self,
        token: &[u8],
        client_id: &str,
        secret: &str,
    ) -> Result<bool, Unavailable> {
        let url = self.endpoint("introspection_endpoint").ok_or_else(|| {
            Unavailable("the provider names no introspection_endpoint".to_owned())
        })?;
        let fail = |what: String| Unavailable(format!("{url}: {what}"));
        let token = std::str::from_utf8(token).map_err(|_| fail("token is not text".into()))?;
        let body = format!(
            "token={}&token_type_hint=access_token",
            form_component(token)
        );
        let basic = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:{}", form_component(client_id), form_component(secret)),
        );
        let request = hyper::Request::post(url.as_str())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", format!("Basic {basic}"))
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| fail(e.to_string()))?;
        let work = async {
            let response = self
                .poster
                .request(request)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let answer = json_body(response).await.map_err(fail)?;
            answer
                .get("active")
                .and_then(Value::as_bool)
                .ok_or_else(|| fail("no `active` in the answer".into()))
        };
        tokio::time::timeout(self.settings.timeout, work)
            .await
            .map_err(|_| fail(format!("no answer within {:?}", self.settings.timeout)))?
    }

    /// Fetches the keys at once and then every `refresh` (after a failure, sooner: from 1 s,
    /// doubling, up to `refresh`), for as long as the node runs.
    pub async fn run(self: Arc<Self>) {
        let mut retry = Duration::from_secs(1);
        loop {
            let wait = match self.refresh().await {
                Ok(()) => {
                    retry = Duration::from_secs(1);
                    self.settings.refresh
                }
                Err(_) => {
                    let wait = retry;
                    retry = (retry * 2).min(self.settings.refresh);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Where the discovery document of the provider `issuer` is (OpenID Connect Discovery §4).
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// The JSON body of a successful response (at most [`MAX_DOCUMENT`] bytes); the error says why
/// not.
async fn json_body(response: hyper::Response<hyper::body::Incoming>) -> Result<Value, String> {
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_DOCUMENT)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
}

/// `text` percent-encoded for an `application/x-www-form-urlencoded` body (and for the client
/// credentials of RFC 6749 §2.3.1): unreserved characters as they are, everything else `%XX`.
fn form_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
