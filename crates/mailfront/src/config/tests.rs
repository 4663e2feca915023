//! Configuration parsing and validation: every error names its key.

use std::time::Duration;

use mailfront_model::Protocol;

use super::*;

const MINIMAL: &str = r#"
[node]
name = "cas1"
site = "west"
version = "15.1"

[[server]]
name = "mbx1"
site = "west"
version = "15.1"
host = "127.0.0.1"
imap = { port = 10143 }
[server.login]
method = "master"
master_user = "casmaster"
master_password_file = "secrets/master.pw"

[directory]
backend = "file"
path = "users.toml"

[location]
backend = "file"
path = "locations.toml"

[tls]
certificate = "tls/cert.pem"
key = "tls/key.pem"

[[listener]]
protocol = "imap"
address = "127.0.0.1:1143"
"#;

/// `text` parsed (paths relative to `/etc/mailfront`) and validated.
fn validated(text: &str) -> Result<Config, String> {
    Config::parse_str(text, Path::new("/etc/mailfront"))
        .and_then(|config| config.validate().map(|()| config))
}

#[test]
fn minimal_config_has_sane_defaults() {
    let config = Config::parse(MINIMAL).unwrap();
    config.validate().unwrap();
    let listener = &config.listener[0];
    assert_eq!(listener.tls, ListenerTls::Starttls);
    assert!(!listener.allow_plaintext_auth);
    assert_eq!(config.timeouts.auth_failure_delay, Duration::from_secs(2));
    assert_eq!(config.timeouts.pre_auth_idle, Duration::from_secs(60));
    assert_eq!(config.limits.max_line_length, 64 * 1024);
    assert_eq!(config.server[0].login.separator, "*");
    assert_eq!(config.server[0].login.mechanism, MechanismConfig::Plain);
    assert!(config.warnings().is_empty());
}

#[test]
fn relative_paths_follow_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailfront.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    let config = Config::load(&path).unwrap();
    let DirectoryConfig::File { path: users } = &config.directory else {
        panic!("the minimal configuration uses the file directory");
    };
    assert_eq!(users, &dir.path().join("users.toml"));
    assert_eq!(
        config.server[0].login.master_password_file.as_deref(),
        Some(dir.path().join("secrets/master.pw").as_path())
    );
    assert_eq!(config.tls.unwrap().key, dir.path().join("tls/key.pem"));
}

/// Each row: a change to the minimal configuration, and the key its error must start with.
#[test]
fn errors_name_the_key() {
    let rows: &[(&str, &str, &str)] = &[
        (
            "version = \"15.1\"\n\n[[server]]",
            "version = \"fifteen\"\n\n[[server]]",
            "node.version",
        ),
        ("port = 10143", "port = 99999", "server[0].imap.port"),
        ("port = 10143", "port = 0", "server[0].imap.port"),
        (
            "imap = { port = 10143 }",
            "imap = { port = 10143, tls = \"sometimes\" }",
            "server[0].imap.tls",
        ),
        (
            "imap = { port = 10143 }",
            "imap = { port = 10143, tls = \"implicit\" }",
            "server[0].imap.tls",
        ),
        ("imap = { port = 10143 }", "", "server[0]"),
        (
            "method = \"master\"",
            "method = \"magic\"",
            "server[0].login.method",
        ),
        (
            "master_user = \"casmaster\"\n",
            "",
            "server[0].login.master_user",
        ),
        (
            "master_password_file = \"secrets/master.pw\"\n",
            "",
            "server[0].login.master_password_file",
        ),
        (
            "master_password_file = \"secrets/master.pw\"\n",
            "master_password_file = \"a\"\nmaster_password = \"b\"\n",
            "server[0].login.master_password",
        ),
        (
            "backend = \"file\"\npath = \"users.toml\"",
            "backend = \"ldap\"\npath = \"users.toml\"",
            "directory",
        ),
        (
            "address = \"127.0.0.1:1143\"",
            "address = \"localhost\"",
            "listener[0].address",
        ),
        (
            "protocol = \"imap\"",
            "protocol = \"gopher\"",
            "listener[0].protocol",
        ),
        (
            "protocol = \"imap\"",
            "protocol = \"pop3\"",
            "listener[0].protocol",
        ),
        (
            "[tls]\ncertificate = \"tls/cert.pem\"\nkey = \"tls/key.pem\"\n",
            "",
            "listener[0].tls",
        ),
        (
            "name = \"cas1\"",
            "name = \"cas1\"\ncolour = \"blue\"",
            "node",
        ),
        (
            "name = \"mbx1\"\nsite = \"west\"",
            "name = \"mbx1\"\nsite = \"\"",
            "server[0].site",
        ),
    ];
    for (from, to, key) in rows {
        assert!(
            MINIMAL.contains(from),
            "row for {key}: `{from}` is not in the minimal config"
        );
        let text = MINIMAL.replacen(from, to, 1);
        let error = match Config::parse(&text) {
            Err(e) => e,
            Ok(config) => config
                .validate()
                .expect_err(&format!("row for {key} should fail")),
        };
        assert!(
            error.starts_with(key),
            "expected an error starting with `{key}`, got `{error}`"
        );
    }
}

