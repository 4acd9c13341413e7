//! Configuration errors in the file's own terms: a TOML error as one `FILE:LINE:COLUMN:` line
//! naming the key (never a value, which may be a password), serde's wording translated to
//! TOML's, and "did you mean" for a misspelt key.

use std::path::Path;

use crate::error::Error;

/// A TOML error as one line: `FILE:LINE:COLUMN: message`.
pub fn toml_error(path: &Path, text: &str, err: &toml::de::Error) -> Error {
    let message = plain_toml_message(err.message());
    match err.span() {
        Some(span) => {
            let mut start = span.start.min(text.len());
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let before = &text[..start];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            // Name the key of the offending line, never its value: it may be a DSN with a password.
            // A missing key is reported at its table, whose first line is some other key.
            let source_line = text.lines().nth(line - 1).unwrap_or("").trim();
            let key = source_line
                .split_once('=')
                .map(|(k, _)| k.trim())
                .filter(|k| looks_like_key(k) && !message.contains(&format!("`{k}`")))
                .filter(|_| !message.starts_with("missing key"));
            match key {
                Some(key) => Error::definite(format!("{}:{line}:{column}: {key}: {message}", path.display())),
                None => Error::definite(format!("{}:{line}:{column}: {message}", path.display())),
            }
        }
        None => Error::definite(format!("{}: {message}", path.display())),
    }
}

/// Whether `k`, the text before `=` on a line, is a TOML key rather than the inside of a value
/// (a string broken over lines): bare or quoted key characters, no spaces.
fn looks_like_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 64 && k.chars().all(|c| c.is_ascii_alphanumeric() || "_-.\"'".contains(c))
}

/// serde's words for a TOML error, in the file's terms; never quotes a string value.
fn plain_toml_message(message: &str) -> String {
    let mut m = message.trim().lines().map(str::trim).collect::<Vec<_>>().join("; ");
    if m == "expected `.`, `=`" {
        m = "a key must be followed by = and its value".into();
    }
    // "invalid type: string \"postgres://u:pw@h\", expected u64" quotes the whole value.
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = m.strip_prefix(prefix) {
            if let Some(i) = rest.rfind(", expected ") {
                let found = &rest[..i];
                let found = if found.starts_with("string ") {
                    "a string"
                } else {
                    found
                };
                m = format!("expected {}, found {found}", &rest[i + ", expected ".len()..]);
            }
            break;
        }
    }
    for (serde, toml) in [
        ("unknown field", "unknown key"),
        ("missing field", "missing key"),
        ("struct RawGreen", "a [green] table"),
        ("struct RawBlue", "a [blue] table"),
        ("struct RawMapping", "a [mapping] table"),
        ("struct RawApply", "an [apply] table"),
        ("struct RawMetrics", "a [metrics] table"),
        ("struct RawReady", "a [ready] table"),
        ("struct RawColumn", "an inline table like { from = \"green_column\" }"),
        ("struct RawFilter", "a [filter] table with where = \"condition\""),
        ("expected u64", "expected a whole number"),
        ("expected a sequence", "expected an array like [\"a\", \"b\"]"),
        ("expected a map", "expected a table"),
        ("found sequence", "found an array"),
        ("found map", "found a table"),
    ] {
        m = m.replace(serde, toml);
    }
    // "unknown key `aply`, expected one of `green`, `blue`, ...": suggest the closest.
    if m.starts_with("unknown key `") {
        let quoted: Vec<&str> = m.split('`').skip(1).step_by(2).collect();
        if let Some((unknown, allowed)) = quoted.split_first() {
            let best = allowed.iter().min_by_key(|a| strsim::levenshtein(unknown, a));
            if let Some(best) = best.filter(|a| similar(unknown, a)) {
                m = format!("{m}; did you mean `{best}`?");
            }
        }
    }
    m
}

/// Whether `unknown` is close enough to `known` to be suggested as its misspelling: at most two
/// edits (Levenshtein, in characters), and at most half of `known`'s length in bytes.
pub(super) fn similar(unknown: &str, known: &str) -> bool {
    strsim::levenshtein(unknown, known) <= 2.min(known.len() / 2)
}
