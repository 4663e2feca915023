use std::collections::HashMap;

use mailfront_model::{Protocol, ProtocolSet, Secret};

use super::*;
use crate::ldap::LdapConfig;

/// `{SSHA}` of `phone-secret` (salt `saltsalt`).
const PHONE: &str = "{SSHA}QquDqETO8D6NXfB8D2uCr3J2eK5zYWx0c2FsdA==";

fn names() -> LdapAttributes {
    LdapAttributes {
        app_passwords: "mailfrontAppPassword".to_owned(),
        password_protocols: "mailfrontPasswordProtocol".to_owned(),
        ..LdapAttributes::default()
    }
}

fn entry(pairs: &[(&str, &[&str])]) -> Entry {
    let attrs: HashMap<String, Vec<String>> = pairs
        .iter()
        .map(|(name, values)| {
            let values = values.iter().map(|v| (*v).to_owned()).collect();
            (name.to_ascii_lowercase(), values)
        })
        .collect();
    Entry {
        dn: "uid=frank,ou=people,dc=example,dc=com".to_owned(),
        attrs,
        ..Entry::default()
    }
}

#[test]
fn usable_values_are_read_and_the_rest_left_out() {
    let good = format!("phone;imap;2026-12-04T17:00:00Z;{PHONE}");
    let duplicate = format!("Phone;pop3;2026-12-04T17:00:00Z;{PHONE}");
    let plain = "tablet;imap;2026-12-04T17:00:00Z;{PLAIN}x".to_owned();
    let unknown = format!("watch;gopher;2026-12-04T17:00:00Z;{PHONE}");
    let values = [
        good.as_str(),
        "garbage",
        duplicate.as_str(),
        plain.as_str(),
        unknown.as_str(),
    ];
    let apps = app_passwords(&entry(&[("mailfrontAppPassword", &values)]), &names());
    let read: Vec<(&str, ProtocolSet)> = apps.iter().map(|a| (a.name(), a.protocols())).collect();
    assert_eq!(read, [("phone", [Protocol::Imap].into_iter().collect())]);
    // Not configured: not read, whatever the entry holds.
    let unread = app_passwords(
        &entry(&[("mailfrontAppPassword", &[good.as_str()])]),
        &LdapAttributes::default(),
    );
    assert!(unread.is_empty());
}

#[test]
fn the_main_password_protocols_default_to_all() {
    let cases: [(&[&str], ProtocolSet); 4] = [
        (&[], ProtocolSet::ALL),
        (&["http"], [Protocol::Http].into_iter().collect()),
        (
            &["HTTP", " imap ", "gopher"],
            [Protocol::Imap, Protocol::Http].into_iter().collect(),
        ),
        (&["gopher"], ProtocolSet::NONE),
    ];
    for (values, expected) in cases {
        let e = if values.is_empty() {
            entry(&[])
        } else {
            entry(&[("mailfrontPasswordProtocol", values)])
        };
        assert_eq!(password_protocols(&e, &names()), expected, "{values:?}");
    }
    let e = entry(&[("mailfrontPasswordProtocol", &["http"])]);
    assert_eq!(
        password_protocols(&e, &LdapAttributes::default()),
        ProtocolSet::ALL
    );
}

#[tokio::test]
async fn app_passwords_are_checked_here() {
    let value = format!("phone;imap;2026-12-04T17:00:00Z;{PHONE}");
    let apps = app_passwords(
        &entry(&[("mailfrontAppPassword", &[value.as_str()])]),
        &names(),
    );
    let secret = |s: &str| Secret::new(s.as_bytes().to_vec());
    let matched = check_app_passwords(apps.clone(), &secret("phone-secret"))
        .await
        .unwrap();
    assert_eq!(
        matched,
        Some(Credential::App {
            name: "phone".to_owned(),
            protocols: [Protocol::Imap].into_iter().collect()
        })
    );
    assert_eq!(
        check_app_passwords(apps, &secret("wrong")).await.unwrap(),
        None
    );
}

#[test]
fn the_attributes_are_configured_requested_and_need_search_mode() {
    let config: LdapConfig = toml::from_str(
        "url = \"ldap://127.0.0.1\"\nbase = \"dc=x\"\n[attributes]\n\
         app_passwords = \"mailfrontAppPassword\"\npassword_protocols = \"mailfrontPasswordProtocol\"\n",
    )
    .unwrap();
    config.validate().unwrap();
    let requested = config.attributes.requested();
    assert!(requested.iter().any(|n| n == "mailfrontAppPassword"));
    assert!(requested.iter().any(|n| n == "mailfrontPasswordProtocol"));
    // Neither is read by default, in either profile.
    for profile in [
        crate::ldap::Profile::OpenLdap,
        crate::ldap::Profile::ActiveDirectory,
    ] {
        let defaults = profile.default_attributes();
        assert_eq!(defaults.app_passwords, "", "{profile:?}");
        assert_eq!(defaults.password_protocols, "", "{profile:?}");
    }
    let mut template = config.clone();
    template.user_dn = Some("uid={local},dc=x".to_owned());
    let error = template.validate().unwrap_err();
    assert!(
        error.starts_with("directory.attributes.app_passwords: needs search mode"),
        "{error}"
    );
    let mut bad = config;
    bad.attributes.app_passwords = "app password".to_owned();
    assert!(bad.validate().unwrap_err().starts_with(
        "directory.attributes.app_passwords: `app password` is not an attribute name"
    ));
}