#[test]
fn cross_references_are_checked() {
    let extra = |more: &str| format!("{MINIMAL}\n{more}");
    let cases = [
        ("[[site]]\nname = \"east\"\n", "node.site"),
        (
            "[[database]]\nname = \"DB01\"\ncopies = [\"mbx9\"]\n",
            "database[0].copies[0]",
        ),
        (
            "[[server]]\nname = \"mbx1\"\nsite = \"west\"\nversion = \"15\"\nhost = \"h\"\nimap = { port = 1 }\n[server.login]\nmethod = \"passthrough\"\n",
            "server[1].name",
        ),
        (
            "[[listener]]\nprotocol = \"imap\"\naddress = \"127.0.0.1:1143\"\n",
            "listener[1].address",
        ),
        ("[limits]\nmax_line_length = 10\n", "limits.max_line_length"),
        ("[timeouts]\nlogin = \"0s\"\n", "timeouts.login"),
        ("[timeouts]\nlogin = \"soon\"\n", "timeouts.login"),
    ];
    for (more, key) in cases {
        let error = match Config::parse(&extra(more)) {
            Err(e) => e,
            Ok(config) => config.validate().expect_err(key),
        };
        assert!(error.starts_with(key), "expected `{key}`, got `{error}`");
    }
}

#[test]
fn warnings_for_risky_settings() {
    let text = MINIMAL
        .replace(
            "address = \"127.0.0.1:1143\"",
            "address = \"0.0.0.0:143\"\nallow_plaintext_auth = true",
        )
        .replace(
            "master_password_file = \"secrets/master.pw\"",
            "master_password = \"pw\"",
        );
    let config = Config::parse(&text).unwrap();
    config.validate().unwrap();
    let warnings = config.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("listener[0].allow_plaintext_auth")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("server[0].login.master_password")),
        "{warnings:?}"
    );
    // The inline password never appears in a warning.
    assert!(warnings.iter().all(|w| !w.contains("\"pw\"")));
}

#[test]
fn parse_errors_give_a_line() {
    let error = Config::parse("[node]\nname = \n").unwrap_err();
    assert!(error.contains("line"), "{error}");
}

