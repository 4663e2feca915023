//! POP3 (RFC 1939): the pre-authentication front end and the backend-login client.
//!
//! [`Pop3FrontEnd`] speaks to the client until it has authenticated: CAPA (RFC 2449), STLS
//! (RFC 2595), USER/PASS, AUTH PLAIN and LOGIN with or without an initial response (RFC 5034),
//! QUIT. Errors carry RFC 2449/3206 response codes (`[AUTH]`, `[SYS/TEMP]`).
//! [`Pop3BackendLogin`] logs in to a mailbox server on the user's behalf, passing the client's
//! address with XCLIENT where the server offers it (Dovecot does, to trusted networks).

mod backend;
mod server;

pub use backend::Pop3BackendLogin;
pub use server::{Pop3FrontEnd, Pop3Settings};

/// The answer to a connection turned away because there are too many (RFC 3206 `SYS/TEMP`: the
/// client may try again).
pub const BUSY_NOTICE: &[u8] = b"-ERR [SYS/TEMP] Too many connections, try again later.\r\n";
