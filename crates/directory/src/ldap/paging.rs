//! RFC 2696 Simple Paged Results: reading a long list in pages on one connection, with the
//! server's response control read without panicking (ldap3's own `PagedResults` parser panics
//! on a malformed control, and the server is a peer).

use ldap3::asn1::parse_tag;
use ldap3::controls::{Control, PagedResults};
use ldap3::{Ldap, LdapError, LdapResult, ResultEntry, Scope, SearchOptions};

/// The control's OID (RFC 2696 §2; Microsoft's arc, as the RFC assigns it).
pub(super) const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";

/// What a paged search read.
pub(super) struct Listing {
    /// The entries of every page, as the server sent them.
    pub(super) entries: Vec<ResultEntry>,
    /// The result of the last page (its code says whether the server cut the list).
    pub(super) outcome: LdapResult,
    /// The list stopped at the client's own limit while the server had more.
    pub(super) truncated: bool,
    /// The server's paging control could not be read (the list is incomplete).
    pub(super) problem: Option<String>,
}

/// Searches `filter` under `base` (subtree) in pages of `page_size` entries, all on `ldap`,
/// until the server's cookie is empty, it answers without the control (it does not page: that
/// one answer is the list), a page fails, or `max` entries are read (then the paging is
/// abandoned as RFC 2696 §3 says, with a size of zero, and the listing is `truncated`).
pub(super) async fn search_paged(
    mut ldap: Ldap,
    base: &str,
    filter: &str,
    attributes: &[String],
    page_size: i32,
    max: i32,
) -> Result<Listing, LdapError> {
    let max_entries = usize::try_from(max).unwrap_or(usize::MAX);
    let mut entries = Vec::new();
    let mut cookie = Vec::new();
    loop {
        let ldap3::SearchResult(page, outcome) = ldap
            // The client's limit applies to the whole paged search (and must not change
            // between its requests).
            .with_search_options(SearchOptions::new().sizelimit(max))
            .with_controls(PagedResults {
                size: page_size,
                cookie: cookie.clone(),
            })
            .search(base, Scope::Subtree, filter, attributes)
            .await?;
        entries.extend(page);
        let next = match response_cookie(&outcome.ctrls) {
            Ok(next) => next,
            Err(problem) => {
                return Ok(Listing {
                    entries,
                    outcome,
                    truncated: false,
                    problem: Some(problem),
                });
            }
        };
        let next = match next {
            Some(next) if outcome.rc == 0 && !next.is_empty() => next,
            _ => {
                return Ok(Listing {
                    entries,
                    outcome,
                    truncated: false,
                    problem: None,
                });
            }
        };
        if entries.len() >= max_entries {
            // Tell the server to drop the rest (size 0 with the last cookie); what it answers
            // changes nothing here.
            let _ = ldap
                .with_controls(PagedResults {
                    size: 0,
                    cookie: next,
                })
                .search(base, Scope::Subtree, filter, attributes)
                .await;
            return Ok(Listing {
                entries,
                outcome,
                truncated: true,
                problem: None,
            });
        }
        cookie = next;
    }
}

/// The cookie of the paged results control among a result's `controls`: `None` when the
/// server sent no such control, an empty cookie at the end of the list. A control that is not
/// `SEQUENCE { size INTEGER, cookie OCTET STRING }` is refused with what is wrong.
pub(super) fn response_cookie(controls: &[Control]) -> Result<Option<Vec<u8>>, String> {
    let Some(control) = controls.iter().find(|c| c.1.ctype == PAGED_RESULTS_OID) else {
        return Ok(None);
    };
    let malformed = |what: &str| format!("malformed paged results control from the server: {what}");
    let value = control
        .1
        .val
        .as_deref()
        .ok_or_else(|| malformed("no value"))?;
    let (_, tag) = parse_tag(value).map_err(|_| malformed("not BER"))?;
    let mut parts = tag
        .expect_constructed()
        .ok_or_else(|| malformed("not a sequence"))?
        .into_iter();
    parts
        .next()
        .and_then(|size| size.expect_primitive())
        .ok_or_else(|| malformed("no size"))?;
    let cookie = parts
        .next()
        .and_then(|cookie| cookie.expect_primitive())
        .ok_or_else(|| malformed("no cookie"))?;
    Ok(Some(cookie))
}
