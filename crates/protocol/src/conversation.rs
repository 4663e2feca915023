//! The machinery every machine of this crate is built on (sealed: the module is private, so
//! nothing outside the crate can name, implement or call it): a machine keeps a [`Peer`] and
//! implements [`Conversation`], and [`Machine`] is implemented once, here, for all of them.

use mailfront_model::BackendTls;

use crate::imap::framing::Framer;
use crate::line::LineReader;
use crate::machine::{Machine, Step, Steps};
use crate::smtp::delivery::DeliveryEvent;
use crate::smtp::receiver::ReceiverEvent;
use crate::smtp::reply::ReplyReader;
use crate::{BackendFailure, BackendLogin, FrontEvent, LoginEvent};

/// A buffer of bytes received from the peer and not yet consumed: the framers and readers of
/// the line protocols.
pub trait Input {
    /// Appends received bytes.
    fn push(&mut self, bytes: &[u8]);
    /// Drops everything buffered.
    fn clear(&mut self);
}

/// Implements [`Input`] with the reader's own `push` and `clear`.
macro_rules! input {
    ($($reader:ty),*) => {
        $(impl Input for $reader {
            fn push(&mut self, bytes: &[u8]) {
                <$reader>::push(self, bytes);
            }

            fn clear(&mut self) {
                <$reader>::clear(self);
            }
        })*
    };
}

input!(LineReader, Framer, ReplyReader);

/// Where a machine's connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Bytes are read and answered.
    Open,
    /// A TLS handshake is under way: nothing is read until it completes.
    Handshake,
    /// The conversation is over (closed, failed, handed on): nothing is read any more.
    Over,
}

/// A machine's side of its connection, the part every machine of this crate shares: the steps
/// it has decided on, the bytes it has received and not yet consumed, whether the connection
/// is open, in a TLS handshake, or over, and whether it is encrypted.
#[derive(Debug)]
pub struct Peer<E, R> {
    /// Steps for the driver.
    pub(crate) steps: Steps<E>,
    /// Received bytes.
    pub(crate) input: R,
    link: Link,
    secure: bool,
}

impl<E, R: Input> Peer<E, R> {
    /// An open connection with nothing received yet; `secure` if it is TLS from the start.
    pub(crate) fn new(input: R, secure: bool) -> Self {
        Self {
            steps: Steps::new(),
            input,
            link: Link::Open,
            secure,
        }
    }

    /// A connection to a backend, encrypted from the start if its TLS is implicit.
    pub(crate) fn backend(input: R, tls: BackendTls) -> Self {
        Self::new(input, tls == BackendTls::Implicit)
    }

    /// Queues bytes for the peer.
    pub(crate) fn send(&mut self, bytes: impl Into<Vec<u8>>) {
        self.steps.push_send(bytes);
    }

    /// Asks the driver for a TLS handshake. The reply that allowed it must be queued already.
    /// Whatever was received before the handshake came in clear text and is dropped, never
    /// read as if it had come over TLS (CVE-2011-0411).
    pub(crate) fn start_tls(&mut self) {
        self.input.clear();
        self.steps.push(Step::StartTls);
        self.link = Link::Handshake;
    }

    /// Whether the connection is encrypted (from the start, or since a STARTTLS handshake).
    pub(crate) fn is_secure(&self) -> bool {
        self.secure
    }

    /// Ends the conversation: nothing more is read, and what was received is dropped.
    pub(crate) fn close(&mut self) {
        self.input.clear();
        self.link = Link::Over;
    }

    /// Ends the conversation with a final event.
    pub(crate) fn finish(&mut self, event: E) {
        self.steps.event(event);
        self.close();
    }

    /// Whether the conversation is over.
    pub(crate) fn is_over(&self) -> bool {
        self.link == Link::Over
    }

    fn feed(&mut self, bytes: &[u8]) {
        // During a handshake the bytes are TLS records the driver should not have passed on;
        // once over, they mean nothing.
        if self.link == Link::Open {
            self.input.push(bytes);
        }
    }

    /// Whether a handshake was under way (and now the connection is open again, encrypted).
    fn tls_established(&mut self) -> bool {
        if self.link != Link::Handshake {
            return false;
        }
        self.input.clear();
        self.link = Link::Open;
        self.secure = true;
        true
    }
}

/// An event vocabulary, and what its machines ask for once their conversation is over.
pub trait Events: Sized {
    /// The step once the conversation is over and nothing is queued.
    fn after_end() -> Step<Self>;
}

/// A server asks to close, again and again, however often its driver asks.
impl Events for FrontEvent {
    fn after_end() -> Step<Self> {
        Step::Event(FrontEvent::Close)
    }
}

/// A server asks to close, again and again, however often its driver asks.
impl Events for ReceiverEvent {
    fn after_end() -> Step<Self> {
        Step::Event(ReceiverEvent::Close)
    }
}

/// A client's driver stopped at its final event; asked again, the client only waits.
impl Events for LoginEvent {
    fn after_end() -> Step<Self> {
        Step::Read
    }
}

/// A client's driver stopped at its final event; asked again, the client only waits.
impl Events for DeliveryEvent {
    fn after_end() -> Step<Self> {
        Step::Read
    }
}

impl<R: Input> Peer<LoginEvent, R> {
    /// Ends a backend login with this failure.
    pub(crate) fn fail(&mut self, failure: BackendFailure) {
        self.finish(LoginEvent::Failed(failure));
    }
}

/// A machine of this crate, built on a [`Peer`]: [`Machine`] is implemented once, below, for
/// all of them, so that feeding, the TLS handshake and the `next_step` loop are the same for
/// every protocol and only the protocol's own work is written per machine.
pub trait Conversation {
    /// What the machine reports through [`Step::Event`].
    type Event: Events;
    /// The machine's side of the connection.
    fn peer(&mut self) -> &mut Peer<Self::Event, impl Input>;
    /// Does one piece of work on buffered input (a command, a frame, a reply, a run of
    /// content), queueing the steps it leads to; called only while the connection is open.
    /// `false` when nothing can happen until the driver acts: more input, an answer to an
    /// event.
    fn advance(&mut self) -> bool;
    /// The TLS handshake completed (the input is empty again): the protocol's own reset.
    fn secured(&mut self) {}
}

impl<C: Conversation> Machine for C {
    type Event = C::Event;

    fn feed(&mut self, bytes: &[u8]) {
        self.peer().feed(bytes);
    }

    fn tls_established(&mut self) {
        if self.peer().tls_established() {
            self.secured();
        }
    }

    // The oldest queued step; else work through buffered input until there is one; else wait
    // for input, or what the events say once the conversation is over.
    fn next_step(&mut self) -> Step<C::Event> {
        loop {
            if let Some(step) = self.peer().steps.pop() {
                return step;
            }
            let open = self.peer().link == Link::Open;
            if !open || !self.advance() {
                return match self.peer().steps.pop() {
                    Some(step) => step,
                    None if self.peer().is_over() => C::Event::after_end(),
                    None => Step::Read,
                };
            }
        }
    }
}

/// Every backend login ends the same way when the backend hangs up before it is over.
impl<C: Conversation<Event = LoginEvent>> BackendLogin for C {
    fn eof(&mut self) {
        let peer = self.peer();
        if !peer.is_over() {
            peer.finish(LoginEvent::Failed(BackendFailure::Closed));
        }
    }
}
