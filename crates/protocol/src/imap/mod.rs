//! IMAP (RFC 3501): the pre-authentication front end and the backend-login client.
//!
//! [`ImapFrontEnd`] speaks to the client from the greeting until LOGIN or AUTHENTICATE succeeds:
//! CAPABILITY, NOOP, LOGOUT, ID, STARTTLS, LOGIN (atom, quoted, literal and non-synchronising
//! literal forms) and AUTHENTICATE PLAIN/LOGIN with or without SASL-IR (RFC 4959). Command syntax
//! is decoded with `imap-codec`, after a bounded [`framing::Framer`] has cut the input into whole
//! messages. [`ImapBackendLogin`] logs in to a mailbox server (RFC 3501 LOGIN with Dovecot's
//! master-user separator, or AUTHENTICATE PLAIN with an authorization identity) and collects the
//! post-login capabilities that the client is then told.

mod backend;
pub mod framing;
mod response;
mod server;

pub use backend::ImapBackendLogin;
pub use server::{ImapFrontEnd, ImapSettings};

/// The notice sent to a proxied client when its database moves to another server and the
/// session is closed (RFC 5530 `UNAVAILABLE`): the client reconnects and lands on the new server.
pub const FAILOVER_NOTICE: &[u8] =
    b"* BYE [UNAVAILABLE] Mailbox database moved to another server, please reconnect.\r\n";

/// The notice sent to a proxied client whose session an administrator closed.
pub const KICKED_NOTICE: &[u8] = b"* BYE Session closed by the administrator.\r\n";
/// Sent before closing a session whose OAuth access token was revoked or expired.
pub const TOKEN_ENDED_NOTICE: &[u8] =
    b"* BYE Your access token is no longer valid; log in again.\r\n";

/// The notice sent to a proxied client when the node shuts down (RFC 5530 `UNAVAILABLE`): the
/// client reconnects, to another node.
pub const SHUTDOWN_NOTICE: &[u8] =
    b"* BYE [UNAVAILABLE] Server shutting down, please reconnect.\r\n";

/// The answer to a connection turned away because there are too many (RFC 5530 `UNAVAILABLE`).
pub const BUSY_NOTICE: &[u8] = b"* BYE [UNAVAILABLE] Too many connections, try again later.\r\n";