#[test]
fn sip_listeners_and_voice_mail_uris() {
    let with_sip = |listener: &str, server_sip: &str, section: &str| {
        MINIMAL.replacen(
            "imap = { port = 10143 }",
            &format!("imap = {{ port = 10143 }}\nsip = \"{server_sip}\""),
            1,
        ) + &format!(
            "\n[[listener]]\nprotocol = \"sip\"\naddress = \"127.0.0.1:5060\"\n{listener}\n{section}"
        )
    };
    // Without a tls key a SIP listener is plain (UDP and TCP), not STARTTLS; [sip] defaults.
    let config = Config::parse(&with_sip("", "sip:{extension}@10.0.0.11:5070", "")).unwrap();
    config.validate().unwrap();
    assert_eq!(config.listener[0].tls, ListenerTls::Starttls);
    assert_eq!(config.listener[1].protocol, ListenerProtocol::Sip);
    assert_eq!(config.listener[1].tls, ListenerTls::None);
    assert_eq!(config.sip.max_message_size, 65536);
    assert_eq!(config.sip.idle_timeout, Duration::from_secs(120));
    assert_eq!(config.sip.retry_after, 30);
    let implicit = Config::parse(&with_sip("tls = \"implicit\"", "sips:um@mbx1", "")).unwrap();
    implicit.validate().unwrap();
    assert_eq!(implicit.listener[1].tls, ListenerTls::Implicit);
    let tuned = Config::parse(&with_sip(
        "",
        "sip:um@mbx1",
        "[sip]\nmax_message_size = 4096\nidle_timeout = \"30s\"\nretry_after = 5\n",
    ))
    .unwrap();
    tuned.validate().unwrap();
    assert_eq!(tuned.sip.settings().limits.max_message_size, 4096);
    assert_eq!(tuned.sip.settings().retry_after, 5);

    let cases = [
        (
            with_sip("tls = \"starttls\"", "sip:um@mbx1", ""),
            "listener[1].tls",
        ),
        (with_sip("", "http://mbx1/um", ""), "server[0].sip"),
        (with_sip("", "sip:{mailbox}@mbx1", ""), "server[0].sip"),
        (with_sip("", "sip:<um@mbx1>", ""), "server[0].sip"),
        (with_sip("", "sip:um@mb_x1", ""), "server[0].sip"),
        (
            with_sip("", "sip:um@mbx1", "[sip]\nmax_message_size = 10\n"),
            "sip.max_message_size",
        ),
        (
            with_sip("", "sip:um@mbx1", "[sip]\nmax_headers = 1\n"),
            "sip.max_headers",
        ),
        (
            with_sip("", "sip:um@mbx1", "[sip]\nmax_line_length = 100\n"),
            "sip.max_line_length",
        ),
        (
            with_sip("", "sip:um@mbx1", "[sip]\nidle_timeout = \"0s\"\n"),
            "sip.idle_timeout",
        ),
        (
            with_sip("", "sip:um@mbx1", "[sip]\nretry_after = 0\n"),
            "sip.retry_after",
        ),
        (
            with_sip("", "sip:um@mbx1", "[sip]\nmax_in_flight = 0\n"),
            "sip.max_in_flight",
        ),
        (with_sip("", "sip:um@mbx1", "[sip]\ncolour = 1\n"), "sip"),
        (
            MINIMAL.to_owned()
                + "\n[[listener]]\nprotocol = \"sip\"\naddress = \"127.0.0.1:5060\"\n",
            "listener[1].protocol",
        ),
    ];
    for (text, key) in cases {
        let error = match Config::parse(&text) {
            Err(e) => e,
            Ok(config) => config.validate().expect_err(key),
        };
        assert!(error.starts_with(key), "expected `{key}`, got `{error}`");
    }
}

#[test]
fn address_ranges_are_parsed_at_load_and_errors_name_the_entry() {
    let extra = |more: &str| format!("{MINIMAL}\n{more}");
    let config = Config::parse(&extra(
        "[throttle]\ntrusted_networks = [\"10.0.0.0/8\", \"::1\"]\n",
    ))
    .unwrap();
    config.validate().unwrap();
    let trusted = &config.throttle.trusted_networks;
    assert_eq!(trusted.len(), 2);
    assert!(trusted[0].contains("10.1.2.3".parse().unwrap()));
    assert_eq!(trusted[1].prefix, 128);

    let cases = [
        (
            "[throttle]\ntrusted_networks = [\"10.0.0.0/8\", \"host\"]\n",
            "throttle.trusted_networks[1]: `host` is not an address or address/prefix",
        ),
        (
            "[proxy_protocol]\ntrusted = [\"10.0.0.0/33\"]\n",
            "proxy_protocol.trusted[0]: `10.0.0.0/33`: bad prefix length",
        ),
        (
            "[outbound]\nallowed_sources = [\"mbx1\"]\n[outbound.relay]\nhost = \"relay\"\nport = 25\n",
            "outbound.allowed_sources[0]: `mbx1` is not an address or address/prefix",
        ),
    ];
    for (more, expected) in cases {
        let error = Config::parse(&extra(more)).unwrap_err();
        assert!(
            error.starts_with(expected),
            "expected `{expected}`, got `{error}`"
        );
    }
}

#[test]
fn failover_counts_the_mail_endpoints_unless_told_otherwise() {
    let with = |manager: &str| {
        let text = format!("{MINIMAL}\n[health]\n\n[active_manager]\n{manager}\n");
        Config::parse(&text).and_then(|config| config.validate().map(|()| config))
    };
    let config = with("").expect("defaults are valid");
    let manager = config.active_manager.expect("the table is there");
    assert_eq!(
        manager.failover_on,
        [
            Protocol::Imap,
            Protocol::Pop3,
            Protocol::Submission,
            Protocol::Smtp
        ]
    );
    let config = with("failover_on = [\"imap\", \"http\"]").expect("valid");
    assert_eq!(
        config.active_manager.map(|m| m.failover_on),
        Some(vec![Protocol::Imap, Protocol::Http])
    );
    for bad in ["failover_on = []", "failover_on = [\"sip\"]"] {
        let error = with(bad).expect_err(bad);
        assert!(
            error.starts_with("active_manager.failover_on"),
            "{bad}: {error}"
        );
    }
}

