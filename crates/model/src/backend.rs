//! How mailfront talks to a backend: words shared by the topology and the backend-login clients.

/// Whether and how mailfront speaks TLS to a backend endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendTls {
    /// Plain TCP (a trusted network between mailfront and the mailbox servers).
    #[default]
    None,
    /// Plain TCP upgraded with the protocol's STARTTLS before logging in.
    StartTls,
    /// TLS from the first byte.
    Implicit,
}

/// The SASL mechanism used to log in to a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `AUTHENTICATE PLAIN` (RFC 4616): the master user goes in the authentication identity and
    /// the user in the authorization identity, so no separator character is needed.
    #[default]
    Plain,
    /// `LOGIN "user<separator>master" password`: Dovecot's master-user separator syntax.
    Login,
}

/// The SMTP extensions a front-door listener offers only because every server it hands mail
/// to announces them (mailfront keeps no queue, so it cannot take on what they cannot do).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryExtensions {
    /// Delivery status notifications (`DSN`, RFC 3461): RET, ENVID, NOTIFY, ORCPT.
    pub dsn: bool,
    /// Internationalized addresses and headers (`SMTPUTF8`, RFC 6531).
    pub smtputf8: bool,
}

impl DeliveryExtensions {
    /// What both offer.
    pub fn and(self, other: Self) -> Self {
        Self {
            dsn: self.dsn && other.dsn,
            smtputf8: self.smtputf8 && other.smtputf8,
        }
    }
}

/// How a mailbox server (or relay) takes delivery of a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeliveryProtocol {
    /// LMTP (RFC 2033): one reply per recipient.
    #[default]
    Lmtp,
    /// SMTP: one reply per message.
    Smtp,
}
