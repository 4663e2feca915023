//! Text that may hold quoted strings (RFC 5321 and RFC 5322 `Quoted-string`, RFC 3261
//! `quoted-string`): inside `"…"`, where `\` escapes the next character, a delimiter is not one.

/// The byte offset of the first `delimiter` outside a quoted string.
pub(crate) fn find_unquoted(text: &str, delimiter: char) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == delimiter && !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// Splits `text` at every `delimiter` outside a quoted string. (After a delimiter found there,
/// no quoted string or escape is open: scanning the rest afresh reads it as one scan would.)
pub(crate) fn split_unquoted(text: &str, delimiter: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(i) = find_unquoted(rest, delimiter) {
        parts.push(rest.get(..i).unwrap_or_default());
        rest = rest.get(i + delimiter.len_utf8()..).unwrap_or_default();
    }
    parts.push(rest);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters_in_quotes_do_not_count() {
        assert_eq!(split_unquoted("a\"\\\"b;c\";d", ';'), ["a\"\\\"b;c\"", "d"]);
        assert_eq!(split_unquoted("", ';'), [""]);
        assert_eq!(split_unquoted("a;;b;", ';'), ["a", "", "b", ""]);
        assert_eq!(find_unquoted("\"a>b\"@c>x", '>'), Some(7));
        assert_eq!(find_unquoted("\"a\\\">b", '>'), None);
        // A backslash outside quotes escapes nothing.
        assert_eq!(find_unquoted("a\\>b", '>'), Some(2));
    }
}
