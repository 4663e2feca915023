//! `[sip]`: the SIP listeners' limits and timers, and the voice-mail URIs of `[[server]]`.

use std::time::Duration;

use serde::Deserialize;

/// `[sip]`: SIP listeners (see `mailfront_proxy::sip`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Largest SIP message in bytes (default 65536: any UDP datagram). A larger UDP datagram is
    /// dropped and counted; a larger TCP message is answered `513` and the connection closed.
    pub max_message_size: usize,
    /// Most header fields in one message (default 128).
    pub max_headers: usize,
    /// Longest line of a message in bytes (default 8192).
    pub max_line_length: usize,
    /// Longest silence on a SIP TCP or TLS connection before it is closed (default 120 s).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// `Retry-After` seconds of a `503` (directory or location unavailable; default 30).
    pub retry_after: u32,
    /// Most UDP requests waiting for the directory at once; more are answered `503` (default
    /// 1024).
    pub max_in_flight: usize,
}

impl Default for SipConfig {
    fn default() -> Self {
        let d = mailfront_proxy::sip::SipSettings::default();
        Self {
            max_message_size: d.limits.max_message_size,
            max_headers: d.limits.max_headers,
            max_line_length: d.limits.max_line_length,
            idle_timeout: d.idle_timeout,
            retry_after: d.retry_after,
            max_in_flight: d.max_in_flight,
        }
    }
}

impl SipConfig {
    /// Checks the limits and timers against their bounds.
    pub(super) fn validate(&self) -> Result<(), String> {
        if !(512..=16 * 1024 * 1024).contains(&self.max_message_size) {
            return Err("sip.max_message_size: must be between 512 and 16777216".into());
        }
        if self.max_headers < 8 {
            return Err("sip.max_headers: must be at least 8".into());
        }
        if self.max_line_length < 256 {
            return Err("sip.max_line_length: must be at least 256".into());
        }
        if self.idle_timeout.is_zero() {
            return Err("sip.idle_timeout: must be greater than zero".into());
        }
        if self.retry_after == 0 {
            return Err("sip.retry_after: must be at least 1 (seconds)".into());
        }
        if self.max_in_flight == 0 {
            return Err("sip.max_in_flight: must be at least 1".into());
        }
        Ok(())
    }

    /// The settings of the SIP driver.
    pub fn settings(&self) -> mailfront_proxy::sip::SipSettings {
        mailfront_proxy::sip::SipSettings {
            limits: mailfront_protocol::sip::SipLimits {
                max_message_size: self.max_message_size,
                max_headers: self.max_headers,
                max_line_length: self.max_line_length,
            },
            idle_timeout: self.idle_timeout,
            retry_after: self.retry_after,
            max_in_flight: self.max_in_flight,
        }
    }
}

/// A server's voice-mail URI (`sip = "sip:{extension}@mbx1.example.com:5070"`): a `sip:` or
/// `sips:` URI, where `{user}` and `{extension}` may stand in the user part.
pub(super) fn validate_sip_uri(uri: &str) -> Result<(), String> {
    let lower = uri.to_ascii_lowercase();
    if !(lower.starts_with("sip:") || lower.starts_with("sips:")) {
        return Err(format!("`{uri}` is not a sip: or sips: URI"));
    }
    if uri
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
    {
        return Err(format!(
            "`{uri}`: no spaces, control characters, <, > or \""
        ));
    }
    let probe = uri.replace("{user}", "4001").replace("{extension}", "4001");
    if probe.contains(['{', '}']) {
        return Err(format!(
            "`{uri}`: unknown placeholder (expected {{user}} or {{extension}})"
        ));
    }
    mailfront_protocol::sip::uri::parse_request_uri(&probe)
        .map(|_| ())
        .map_err(|()| format!("`{uri}` is not a valid SIP URI"))
}
