//! The vocabulary every sans-I/O machine of this crate speaks to its driver.
//!
//! A machine never touches a socket: bytes go in through [`Machine::feed`], and the machine
//! answers with [`Step`]s. Three of them are the same for every protocol and every side (send,
//! read, start TLS), so one pump can carry them out for any machine; the fourth,
//! [`Step::Event`], carries what only the caller can act on, in the machine's own event type.
//!
//! [`Steps`] is the queue every machine keeps its pending steps in. Inside the crate, every
//! machine keeps it in a `Peer` (with its input buffer and the state of the connection) and
//! implements the sealed `Conversation` trait, and one implementation of [`Machine`] serves
//! them all: feeding, the TLS handshake and the `next_step` loop are written once.

use std::collections::VecDeque;

/// What a sans-I/O machine asks its driver to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<E> {
    /// Write these bytes to the peer. Consecutive sends may be coalesced by the driver; it
    /// flushes before carrying out any other step.
    Send(Vec<u8>),
    /// Wait for bytes from the peer, then call `feed` (or the machine's own end-of-stream
    /// method).
    Read,
    /// Upgrade the connection to TLS (this side's role), then call `tls_established`. The reply
    /// that allowed it has been sent in an earlier [`Step::Send`], and every byte received
    /// before this point has been discarded (CVE-2011-0411).
    StartTls,
    /// Something only the caller can act on (authenticate, deliver, done, failed, close, …).
    Event(E),
}

/// A sans-I/O protocol machine: bytes in, [`Step`]s out.
pub trait Machine {
    /// What the machine reports through [`Step::Event`].
    type Event;
    /// Bytes received from the peer.
    fn feed(&mut self, bytes: &[u8]);
    /// The TLS handshake asked for by [`Step::StartTls`] completed.
    fn tls_established(&mut self);
    /// The next thing to do.
    fn next_step(&mut self) -> Step<Self::Event>;
}

/// The FIFO of steps a machine has decided on and its driver has not yet taken.
#[derive(Debug)]
pub struct Steps<E> {
    queue: VecDeque<Step<E>>,
}

impl<E> Default for Steps<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> Steps<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            queue: VecDeque::new(),
        }
    }

    /// Queues bytes for the peer. Bytes queued right after other bytes join their send, so that
    /// a reply of several lines (or several replies to pipelined commands) is one write.
    pub fn push_send(&mut self, bytes: impl Into<Vec<u8>>) {
        let bytes = bytes.into();
        match self.queue.back_mut() {
            Some(Step::Send(queued)) => queued.extend_from_slice(&bytes),
            _ => self.queue.push_back(Step::Send(bytes)),
        }
    }

    /// Queues a step (a send joins a send queued just before it, as with [`Steps::push_send`]).
    pub fn push(&mut self, step: Step<E>) {
        match step {
            Step::Send(bytes) => self.push_send(bytes),
            other => self.queue.push_back(other),
        }
    }

    /// Queues an event for the caller.
    pub fn event(&mut self, event: E) {
        self.queue.push_back(Step::Event(event));
    }

    /// Takes the oldest queued step.
    pub fn pop(&mut self) -> Option<Step<E>> {
        self.queue.pop_front()
    }

    /// Drops every queued step (a timeout or shutdown replaces whatever was pending with a
    /// goodbye).
    pub fn clear(&mut self) {
        self.queue.clear();
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// How many steps are queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_join_until_another_step() {
        let mut steps: Steps<&str> = Steps::new();
        steps.push_send("a\r\n");
        steps.push(Step::Send(b"b\r\n".to_vec()));
        steps.push(Step::StartTls);
        steps.push_send(b"c\r\n".to_vec());
        steps.event("done");
        steps.push_send("d\r\n");
        assert_eq!(steps.len(), 5);
        assert_eq!(steps.pop(), Some(Step::Send(b"a\r\nb\r\n".to_vec())));
        assert_eq!(steps.pop(), Some(Step::StartTls));
        assert_eq!(steps.pop(), Some(Step::Send(b"c\r\n".to_vec())));
        assert_eq!(steps.pop(), Some(Step::Event("done")));
        // `d` is still queued: `e` joins it.
        steps.push_send("e\r\n");
        assert_eq!(steps.pop(), Some(Step::Send(b"d\r\ne\r\n".to_vec())));
        assert!(steps.is_empty());
        steps.push(Step::Read);
        steps.clear();
        assert_eq!(steps.pop(), None);
    }
}
