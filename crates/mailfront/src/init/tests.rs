//! The starter configuration is valid as written, and `init` never overwrites.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::cli::check_config;

#[test]
fn the_starter_passes_check_and_a_second_run_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let report = init(dir.path(), "cas7").unwrap();
    assert_eq!(report.created.len(), 6, "{report:?}");
    assert!(report.kept.is_empty());
    let (summary, warnings) = check_config(&dir.path().join("mailfront.toml")).unwrap();
    assert_eq!(
        summary,
        "1 servers, 0 users, 1 databases located, 5 listeners"
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let config = std::fs::read_to_string(dir.path().join("mailfront.toml")).unwrap();
    assert!(config.contains("name = \"cas7\""));

    for secret in ["tls/key.pem", "http/keys.toml"] {
        let mode = std::fs::metadata(dir.path().join(secret))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}");
    }

    // The operator's edits survive a second run (the package runs it on every upgrade).
    std::fs::write(dir.path().join("users.toml"), "# mine\n").unwrap();
    let key = std::fs::read_to_string(dir.path().join("tls/key.pem")).unwrap();
    let again = init(dir.path(), "other").unwrap();
    assert!(again.created.is_empty(), "{again:?}");
    assert_eq!(again.kept.len(), 6);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("users.toml")).unwrap(),
        "# mine\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tls/key.pem")).unwrap(),
        key
    );
}

#[test]
fn half_a_certificate_is_an_error_not_a_mismatched_pair() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tls")).unwrap();
    std::fs::write(dir.path().join("tls/cert.pem"), "someone's certificate").unwrap();
    let error = init(dir.path(), "cas1").unwrap_err();
    assert!(
        matches!(error, InitError::HalfACertificate { .. }),
        "{error}"
    );
    assert!(!dir.path().join("tls/key.pem").exists());
}

#[test]
fn the_commented_https_block_is_valid_once_uncommented() {
    // The starter shows how to turn HTTPS on; that advice must not rot.
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), "cas1").unwrap();
    let path = dir.path().join("mailfront.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let (head, tail) = text.split_at(text.find("# [http]").unwrap());
    let uncommented: String = tail
        .lines()
        .map(|line| line.strip_prefix("# ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n");
    let head = head.replace(
        "delivery = { port = 24, protocol = \"lmtp\" }",
        "delivery = { port = 24, protocol = \"lmtp\" }\nhttp = \"http://127.0.0.1:8080/\"",
    );
    std::fs::write(&path, format!("{head}{uncommented}\n")).unwrap();
    let (summary, _) = check_config(&path).unwrap();
    assert!(summary.ends_with("6 listeners"), "{summary}");
}
