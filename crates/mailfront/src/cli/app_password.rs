//! `mailfront app-password`: a new random app password, and the lines that store its hash.
//!
//! Prints three lines on standard output: the password (give it to the user; it is not kept
//! anywhere), the entry for the user's `app_passwords` in the users file, and the value for the
//! LDAP attribute (`[directory.attributes] app_passwords`). Nothing is logged.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::SystemTime;

use mailfront_directory::credential::{self, MAX_NAME_LEN};
use mailfront_model::ProtocolSet;
use mailfront_password::{Scheme, hash_password};

/// What the command prints, made without printing (so that it can be tested).
#[derive(Debug)]
pub(crate) struct NewAppPassword {
    /// The password itself.
    pub(crate) password: mailfront_model::Secret<String>,
    /// The users-file entry (a TOML inline table for the user's `app_passwords` array).
    pub(crate) toml: String,
    /// The LDAP attribute value.
    pub(crate) ldap: String,
}

/// Makes a new app password named `name` for `protocols` (comma-separated), hashed with
/// `scheme`, created at `now`. Errors say what is wrong with the arguments.
pub(crate) fn make(
    name: &str,
    protocols: &str,
    scheme: Scheme,
    now: SystemTime,
) -> Result<NewAppPassword, String> {
    if !credential::valid_name(name) {
        return Err(format!(
            "--name: must be 1 to {MAX_NAME_LEN} characters without `;`, spaces or control characters"
        ));
    }
    let protocols: ProtocolSet =
        credential::parse_protocols(protocols.split(',').filter(|p| !p.trim().is_empty()))
            .map_err(|e| format!("--protocols: {e}"))?;
    if protocols == ProtocolSet::NONE {
        return Err("--protocols: name at least one protocol (e.g. imap,submission)".to_owned());
    }
    if scheme == Scheme::Plain {
        return Err("--scheme: app passwords are stored hashed; PLAIN is not allowed".to_owned());
    }
    let password =
        credential::generate().ok_or_else(|| "the system's random generator failed".to_owned())?;
    let hash = hash_password(scheme, password.expose().as_bytes()).map_err(|e| e.to_string())?;
    let created = credential::created_text(now);
    let quoted: Vec<String> = protocols.iter().map(|p| quote(p.as_str())).collect();
    let toml = format!(
        "{{ name = {}, protocols = [{}], created = {}, hash = {} }}",
        quote(name),
        quoted.join(", "),
        quote(&created),
        quote(&hash)
    );
    let ldap = credential::ldap_value(name, protocols, now, &hash);
    Ok(NewAppPassword {
        password,
        toml,
        ldap,
    })
}

/// `text` as a TOML basic string, escaped as TOML requires.
fn quote(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Runs the command: the three lines on standard output; a hint on standard error when it is a
/// terminal.
pub(crate) fn run(name: &str, protocols: &str, scheme: Scheme) -> ExitCode {
    match make(name, protocols, scheme, SystemTime::now()) {
        Ok(made) => {
            if std::io::stderr().is_terminal() {
                eprintln!(
                    "the password, then its users-file entry (add it to the user's app_passwords), \
                     then its LDAP value:"
                );
            }
            println!("{}", made.password.expose());
            println!("{}", made.toml);
            println!("{}", made.ldap);
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("mailfront: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailfront_directory::credential::{AppPassword, Credential};
    use mailfront_directory::file::{FileDirectory, parse};
    use mailfront_directory::{Authenticated, Directory};
    use mailfront_model::Protocol;
    use mailfront_model::Secret;

    fn at() -> SystemTime {
        humantime_serde::re::humantime::parse_rfc3339("2026-12-04T17:00:00Z").unwrap()
    }

    #[tokio::test]
    async fn the_printed_lines_log_in_with_the_printed_password() {
        let made = make("phone", "imap, submission", Scheme::Ssha512, at()).unwrap();
        let users = format!(
            "[[user]]\naddress = \"a@example.com\"\npassword = \"{{PLAIN}}main\"\nmailbox_guid = \"g\"\n\
             version = \"15\"\napp_passwords = [{}]\n",
            made.toml
        );
        let directory = FileDirectory::from_users(parse(&users).unwrap());
        let secret = Secret::new(made.password.expose().as_bytes().to_vec());
        let Authenticated { credential, .. } = directory
            .authenticate("a@example.com", &secret)
            .await
            .unwrap();
        let imap_and_submission: ProtocolSet =
            [Protocol::Imap, Protocol::Submission].into_iter().collect();
        assert_eq!(
            credential,
            Credential::App {
                name: "phone".to_owned(),
                protocols: imap_and_submission
            }
        );
        assert!(
            made.ldap
                .starts_with("phone;imap,submission;2026-12-04T17:00:00Z;{SSHA512}")
        );
        let app = AppPassword::from_ldap_value(&made.ldap).unwrap();
        assert!(app.verify(made.password.expose().as_bytes()));
        assert!(!made.toml.contains(made.password.expose().as_str()));
    }

    #[test]
    fn bad_arguments_name_the_option() {
        let cases = [
            ("my phone", "imap", Scheme::Argon2id, "--name"),
            ("", "imap", Scheme::Argon2id, "--name"),
            ("phone", "gopher", Scheme::Argon2id, "--protocols"),
            ("phone", " , ", Scheme::Argon2id, "--protocols"),
            ("phone", "imap", Scheme::Plain, "--scheme"),
        ];
        for (name, protocols, scheme, option) in cases {
            let error = make(name, protocols, scheme, at()).unwrap_err();
            assert!(error.starts_with(option), "{name} {protocols}: {error}");
        }
    }
}
