//! Autodiscover documents, generated from configuration: Thunderbird's autoconfig
//! (`config-v1.1.xml`), Outlook's POX autodiscover (the 2006 schemas), the JSON form that points
//! at it, and an Apple configuration profile (`.mobileconfig`).

use crate::config::{AutodiscoverConfig, ClientEndpoint, SocketType};

/// Escapes text for XML element content and attribute values.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all are dropped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// A syntactically plain address we are willing to put in a document: `local@domain`, no
/// whitespace or markup characters. Anything else gets no configuration.
pub fn plain_address(address: &str) -> Option<(&str, &str)> {
    let (local, domain) = address.rsplit_once('@')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 254
            && !s
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "<>&\"'\\/".contains(c))
    };
    (ok(local) && ok(domain)).then_some((local, domain))
}

impl AutodiscoverConfig {
    /// Whether `domain` is one of ours.
    pub fn serves(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// What Thunderbird's autoconfig says of OAuth 2.0 where `[oauth]` is configured (its
/// `<oAuth2>` element, and `OAuth2` as the servers' first authentication).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthAnnouncement {
    /// The provider's issuer.
    pub issuer: String,
    /// The scopes a client asks for (space-separated).
    pub scope: String,
    /// The provider's authorization endpoint.
    pub auth_url: String,
    /// The provider's token endpoint.
    pub token_url: String,
}

fn thunderbird_server(kind: &str, element: &str, endpoint: &ClientEndpoint, oauth: bool) -> String {
    let socket = match endpoint.socket {
        SocketType::Ssl => "SSL",
        SocketType::Starttls => "STARTTLS",
        SocketType::Plain => "plain",
    };
    // Several methods may be listed, the preferred first.
    let oauth = if oauth {
        "      <authentication>OAuth2</authentication>\n"
    } else {
        ""
    };
    format!(
        "    <{element} type=\"{kind}\">\n      <hostname>{}</hostname>\n      <port>{}</port>\n      <socketType>{socket}</socketType>\n{oauth}      <authentication>password-cleartext</authentication>\n      <username>%EMAILADDRESS%</username>\n    </{element}>\n",
        xml_escape(&endpoint.host),
        endpoint.port
    )
}

/// Thunderbird's autoconfig document for `domain`
/// (<https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat>).
pub fn thunderbird(
    config: &AutodiscoverConfig,
    domain: &str,
    oauth: Option<&OAuthAnnouncement>,
) -> String {
    let announce = oauth.is_some();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n  <emailProvider id=\"{domain}\">\n    <domain>{domain}</domain>\n    <displayName>{name}</displayName>\n    <displayShortName>{name}</displayShortName>\n",
        domain = xml_escape(&domain.to_ascii_lowercase()),
        name = xml_escape(&config.display_name),
    );
    if let Some(imap) = &config.imap {
        out.push_str(&thunderbird_server(
            "imap",
            "incomingServer",
            imap,
            announce,
        ));
    }
    if let Some(pop3) = &config.pop3 {
        out.push_str(&thunderbird_server(
            "pop3",
            "incomingServer",
            pop3,
            announce,
        ));
    }
    if let Some(smtp) = &config.smtp {
        out.push_str(&thunderbird_server(
            "smtp",
            "outgoingServer",
            smtp,
            announce,
        ));
    }
    out.push_str("  </emailProvider>\n");
    if let Some(oauth) = oauth {
        out.push_str(&format!(
            "  <oAuth2>\n    <issuer>{}</issuer>\n    <scope>{}</scope>\n    <authURL>{}</authURL>\n    <tokenURL>{}</tokenURL>\n  </oAuth2>\n",
            xml_escape(&oauth.issuer),
            xml_escape(&oauth.scope),
            xml_escape(&oauth.auth_url),
            xml_escape(&oauth.token_url),
        ));
    }
    out.push_str("</clientConfig>\n");
    out
}

