//! SMTP command parsing (`smtp::command::parse`) on arbitrary lines. Invariants: no panic;
//! paths and domains hold no control character, paths are at most `MAX_PATH` bytes; a parsed
//! MAIL, RCPT, BDAT or EHLO written back in canonical form parses to the same command
//! (MailParams' and RcptParams' `Display` are the forms a delivery replays).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::assert_clean_name;
use mailfront_protocol::smtp::command::{Command, MAX_PATH, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(command) = parse(data) else {
        return;
    };
    let canonical = match &command {
        Command::Ehlo(domain) | Command::Helo(domain) | Command::Lhlo(domain) => {
            assert!(!domain.is_empty() && !domain.contains(' '));
            assert_clean_name(domain);
            let verb = match command {
                Command::Ehlo(_) => "EHLO",
                Command::Helo(_) => "HELO",
                _ => "LHLO",
            };
            format!("{verb} {domain}")
        }
        Command::Mail { from, params } => {
            assert!(from.len() <= MAX_PATH);
            assert_clean_name(from);
            if from.starts_with('@') {
                return; // a second source route is kept (one level is stripped): see README
            }
            format!("MAIL FROM:<{from}>{params}")
        }
        Command::Rcpt { to, params } => {
            assert!(!to.is_empty() && to.len() <= MAX_PATH);
            assert_clean_name(to);
            if to.starts_with('@') {
                return; // as for MAIL
            }
            format!("RCPT TO:<{to}>{params}")
        }
        Command::Bdat { size, last } => {
            format!("BDAT {size}{}", if *last { " LAST" } else { "" })
        }
        Command::Auth { mechanism, initial } => {
            assert!(!mechanism.is_empty() && !mechanism.contains(&b' '));
            if let Some(initial) = initial {
                assert!(!initial.is_empty() && !initial.contains(&b' '));
            }
            return;
        }
        _ => return,
    };
    assert_eq!(
        parse(canonical.as_bytes()),
        Ok(command.clone()),
        "canonical form {canonical:?} of {command:?}"
    );
});
