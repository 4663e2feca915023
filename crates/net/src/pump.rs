//! The one pump: carries out what a sans-I/O machine asks, over a [`Conn`], until the machine
//! has something only its caller can act on.
//!
//! Every machine of `mailfront-protocol` — the front ends before login, the backend logins, the
//! SMTP receiver and the LMTP/SMTP delivery client — speaks the same [`Step`]s: send bytes, read,
//! start TLS, or an event. The pump sends (coalescing consecutive sends into one write), reads
//! within the deadline its [`Pace`] gives, upgrades to TLS in the connection's [`TlsRole`], and
//! returns the machine's event, or an [`Interrupt`] that the caller turns into the machine's own
//! input (a timeout, the peer's end of stream) or the end of the session.

use std::time::Duration;

use mailfront_protocol::{Machine, Step};
use tokio::time::Instant;

use crate::conn::{Conn, ConnEnd, Received, TlsRole};

/// Why the pump returned without an event.
#[derive(Debug)]
pub enum Interrupt {
    /// The read deadline passed; the caller tells the machine (idle or login timeout) and pumps
    /// again.
    TimedOut,
    /// The peer closed the connection (a backend machine wants to hear it: `eof`).
    Closed,
    /// Writing, reading or the TLS handshake failed.
    Failed(ConnEnd),
}

impl From<ConnEnd> for Interrupt {
    fn from(end: ConnEnd) -> Self {
        match end {
            ConnEnd::Closed => Interrupt::Closed,
            other => Interrupt::Failed(other),
        }
    }
}

impl Interrupt {
    /// The end of the connection this interrupt means, for the session log.
    pub fn into_end(self) -> Option<ConnEnd> {
        match self {
            Interrupt::TimedOut => None,
            Interrupt::Closed => Some(ConnEnd::Closed),
            Interrupt::Failed(end) => Some(end),
        }
    }
}

/// How long the pump waits: for the peer's bytes, and for a write or a handshake.
pub trait Pace<M> {
    /// When the next read must have brought something. `machine` is there for paces whose
    /// deadline depends on what the machine is reading (a message body, a command).
    fn read_deadline(&mut self, machine: &M) -> Instant;
    /// How long one write (the queued sends) or one TLS handshake may take.
    fn write_timeout(&self) -> Duration;
    /// The machine took a turn that was not a read: it sent something, upgraded to TLS, or
    /// produced an event. A pace that times whole commands starts the peer's turn here.
    fn turned(&mut self) {}
}

/// A pace with one fixed deadline for everything (a backend dialogue that must be over by
/// then).
#[derive(Clone, Copy, Debug)]
pub struct Until(pub Instant);

impl<M> Pace<M> for Until {
    fn read_deadline(&mut self, _: &M) -> Instant {
        self.0
    }

    fn write_timeout(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// Runs `machine` over `conn` until it produces an event. Sends are queued and written together
/// before any other step is carried out, so a reply of several lines costs one write.
pub async fn pump<M: Machine, P: Pace<M>>(
    machine: &mut M,
    conn: &mut Conn,
    tls: TlsRole<'_>,
    pace: &mut P,
) -> Result<M::Event, Interrupt> {
    loop {
        let step = match machine.next_step() {
            Step::Send(bytes) => {
                conn.queue(&bytes);
                pace.turned();
                continue;
            }
            other => other,
        };
        if conn.has_queued() {
            conn.flush(pace.write_timeout()).await?;
        }
        match step {
            Step::Send(_) => {}
            Step::Read => match conn.read(pace.read_deadline(machine)).await? {
                Received::Data(bytes) => machine.feed(bytes),
                Received::TimedOut => return Err(Interrupt::TimedOut),
            },
            Step::StartTls => {
                pace.turned();
                conn.start_tls(tls, pace.write_timeout()).await?;
                machine.tls_established();
            }
            Step::Event(event) => {
                pace.turned();
                return Ok(event);
            }
        }
    }
}