/// The namespace of Outlook's POX autodiscover response schema.
pub const OUTLOOK_RESPONSE_SCHEMA: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a";

/// The e-mail address asked about in an Outlook POX autodiscover request body
/// (`<Request><EMailAddress>…</EMailAddress>…`). Deliberately minimal: the element is found by
/// name, its text unescaped for the five predefined entities, and validated as a plain address.
pub fn pox_request_address(body: &str) -> Option<String> {
    let start = body.find("<EMailAddress>")? + "<EMailAddress>".len();
    let end = start + body.get(start..)?.find("</EMailAddress>")?;
    let text = body.get(start..end)?.trim();
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    if plain_address(&text).is_some() {
        Some(text)
    } else {
        None
    }
}

fn pox_protocol(kind: &str, endpoint: &ClientEndpoint, login: &str) -> String {
    let (ssl, encryption) = match endpoint.socket {
        SocketType::Ssl => ("on", "<Encryption>SSL</Encryption>\n        "),
        SocketType::Starttls => ("on", "<Encryption>TLS</Encryption>\n        "),
        SocketType::Plain => ("off", ""),
    };
    format!(
        "      <Protocol>\n        <Type>{kind}</Type>\n        <Server>{}</Server>\n        <Port>{}</Port>\n        <DomainRequired>off</DomainRequired>\n        <LoginName>{}</LoginName>\n        <SPA>off</SPA>\n        <SSL>{ssl}</SSL>\n        {encryption}<AuthRequired>on</AuthRequired>\n      </Protocol>\n",
        xml_escape(&endpoint.host),
        endpoint.port,
        xml_escape(login)
    )
}

/// Outlook's POX autodiscover response for `address` (the "email" account type with IMAP, POP3
/// and SMTP protocol entries, as Outlook and many other clients read it).
pub fn outlook(config: &AutodiscoverConfig, address: &str, display_name: Option<&str>) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n  <Response xmlns=\"{OUTLOOK_RESPONSE_SCHEMA}\">\n    <User>\n      <DisplayName>{}</DisplayName>\n      <EMailAddress>{}</EMailAddress>\n    </User>\n    <Account>\n      <AccountType>email</AccountType>\n      <Action>settings</Action>\n",
        xml_escape(display_name.unwrap_or(address)),
        xml_escape(address)
    );
    if let Some(imap) = &config.imap {
        out.push_str(&pox_protocol("IMAP", imap, address));
    }
    if let Some(pop3) = &config.pop3 {
        out.push_str(&pox_protocol("POP3", pop3, address));
    }
    if let Some(smtp) = &config.smtp {
        out.push_str(&pox_protocol("SMTP", smtp, address));
    }
    out.push_str("    </Account>\n  </Response>\n</Autodiscover>\n");
    out
}

/// The POX error response (e.g. for an address outside our domains).
pub fn outlook_error(code: u32, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n  <Response>\n    <Error>\n      <ErrorCode>{code}</ErrorCode>\n      <Message>{}</Message>\n    </Error>\n  </Response>\n</Autodiscover>\n",
        xml_escape(message)
    )
}

/// The JSON autodiscover answer (`/autodiscover/autodiscover.json?Email=…&Protocol=…`): where
/// the POX service is. Other protocols (EWS, ActiveSync) are not offered.
pub fn json(protocol: &str, base_url: &str) -> Result<String, String> {
    if protocol.eq_ignore_ascii_case("AutodiscoverV1") {
        let url = format!(
            "{}/autodiscover/autodiscover.xml",
            base_url.trim_end_matches('/')
        );
        Ok(serde_json::json!({ "Protocol": "AutodiscoverV1", "Url": url }).to_string())
    } else {
        Err(serde_json::json!({
            "ErrorCode": "ProtocolNotSupported",
            "ErrorMessage": format!("The given protocol value '{}' is invalid. Supported values are 'AutodiscoverV1'", protocol.chars().take(40).collect::<String>()),
        })
        .to_string())
    }
}

