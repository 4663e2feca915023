//! The value format: what a database's key holds (a bare server name, or JSON with `active`,
//! `copies` and the Active Manager's `epoch`, `hold` and `moved`), how it is read and written,
//! and which database a key names.

use mailfront_model::{DatabaseName, ServerName};
use serde::{Deserialize, Serialize};

use crate::record::{DatabaseRecord, MoveStamp, Moving};

/// One database's value in etcd, parsed: the record of [`crate::record`].
pub type LocationValue = DatabaseRecord;

/// The JSON form of a value. Members a reader does not know are ignored, so that a newer writer
/// can add fields without breaking older readers.
#[derive(Deserialize, Serialize)]
struct JsonValue {
    active: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    copies: Vec<String>,
    #[serde(default, skip_serializing_if = "crate::record::is_zero")]
    epoch: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    hold: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    moved: Option<MoveStamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    moving: Option<Moving>,
}

/// At most 64 characters of a name or key from the store, escaped, for messages and logs.
pub(super) fn clip(text: &str) -> String {
    const SHOWN: usize = 64;
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(SHOWN).collect();
    let more = if chars.next().is_some() { "…" } else { "" };
    format!("{}{more}", head.escape_debug())
}

/// Refuses an empty `name` (a `what`, for the message) or one with whitespace, a control
/// character or `/`.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(format!(
            "the {what} `{}` contains whitespace, a control character or `/`",
            clip(name)
        ));
    }
    Ok(())
}

/// Parses a database's value: a bare server name or
/// `{"active": …, "copies": […], "epoch": …, "hold": …, "moved": {"by": …, "reason": …, "at": …},
/// "moving": {"to": …, "since": …}}` (every member but `active` optional).
pub fn parse_value(bytes: &[u8]) -> Result<LocationValue, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the value is not UTF-8".to_owned())?;
    let text = text.trim();
    if text.starts_with('{') {
        let json: JsonValue =
            serde_json::from_str(text).map_err(|e| format!("invalid JSON value: {e}"))?;
        check_name("active server name", &json.active)?;
        for copy in &json.copies {
            check_name("copy's server name", copy)?;
        }
        if let Some(moving) = &json.moving {
            check_name("server name a move goes to", moving.to.as_str())?;
        }
        if !json.copies.is_empty() && !json.copies.contains(&json.active) {
            return Err(format!(
                "the active server `{}` is not one of the copies ({})",
                clip(&json.active),
                clip(&json.copies.join(", "))
            ));
        }
        return Ok(LocationValue {
            active: ServerName::new(&json.active),
            copies: json.copies.iter().map(ServerName::new).collect(),
            epoch: json.epoch,
            hold: json.hold,
            moved: json.moved,
            moving: json.moving,
        });
    }
    if text.starts_with('"') || text.starts_with('[') {
        return Err(
            "the value must be a bare server name or a JSON object with \"active\"".to_owned(),
        );
    }
    check_name("server name", text)?;
    Ok(LocationValue::active_on(ServerName::new(text)))
}

/// The text of a value: a bare server name when it says nothing more, JSON otherwise.
pub fn encode_value(value: &LocationValue) -> String {
    if value.is_bare() {
        return value.active.to_string();
    }
    let json = JsonValue {
        active: value.active.to_string(),
        copies: value.copies.iter().map(ToString::to_string).collect(),
        epoch: value.epoch,
        hold: value.hold,
        moved: value.moved.clone(),
        moving: value.moving.clone(),
    };
    // Serialising strings, numbers and a flag cannot fail; fall back to the bare name.
    serde_json::to_string(&json).unwrap_or_else(|_| value.active.to_string())
}

/// The database a key names (`<prefix><DATABASE>`).
pub fn database_from_key(prefix: &str, key: &[u8]) -> Result<DatabaseName, String> {
    let rest = key
        .strip_prefix(prefix.as_bytes())
        .ok_or_else(|| format!("the key is not under the prefix {prefix}"))?;
    let name = std::str::from_utf8(rest).map_err(|_| "the key is not UTF-8".to_owned())?;
    check_name("database name", name)?;
    Ok(DatabaseName::new(name))
}
