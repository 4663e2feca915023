//! The trace header mailfront adds to every message it accepts (RFC 5321 §4.4: "When an SMTP
//! server receives a message for delivery or further processing, it MUST insert trace ("time
//! stamp" or "Received") information at the beginning of the message content").

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a `Received:` line says about one accepted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace<'a> {
    /// The name the client gave in EHLO/HELO (as the client wrote it; cleaned here).
    pub helo: &'a str,
    /// The client's address.
    pub client: IpAddr,
    /// This node's name.
    pub by: &'a str,
    /// Whether the client said EHLO (ESMTP) rather than HELO.
    pub esmtp: bool,
    /// The TLS version and cipher suite, if the session is protected by TLS.
    pub tls: Option<(String, String)>,
    /// The session id (as in mailfront's logs).
    pub id: &'a str,
    /// The recipient, when the message has exactly one.
    pub recipient: Option<&'a str>,
    /// When the message was accepted.
    pub at: SystemTime,
}

/// The `Received:` header of `trace`, folded, ending in CRLF.
///
/// `from <helo> ([<address>])`: the EHLO name is the client's claim, so it is kept only if it
/// looks like a domain or an address literal (else `unknown`), and the address beside it is the
/// one mailfront saw. `with ESMTP`/`ESMTPS`/`SMTP` (RFC 3848), the TLS parameters in a comment,
/// `id` the session id, `for` the single recipient.
pub fn received(trace: &Trace<'_>) -> String {
    let helo = if is_clean_name(trace.helo) {
        trace.helo
    } else {
        "unknown"
    };
    let literal = match trace.client {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    };
    let with = match (trace.esmtp, trace.tls.is_some()) {
        (true, true) => "ESMTPS",
        (true, false) => "ESMTP",
        (false, _) => "SMTP",
    };
    let mut out = format!(
        "Received: from {helo} ({literal})\r\n\tby {} (mailfront)",
        trace.by
    );
    if let Some((version, cipher)) = &trace.tls {
        let _ = write!(out, "\r\n\t(using {version} with cipher {cipher})");
    }
    let _ = write!(out, "\r\n\twith {with} id {}", trace.id);
    if let Some(recipient) = trace.recipient.filter(|r| is_clean_address(r)) {
        let _ = write!(out, "\r\n\tfor <{recipient}>");
    }
    let _ = write!(out, ";\r\n\t{}\r\n", rfc5322_date(trace.at));
    out
}

/// A domain or an address literal as EHLO gives it: letters, digits, `-`, `.`, and for literals
/// `[`, `]`, `:`; nothing that could end a header line, open a comment or split a command's
/// parameters (the trace line and `XCLIENT HELO=` both pass a client's name on only if so).
pub(crate) fn is_clean_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'[' | b']' | b':'))
}

/// A mailbox the header may carry: printable ASCII without spaces, angle brackets or parentheses.
fn is_clean_address(address: &str) -> bool {
    !address.is_empty()
        && address.len() <= 320
        && address
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'(' | b')' | b';'))
}

/// `Thu, 3 Dec 2026 20:00:00 +0000` (RFC 5322 §3.3), in UTC.
pub fn rfc5322_date(at: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (year, month, day) = civil_from_days(days);
    let of_day = secs % 86_400;
    let weekday = DAYS.get((days % 7) as usize).copied().unwrap_or("Thu");
    let month = MONTHS.get(month as usize - 1).copied().unwrap_or("Jan");
    format!(
        "{weekday}, {day} {month} {year} {:02}:{:02}:{:02} +0000",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn dates_are_rfc5322_in_utc() {
        let table = [
            (0, "Thu, 1 Jan 1970 00:00:00 +0000"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 +0000"),
            (1_796_328_000, "Thu, 3 Dec 2026 20:00:00 +0000"),
            (4_107_542_399, "Sun, 28 Feb 2100 23:59:59 +0000"),
            (4_107_542_400, "Mon, 1 Mar 2100 00:00:00 +0000"),
        ];
        for (secs, text) in table {
            assert_eq!(rfc5322_date(at(secs)), text, "{secs}");
        }
    }

    #[test]
    fn a_trace_line_names_the_client_the_node_tls_the_session_and_the_recipient() {
        let trace = Trace {
            helo: "client.example.org",
            client: "192.0.2.7".parse().unwrap(),
            by: "cas1",
            esmtp: true,
            tls: Some(("TLSv1.3".into(), "TLS13_AES_256_GCM_SHA384".into())),
            id: "6dc43ef124609acb",
            recipient: Some("bob@example.com"),
            at: at(1_796_328_000),
        };
        assert_eq!(
            received(&trace),
            "Received: from client.example.org ([192.0.2.7])\r\n\tby cas1 (mailfront)\r\n\t\
             (using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)\r\n\twith ESMTPS id \
             6dc43ef124609acb\r\n\tfor <bob@example.com>;\r\n\tThu, 3 Dec 2026 20:00:00 +0000\r\n"
        );
        let plain = Trace {
            helo: "evil\r\nBcc: x (",
            client: "2001:db8::1".parse().unwrap(),
            esmtp: false,
            tls: None,
            recipient: None,
            ..trace
        };
        assert_eq!(
            received(&plain),
            "Received: from unknown ([IPv6:2001:db8::1])\r\n\tby cas1 (mailfront)\r\n\twith SMTP \
             id 6dc43ef124609acb;\r\n\tThu, 3 Dec 2026 20:00:00 +0000\r\n"
        );
    }
}