fn plist_string(out: &mut String, key: &str, value: &str) {
    out.push_str(&format!(
        "      <key>{key}</key>\n      <string>{}</string>\n",
        xml_escape(value)
    ));
}

fn plist_int(out: &mut String, key: &str, value: u16) {
    out.push_str(&format!(
        "      <key>{key}</key>\n      <integer>{value}</integer>\n"
    ));
}

fn plist_bool(out: &mut String, key: &str, value: bool) {
    out.push_str(&format!(
        "      <key>{key}</key>\n      <{}/>\n",
        if value { "true" } else { "false" }
    ));
}

/// An Apple configuration profile with one mail account for `address` (IMAP, or POP3 when no
/// IMAP is offered, plus SMTP). `uuids` are two fresh UUIDs (payload and profile).
pub fn mobileconfig(
    config: &AutodiscoverConfig,
    address: &str,
    display_name: &str,
    uuids: [String; 2],
) -> Option<String> {
    let (kind, incoming) = match (&config.imap, &config.pop3) {
        (Some(imap), _) => ("EmailTypeIMAP", imap),
        (None, Some(pop3)) => ("EmailTypePOP", pop3),
        (None, None) => return None,
    };
    let smtp = config.smtp.as_ref()?;
    let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    let identifier = format!("mailfront.{}", domain.to_ascii_lowercase());
    let [payload_uuid, profile_uuid] = uuids;
    let mut account = String::new();
    plist_string(
        &mut account,
        "EmailAccountDescription",
        &config.display_name,
    );
    plist_string(&mut account, "EmailAccountName", display_name);
    plist_string(&mut account, "EmailAccountType", kind);
    plist_string(&mut account, "EmailAddress", address);
    plist_string(
        &mut account,
        "IncomingMailServerAuthentication",
        "EmailAuthPassword",
    );
    plist_string(&mut account, "IncomingMailServerHostName", &incoming.host);
    plist_int(&mut account, "IncomingMailServerPortNumber", incoming.port);
    plist_bool(
        &mut account,
        "IncomingMailServerUseSSL",
        incoming.socket != SocketType::Plain,
    );
    plist_string(&mut account, "IncomingMailServerUsername", address);
    plist_string(
        &mut account,
        "OutgoingMailServerAuthentication",
        "EmailAuthPassword",
    );
    plist_string(&mut account, "OutgoingMailServerHostName", &smtp.host);
    plist_int(&mut account, "OutgoingMailServerPortNumber", smtp.port);
    plist_bool(
        &mut account,
        "OutgoingMailServerUseSSL",
        smtp.socket != SocketType::Plain,
    );
    plist_string(&mut account, "OutgoingMailServerUsername", address);
    plist_bool(&mut account, "OutgoingPasswordSameAsIncomingPassword", true);
    plist_string(&mut account, "PayloadDescription", "Mail account");
    plist_string(&mut account, "PayloadDisplayName", &config.display_name);
    plist_string(
        &mut account,
        "PayloadIdentifier",
        &format!("{identifier}.account"),
    );
    plist_string(&mut account, "PayloadType", "com.apple.mail.managed");
    plist_string(&mut account, "PayloadUUID", &payload_uuid);
    plist_int(&mut account, "PayloadVersion", 1);
    Some(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">\n  <dict>\n    <key>PayloadContent</key>\n    <array>\n      <dict>\n{account}      </dict>\n    </array>\n    <key>PayloadDisplayName</key>\n    <string>{name}</string>\n    <key>PayloadIdentifier</key>\n    <string>{identifier}</string>\n    <key>PayloadType</key>\n    <string>Configuration</string>\n    <key>PayloadUUID</key>\n    <string>{profile_uuid}</string>\n    <key>PayloadVersion</key>\n    <integer>1</integer>\n  </dict>\n</plist>\n",
        name = xml_escape(&config.display_name),
        identifier = xml_escape(&identifier),
    ))
}

