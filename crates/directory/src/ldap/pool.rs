//! Connections to the server: two bounded pools (searches, and user binds), opening a
//! connection, and running one operation on a pooled connection within the call's deadline.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::{Instant, timeout_at};

use super::{LdapDirectory, describe};
use crate::Unavailable;

/// What a pool's connections are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Searches, bound as the service account (or anonymous).
    Search,
    /// User binds (and, in template mode, reading the user's own entry as the user).
    Bind,
}

/// A bounded set of open connections of one role. Connections are taken out for one operation
/// and put back only if it did not fail at the transport level; a connection whose driver has
/// ended (the server closed it) is discarded when next taken.
pub(super) struct Pool {
    role: Role,
    idle: Mutex<Vec<Ldap>>,
    slots: Semaphore,
}

impl Pool {
    /// An empty pool of at most `size` connections for `role`.
    pub(super) fn new(role: Role, size: usize) -> Self {
        Self {
            role,
            idle: Mutex::new(Vec::with_capacity(size)),
            slots: Semaphore::new(size),
        }
    }

    /// An idle connection that is still open, if any.
    fn take_idle(&self) -> Option<Ldap> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(mut ldap) = idle.pop() {
            if !ldap.is_closed() {
                return Some(ldap);
            }
        }
        None
    }

    /// Returns a connection that is still good, with the slot it was taken with.
    fn put_back(&self, ldap: Ldap, _permit: SemaphorePermit<'_>) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ldap);
    }
}

/// Errors that mean the connection itself is broken (as opposed to an LDAP result code, after
/// which the connection is still good).
fn is_transport_error(error: &LdapError) -> bool {
    !matches!(
        error,
        LdapError::LdapResult { .. } | LdapError::FilterParsing
    )
}

impl LdapDirectory {
    /// Opens a connection for `role` (and binds the service account on a search connection).
    pub(super) async fn open(&self, role: Role, deadline: Instant) -> Result<Ldap, Unavailable> {
        let mut settings = LdapConnSettings::new().set_starttls(self.settings.starttls);
        if let Some(tls) = &self.settings.tls {
            settings = settings.set_config(Arc::clone(tls));
        }
        let (connection, mut ldap) = timeout_at(
            deadline,
            LdapConnAsync::with_settings(settings, &self.settings.url),
        )
        .await
        .map_err(|_| self.timed_out("connect"))?
        .map_err(|e| self.unavailable("connect", e))?;
        let url = self.settings.url.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.drive().await {
                tracing::debug!(url = %url, %error, "LDAP connection ended");
            }
        });
        if role == Role::Search
            && let Some((dn, password)) = &self.settings.service
        {
            let result = timeout_at(deadline, ldap.simple_bind(dn, password.expose()))
                .await
                .map_err(|_| self.timed_out("service account bind"))?
                .map_err(|e| self.unavailable("service account bind", e))?;
            if result.rc != 0 {
                // Not the user's fault: the service account's own credentials are refused.
                return Err(self.unavailable(
                    "service account bind",
                    format_args!("{dn}: {}", describe(&result)),
                ));
            }
        }
        tracing::debug!(url = %self.settings.url, role = ?role, "LDAP connection opened");
        Ok(ldap)
    }

    /// Runs `op` on a connection of `pool` before `deadline`. A pooled connection that fails at
    /// the transport level (the server restarted, an idle timeout closed it) is dropped and the
    /// operation is retried on the next one, and finally on a fresh connection.
    pub(super) async fn run<T, F, Fut>(
        &self,
        pool: &Pool,
        deadline: Instant,
        step: &str,
        mut op: F,
    ) -> Result<T, Unavailable>
    where
        F: FnMut(Ldap) -> Fut,
        Fut: Future<Output = Result<T, LdapError>>,
    {
        let permit = timeout_at(deadline, pool.slots.acquire())
            .await
            .map_err(|_| self.timed_out("waiting for a free connection"))?
            .map_err(|e| self.unavailable("waiting for a free connection", e))?;
        loop {
            let (ldap, reused) = match pool.take_idle() {
                Some(ldap) => (ldap, true),
                None => (self.open(pool.role, deadline).await?, false),
            };
            match timeout_at(deadline, op(ldap.clone())).await {
                Err(_) => return Err(self.timed_out(step)),
                Ok(Ok(value)) => {
                    pool.put_back(ldap, permit);
                    return Ok(value);
                }
                Ok(Err(error)) if reused && is_transport_error(&error) => {
                    tracing::debug!(
                        url = %self.settings.url,
                        %error,
                        "pooled LDAP connection failed; retrying on another"
                    );
                }
                Ok(Err(error)) => {
                    if !is_transport_error(&error) {
                        pool.put_back(ldap, permit);
                    }
                    return Err(self.unavailable(step, error));
                }
            }
        }
    }
}
