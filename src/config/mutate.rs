//! Mutations of valid texts for the parsers' property tests (here and in `mapping::file`).

use proptest::prelude::*;

/// One edit of a text, at a position taken modulo its length in characters.
#[derive(Clone, Debug)]
pub enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
    Replace(usize, String),
    Truncate(usize),
}

/// Characters and fragments that matter to TOML and to connection strings.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<char>().prop_map(String::from),
        prop::sample::select(vec![
            "=", "\"", "'", "\n", "[", "]", "{", "}", "${", "$", "@", ":", "/", "?", "&", " ", "\\", "%", "#", ",",
            ".", "\"\"\"", "[[", "-", "0", "\t", "\r\n", "\u{0}", "é", "日本",
        ])
        .prop_map(String::from),
        "[a-z_]{1,8}",
    ]
}

pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<usize>(), fragment()).prop_map(|(at, s)| Edit::Insert(at, s)),
        3 => (any::<usize>(), 1..4usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        3 => (any::<usize>(), fragment()).prop_map(|(at, s)| Edit::Replace(at, s)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ]
}

/// `text` after `edits`, in order.
pub fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        let pos = |at: usize, len: usize| if len == 0 { 0 } else { at % len };
        match edit {
            Edit::Insert(at, s) => {
                let at = pos(*at, chars.len() + 1);
                chars.splice(at..at, s.chars());
            }
            Edit::Delete(at, n) => {
                let at = pos(*at, chars.len());
                let end = (at + n).min(chars.len());
                chars.drain(at..end);
            }
            Edit::Replace(at, s) => {
                if !chars.is_empty() {
                    let at = pos(*at, chars.len());
                    chars.splice(at..at + 1, s.chars());
                }
            }
            Edit::Truncate(at) => chars.truncate(pos(*at, chars.len() + 1)),
        }
    }
    chars.into_iter().collect()
}
