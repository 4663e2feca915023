//! What a server says it supports, as POP3 (CAPA, RFC 2449) and SMTP (EHLO, RFC 5321) list it:
//! one capability a line, named by its first word, its parameters the words after.

/// A server's capability lines.
#[derive(Debug, Default)]
pub(crate) struct Capabilities {
    lines: Vec<String>,
}

impl Capabilities {
    /// These lines.
    pub(crate) fn new(lines: Vec<String>) -> Self {
        Self { lines }
    }

    /// Adds a line.
    pub(crate) fn push(&mut self, line: String) {
        self.lines.push(line);
    }

    /// Forgets every line (capabilities may change after STARTTLS).
    pub(crate) fn clear(&mut self) {
        self.lines.clear();
    }

    /// Whether a line is named `name` (case-insensitively).
    pub(crate) fn has(&self, name: &str) -> bool {
        self.lines.iter().any(|line| {
            line.split(' ')
                .next()
                .is_some_and(|word| word.eq_ignore_ascii_case(name))
        })
    }

    /// Whether the line named `name` lists `parameter` (case-insensitively), its words cut at
    /// any of `separators` (SMTP also writes `AUTH=PLAIN`).
    pub(crate) fn lists(&self, name: &str, parameter: &str, separators: &[char]) -> bool {
        self.lines.iter().any(|line| {
            let mut words = line.split(separators);
            words.next().is_some_and(|w| w.eq_ignore_ascii_case(name))
                && words.any(|w| w.eq_ignore_ascii_case(parameter))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_parameters() {
        let caps = Capabilities::new(vec![
            "8BITMIME".into(),
            "AUTH=PLAIN LOGIN".into(),
            "SASL plain".into(),
        ]);
        assert!(caps.has("8bitmime") && !caps.has("PLAIN"));
        assert!(caps.lists("AUTH", "login", &[' ', '=']));
        assert!(caps.lists("AUTH", "PLAIN", &[' ', '=']));
        assert!(!caps.lists("AUTH", "PLAIN", &[' ']));
        assert!(caps.lists("sasl", "PLAIN", &[' ']));
    }
}