/// A random UUID (version 4) as text.
pub fn uuid_v4() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        hex.get(0..8).unwrap_or_default(),
        hex.get(8..12).unwrap_or_default(),
        hex.get(12..16).unwrap_or_default(),
        hex.get(16..20).unwrap_or_default(),
        hex.get(20..32).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AutodiscoverConfig {
        AutodiscoverConfig {
            domains: vec!["example.com".into()],
            display_name: "Example & Co".into(),
            imap: Some(ClientEndpoint {
                host: "mail.example.com".into(),
                port: 993,
                socket: SocketType::Ssl,
            }),
            pop3: Some(ClientEndpoint {
                host: "mail.example.com".into(),
                port: 995,
                socket: SocketType::Ssl,
            }),
            smtp: Some(ClientEndpoint {
                host: "mail.example.com".into(),
                port: 587,
                socket: SocketType::Starttls,
            }),
        }
    }

    #[test]
    fn documents_escape_and_carry_every_endpoint() {
        let c = config();
        let tb = thunderbird(&c, "Example.COM", None);
        assert!(!tb.contains("OAuth2"));
        let oauth = OAuthAnnouncement {
            issuer: "https://id.example.com".into(),
            scope: "openid email imap".into(),
            auth_url: "https://id.example.com/auth?a=1&b=2".into(),
            token_url: "https://id.example.com/token".into(),
        };
        let with = thunderbird(&c, "example.com", Some(&oauth));
        assert_eq!(
            with.matches("<authentication>OAuth2</authentication>\n      <authentication>password-cleartext</authentication>").count(),
            3
        );
        assert!(with.contains("<authURL>https://id.example.com/auth?a=1&amp;b=2</authURL>"));
        assert!(with.contains("<scope>openid email imap</scope>"));
        assert!(tb.contains("<emailProvider id=\"example.com\">"));
        assert!(tb.contains("<displayName>Example &amp; Co</displayName>"));
        assert_eq!(tb.matches("<incomingServer").count(), 2);
        assert!(tb.contains("<socketType>STARTTLS</socketType>"));
        let pox = outlook(&c, "alice@example.com", Some("Alice <A>"));
        assert!(pox.contains("<DisplayName>Alice &lt;A&gt;</DisplayName>"));
        assert_eq!(pox.matches("<Protocol>").count(), 3);
        assert!(pox.contains("<Encryption>TLS</Encryption>"));
        let profile =
            mobileconfig(&c, "alice@example.com", "Alice", [uuid_v4(), uuid_v4()]).unwrap();
        assert!(profile.contains("<string>com.apple.mail.managed</string>"));
        assert!(profile.contains("<integer>993</integer>"));
    }

    #[test]
    fn pox_requests() {
        let body = "<?xml version=\"1.0\"?><Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006\"><Request><EMailAddress> alice@example.com </EMailAddress><AcceptableResponseSchema>x</AcceptableResponseSchema></Request></Autodiscover>";
        assert_eq!(
            pox_request_address(body).as_deref(),
            Some("alice@example.com")
        );
        for bad in [
            "",
            "<EMailAddress>",
            "<EMailAddress>a b@c</EMailAddress>",
            "<EMailAddress>&lt;x&gt;@c</EMailAddress>",
            "<EMailAddress>noat</EMailAddress>",
        ] {
            assert_eq!(pox_request_address(bad), None, "{bad}");
        }
    }

    #[test]
    fn json_answers() {
        assert_eq!(
            json("autodiscoverv1", "https://mail.example.com/").unwrap(),
            r#"{"Protocol":"AutodiscoverV1","Url":"https://mail.example.com/autodiscover/autodiscover.xml"}"#
        );
        assert!(
            json("ActiveSync", "https://x")
                .unwrap_err()
                .contains("ProtocolNotSupported")
        );
    }

    #[test]
    fn uuids_look_like_uuids() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4');
    }
}
