//! The offline address book: a tenant's users as vCard 4.0 (RFC 6350).

use mailfront_model::Principal;

/// Escapes a vCard text value (RFC 6350 §3.4).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ',' => out.push_str("\\,"),
            ';' => out.push_str("\\;"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Appends one content line, folded at 75 octets (RFC 6350 §3.2) on character boundaries.
fn line(out: &mut String, text: &str) {
    let mut width = 0;
    for c in text.chars() {
        let len = c.len_utf8();
        if width + len > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += len;
    }
    out.push_str("\r\n");
}

/// The vCards of `users`, sorted by address.
pub fn vcards(users: &[Principal]) -> String {
    let mut sorted: Vec<&Principal> = users.iter().collect();
    sorted.sort_by(|a, b| a.address.cmp(&b.address));
    let mut out = String::new();
    for user in sorted {
        line(&mut out, "BEGIN:VCARD");
        line(&mut out, "VERSION:4.0");
        line(&mut out, "KIND:individual");
        let name = user.display_name.as_deref().unwrap_or(&user.address);
        line(&mut out, &format!("FN:{}", escape(name)));
        line(
            &mut out,
            &format!("EMAIL;TYPE=work;PREF=1:{}", escape(&user.address)),
        );
        for alias in &user.aliases {
            line(&mut out, &format!("EMAIL;TYPE=work:{}", escape(alias)));
        }
        if let Some(extension) = &user.sip_extension {
            line(
                &mut out,
                &format!("TEL;VALUE=uri;TYPE=work:tel:{}", escape(extension)),
            );
        }
        line(
            &mut out,
            &format!("UID:urn:uuid:{}", escape(&user.mailbox_guid)),
        );
        line(&mut out, "END:VCARD");
    }
    out
}

#[cfg(test)]
mod tests {
    use mailfront_model::{ProtocolSet, Version};

    use super::*;

    fn user(address: &str, name: Option<&str>) -> Principal {
        Principal {
            address: address.into(),
            aliases: vec![format!("x.{address}")],
            display_name: name.map(str::to_owned),
            mailbox_guid: "g-1".into(),
            tenant: "example.com".into(),
            database: "DB01".into(),
            version: Version::new(15, 0, 0),
            protocols: ProtocolSet::ALL,
            sip_extension: Some("4001".into()),
        }
    }

    #[test]
    fn cards_are_escaped_folded_and_sorted() {
        let long =
            "A very long display name, with commas; and semicolons \\ and more and more text";
        let text = vcards(&[
            user("bob@example.com", None),
            user("alice@example.com", Some(long)),
        ]);
        assert!(text.find("alice@example.com").unwrap() < text.find("bob@example.com").unwrap());
        assert!(text.contains("\\, with commas\\; and semicolons \\\\"));
        assert!(text.lines().all(|l| l.len() <= 75), "{text}");
        assert_eq!(text.matches("BEGIN:VCARD\r\nVERSION:4.0\r\n").count(), 2);
        assert!(text.contains("TEL;VALUE=uri;TYPE=work:tel:4001\r\n"));
        // Unfolding gives back the whole FN line.
        let unfolded = text.replace("\r\n ", "");
        assert!(unfolded.contains(&format!("FN:{}", escape(long))));
    }
}