#[test]
fn certificates_by_name_are_checked_and_their_paths_follow_the_file() {
    let with = |entries: &str| {
        let text = MINIMAL.replacen(
            "key = \"tls/key.pem\"\n",
            &format!("key = \"tls/key.pem\"\n{entries}\n"),
            1,
        );
        validated(&text)
    };
    let good = "[[tls.sni]]\nnames = [\"autodiscover.example.com\", \"*.example.net\"]\n\
                certificate = \"tls/auto.pem\"\nkey = \"tls/auto.key\"\n";
    let config = with(good).expect("valid");
    let tls = config.tls.expect("[tls]");
    assert_eq!(
        tls.sni[0].certificate,
        Path::new("/etc/mailfront/tls/auto.pem")
    );
    assert_eq!(tls.files().len(), 4);
    let bad = [
        "names = []",
        "names = [\"Mail.Example.com\"]",
        "names = [\"localhost\"]",
        "names = [\"*\"]",
        "names = [\"a..example.com\"]",
        "names = [\"a.example.com\", \"a.example.com\"]",
    ];
    for names in bad {
        let entry = format!("[[tls.sni]]\n{names}\ncertificate = \"a.pem\"\nkey = \"a.key\"\n");
        let error = with(&entry).map(|_| ()).expect_err(names);
        assert!(error.starts_with("tls.sni[0].names"), "{names}: {error}");
    }
}

#[test]
fn the_tls_policy_is_typed_and_its_ticket_file_follows_the_config_file() {
    let with = |lines: &str| {
        let text = MINIMAL.replacen(
            "key = \"tls/key.pem\"\n",
            &format!("key = \"tls/key.pem\"\n{lines}\n"),
            1,
        );
        Config::parse_str(&text, Path::new("/etc/mailfront"))
    };
    let config = with("min_version = \"1.3\"\nticket_keys = \"tls/tickets.toml\"").expect("valid");
    let tls = config.tls.expect("[tls]");
    assert_eq!(tls.min_version, TlsVersion::Tls13);
    assert_eq!(
        tls.ticket_keys.as_deref(),
        Some(Path::new("/etc/mailfront/tls/tickets.toml"))
    );
    assert!(
        tls.files()
            .contains(&&PathBuf::from("/etc/mailfront/tls/tickets.toml"))
    );
    let error = with("min_version = \"1.1\"").map(|_| ()).unwrap_err();
    assert!(error.starts_with("tls.min_version"), "{error}");
}

#[test]
fn ocsp_responses_are_watched_files_that_follow_the_config_file() {
    let text = MINIMAL.replacen(
        "key = \"tls/key.pem\"\n",
        "key = \"tls/key.pem\"\nocsp = \"tls/mail.ocsp\"\n\n[[tls.sni]]\nnames = [\"auto.example.com\"]\n\
         certificate = \"a.pem\"\nkey = \"a.key\"\nocsp = \"a.ocsp\"\n",
        1,
    );
    let config = Config::parse_str(&text, Path::new("/etc/mailfront")).expect("valid");
    let tls = config.tls.expect("[tls]");
    assert_eq!(
        tls.ocsp.as_deref(),
        Some(Path::new("/etc/mailfront/tls/mail.ocsp"))
    );
    for file in ["/etc/mailfront/tls/mail.ocsp", "/etc/mailfront/a.ocsp"] {
        assert!(tls.files().contains(&&PathBuf::from(file)), "{file}");
    }
}

