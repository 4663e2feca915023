//! Where a failure came from.

use std::fmt;

/// Where a refusal or the end of a session came from. Modelled on pingora's error source: the
/// source, not the text, decides what the client is told (a client fault is permanent, every
/// other source is temporary) and whether another backend is worth trying (only a backend
/// fault is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The client: wrong credentials, a disabled protocol, a request that cannot be served.
    Client,
    /// The directory could not be asked, or did not answer in time.
    Directory,
    /// The location store has no answer for the database.
    Locator,
    /// A mailbox server could not be reached, or refused us.
    Backend,
    /// mailfront itself: a configuration that cannot serve the request, an invariant broken.
    Internal,
}

impl Source {
    /// The lowercase word used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Client => "client",
            Source::Directory => "directory",
            Source::Locator => "locator",
            Source::Backend => "backend",
            Source::Internal => "internal",
        }
    }

    /// Whether the client should retry later: everything but a client fault.
    pub fn is_temporary(self) -> bool {
        self != Source::Client
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
