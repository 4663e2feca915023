//! SMTP (RFC 5321) in three roles: the submission front end (RFC 6409) and its backend login,
//! the receiver of the seeds' front-end transport ([`receiver`]: inbound mail, and outbound mail
//! from the mailbox servers), and the delivery client that hands a message to a mailbox server
//! (LMTP, RFC 2033, or SMTP).

pub mod command;
pub mod data;
pub mod delivery;
pub mod login;
pub mod receiver;
pub mod reply;
pub mod submission;
pub mod trace;

/// The answer to a connection turned away because there are too many, on a submission or a
/// transport listener (RFC 5321 §3.8: `421`, the client retries later).
pub const BUSY_NOTICE: &[u8] = b"421 4.7.0 Too many connections, try again later\r\n";