#[test]
fn backend_tls_client_certificates_and_names_are_checked() {
    let with = |lines: &str| {
        let text = format!("{MINIMAL}\n[backend_tls]\nca_file = \"ca.pem\"\n{lines}\n");
        validated(&text)
    };
    let config = with("verify_name = \"mbx.internal\"\ncertificate = \"c.pem\"\nkey = \"c.key\"")
        .expect("valid");
    let backend = config.backend_tls.expect("[backend_tls]");
    assert_eq!(
        backend.key.as_deref(),
        Some(Path::new("/etc/mailfront/c.key"))
    );
    with("verify_name = \"10.0.0.7\"").expect("an address is a name too");
    let rows = [
        ("certificate = \"c.pem\"", "backend_tls.key"),
        ("key = \"c.key\"", "backend_tls.certificate"),
        ("verify_name = \"*.internal\"", "backend_tls.verify_name"),
        ("verify_name = \"Mbx.Internal\"", "backend_tls.verify_name"),
    ];
    for (lines, key) in rows {
        let error = with(lines).map(|_| ()).expect_err(lines);
        assert!(error.starts_with(key), "{lines}: {error}");
    }
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token_or_client_certificates_over_tls() {
    let with = |admin: &str, tls: bool| {
        let base = if tls {
            MINIMAL.to_owned()
        } else {
            let start = MINIMAL.find("[tls]").expect("[tls] in MINIMAL");
            let end = MINIMAL[start..]
                .find("\n\n")
                .map_or(MINIMAL.len(), |e| start + e);
            // The listener (last in MINIMAL) without TLS either.
            format!("{}{}tls = \"none\"\n", &MINIMAL[..start], &MINIMAL[end..])
        };
        let text = format!("{base}\n[admin]\n{admin}\n");
        validated(&text)
    };
    let config = with(
        "address = \"0.0.0.0:9090\"\ntls = true\nclient_ca = \"admin-ca.pem\"",
        true,
    )
    .expect("client certificates stand in for a token");
    let admin = config.admin.expect("[admin]");
    assert_eq!(
        admin.client_ca.as_deref(),
        Some(Path::new("/etc/mailfront/admin-ca.pem"))
    );
    let rows = [
        ("address = \"0.0.0.0:9090\"", true, "admin.token_file"),
        ("client_ca = \"admin-ca.pem\"", true, "admin.client_ca"),
        ("tls = true", false, "admin.tls"),
    ];
    for (lines, tls, key) in rows {
        let error = with(lines, tls).map(|_| ()).expect_err(lines);
        assert!(error.starts_with(key), "{lines}: {error}");
    }
}

#[test]
fn placement_needs_the_active_manager_and_sane_counts() {
    let with = |extra: &str| {
        let text = format!("{MINIMAL}\n{extra}\n");
        validated(&text)
    };
    let managed = "[health]\n\n[active_manager]\n\n";
    let config = with(&format!("{managed}[placement]\nmode = \"groups\"")).expect("valid");
    let placement = config.placement.expect("[placement]");
    assert_eq!(
        (placement.mode, placement.groups),
        (PlacementMode::Groups, 256)
    );
    assert_eq!(
        config.server[0].weight, 1,
        "a server's weight defaults to 1"
    );
    assert_eq!(
        (placement.move_timeout, placement.disconnect_spread),
        (Duration::from_secs(10), Duration::from_secs(2)),
        "safe moves' defaults"
    );
    let manager = config.active_manager.expect("[active_manager]");
    assert_eq!(
        (manager.nodes_prefix.as_str(), manager.acks_prefix.as_str()),
        ("/mailfront/nodes/", "/mailfront/acks/")
    );
    let rows = [
        ("[placement]".to_owned(), "placement:"),
        (
            format!("{managed}[placement]\ngroups = 0"),
            "placement.groups",
        ),
        (
            format!("{managed}[placement]\nmax_parallel_moves = 0"),
            "placement.max_parallel_moves",
        ),
        (
            format!("{managed}[placement]\n\n[[database]]\nname = \"g7\"\ncopies = [\"mbx1\"]"),
            "database[0].name",
        ),
        (
            format!(
                "{managed}[placement]\n\n[[database]]\nname = \"pin:a@b.c\"\ncopies = [\"mbx1\"]"
            ),
            "database[0].name",
        ),
        (
            format!("{managed}[placement]\nmove_timeout = \"500ms\""),
            "placement.move_timeout",
        ),
        (
            format!("{managed}[placement]\nmove_timeout = \"3s\"\ndisconnect_spread = \"3s\""),
            "placement.disconnect_spread",
        ),
    ];
    for (extra, key) in rows {
        let error = with(&extra).map(|_| ()).expect_err(&extra);
        assert!(error.starts_with(key), "{extra}: {error}");
    }
}

#[test]
fn non_mailbox_recipients_are_local_parts_or_addresses_in_accepted_domains() {
    let with = |list: &str| {
        validated(&format!(
            "{MINIMAL}\n[transport]\naccepted_domains = [\"example.com\"]\nnon_mailbox_recipients = {list}\n"
        ))
    };
    let config = with(r#"["postmaster", "Lists@Example.com"]"#).unwrap();
    assert_eq!(config.transport.non_mailbox_recipients.len(), 2);
    for (list, error) in [
        (
            r#"["lists@other.org"]"#,
            "not in transport.accepted_domains",
        ),
        (r#"["@example.com"]"#, "has no local part"),
        (r#"["post master"]"#, "is not a local part or an address"),
        (r#"[""]"#, "is not a local part or an address"),
    ] {
        let got = with(list).map(|_| ()).expect_err(list);
        assert!(
            got.starts_with("transport.non_mailbox_recipients[0]: ") && got.contains(error),
            "{list}: {got}"
        );
    }
}

#[test]
fn the_shared_blocks_prefix_overlaps_no_other_etcd_prefix() {
    let etcd = MINIMAL.replace(
        "backend = \"file\"\npath = \"locations.toml\"",
        "backend = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/mailfront/db/\"",
    );
    assert_ne!(etcd, MINIMAL);
    let with = |prefix: &str| {
        validated(&format!(
            "{etcd}\n[throttle]\nblocks_prefix = \"{prefix}\"\n"
        ))
        .map(|_| ())
    };
    assert_eq!(with("/mailfront/blocks/"), Ok(()));
    for (prefix, error) in [
        ("/mailfront/", "overlaps location.prefix `/mailfront/db/`"),
        ("/mailfront/db/blocks/", "overlaps location.prefix"),
        ("mailfront/blocks/", "must start and end with `/`"),
        ("/blocks", "must start and end with `/`"),
    ] {
        let got = with(prefix).expect_err(prefix);
        assert!(
            got.starts_with("throttle.blocks_prefix: ") && got.contains(error),
            "{prefix}: {got}"
        );
    }
}

#[test]
fn oauth_keys_are_checked_and_name_the_key() {
    let with =
        |lines: &str| validated(&format!("{MINIMAL}\n[oauth]\n{lines}\n")).map(|c| c.warnings());
    let warnings = with(
        "issuer = \"https://id.example.com\"\naudiences = [\"https://mail.example.com\"]\nscopes = { imap = \"imap\" }",
    )
    .unwrap();
    assert!(
        !warnings
            .iter()
            .any(|w| w.starts_with("limits.max_line_length")),
        "{warnings:?}"
    );
    let ok = "audiences = [\"a\"]";
    for (lines, key) in [
        (
            format!("issuer = \"http://id.example.com\"\n{ok}"),
            "oauth.issuer",
        ),
        (format!("issuer = \"ftp://x\"\n{ok}"), "oauth.issuer"),
        (
            "issuer = \"https://id.example.com\"\naudiences = []".to_owned(),
            "oauth.audiences",
        ),
        (
            format!("issuer = \"https://i\"\n{ok}\nalgorithms = [\"RS256\", \"HS256\"]"),
            "oauth.algorithms[1]",
        ),
        (
            format!("issuer = \"https://i\"\n{ok}\nalgorithms = [\"none\"]"),
            "oauth.algorithms[0]",
        ),
        (
            format!("issuer = \"https://i\"\n{ok}\nclock_skew = \"10m\""),
            "oauth.clock_skew",
        ),
        (
            format!("issuer = \"https://i\"\n{ok}\nscopes = {{ imap = \"a b\" }}"),
            "oauth.scopes.imap",
        ),
    ] {
        let error = with(&lines).expect_err(&lines);
        assert!(error.starts_with(key), "{lines}: {error}");
    }
    // A loopback provider may speak plain HTTP (a lab, a sidecar).
    assert!(with(&format!("issuer = \"http://127.0.0.1:9400\"\n{ok}")).is_ok());
}

#[test]
fn a_site_that_refers_imap_logins_names_its_host() {
    let with = |site: &str| {
        let text = format!("{MINIMAL}\n[[site]]\nname = \"west\"\n{site}\n");
        validated(&text)
    };
    let config = with("mail_redirect = \"referral\"\nimap_host = \"imap.west.example.com:1993\"")
        .expect("valid");
    assert_eq!(config.site[0].mail_redirect, MailRedirect::Referral);
    for (site, key) in [
        ("mail_redirect = \"referral\"", "site[0].imap_host"),
        ("imap_host = \"imap west\"", "site[0].imap_host"),
        (
            "imap_host = \"imap.west.example.com:0\"",
            "site[0].imap_host",
        ),
        ("mail_redirect = \"sometimes\"", "site[0].mail_redirect"),
    ] {
        let error = with(site).map(|_| ()).expect_err(site);
        assert!(error.contains(key), "{site}: {error}");
    }
}
