//! A drafted mapping file before it is text, and its rendering: the header, `target` and
//! `source`, `ignore`, `[columns]`, `[key]` and `[filter]`, each entry with the comments a
//! reviewer needs (what is a guess, which cast can lose information, what is left to decide).

use std::fmt::Write;

use super::names::one_line;

/// How a drafted blue column is fed (the forms `mapping::file` reads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feed {
    From(String),
    Expr(String),
    Omit,
    /// A `decide = "..."` marker: `check` fails until a person replaces it.
    Decide(String),
}

/// What a drafted line is, for the summary a command prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// A renamed table or column.
    Rename,
    /// A type change.
    Cast,
    /// A column not carried.
    Ignore,
    /// A column left to the target's default.
    Omit,
    /// Left to a person.
    Decide,
    /// Anything else worth knowing.
    Note,
}

impl Tag {
    pub fn label(self) -> &'static str {
        match self {
            Tag::Rename => "rename",
            Tag::Cast => "cast",
            Tag::Ignore => "ignore",
            Tag::Omit => "omit",
            Tag::Decide => "decide",
            Tag::Note => "note",
        }
    }
}

/// One line of a table's summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub tag: Tag,
    pub text: String,
}

impl Line {
    pub fn new(tag: Tag, text: impl Into<String>) -> Self {
        Line { tag, text: text.into() }
    }
}

/// One `[columns]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnDraft {
    pub name: String,
    pub feed: Feed,
    /// Comment lines written above the entry.
    pub comments: Vec<String>,
}

impl ColumnDraft {
    pub fn new(name: &str, feed: Feed, comments: Vec<String>) -> ColumnDraft {
        ColumnDraft {
            name: name.to_string(),
            feed,
            comments,
        }
    }
}

/// A drafted mapping file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableDraft {
    /// (schema, table) the file fills, and the one it reads.
    pub target: (String, String),
    pub source: (String, String),
    /// Comment lines at the top, after the generated-by header.
    pub header: Vec<String>,
    /// Comment lines above `source`.
    pub source_comments: Vec<String>,
    /// Source columns not carried, each with its comment.
    pub ignore: Vec<(String, String)>,
    pub columns: Vec<ColumnDraft>,
    /// Target key column -> source column.
    pub key: Vec<(String, String)>,
    /// A filter only a person can write.
    pub filter_decision: Option<String>,
    /// What the summary says about this table.
    pub lines: Vec<Line>,
}

impl TableDraft {
    /// Whether the file says anything a by-name mapping does not.
    pub fn needed(&self) -> bool {
        self.target != self.source
            || !self.ignore.is_empty()
            || !self.columns.is_empty()
            || !self.key.is_empty()
            || self.filter_decision.is_some()
    }

    /// The decisions left to a person in the file.
    pub fn decisions(&self) -> usize {
        self.columns
            .iter()
            .filter(|c| matches!(c.feed, Feed::Decide(_)))
            .count()
            + usize::from(self.filter_decision.is_some())
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# Drafted by `pgbridge draft` from the live catalogs: review every line before use.\n");
        out.push_str("# \"guess\" marks what pgbridge inferred from names and types; check it.\n");
        if self.decisions() > 0 {
            out.push_str(
                "# decide = \"...\" marks what a person must decide: `pgbridge check` fails until each is\n\
                 # replaced (by from, expr or omit = true; a filter by where = \"...\").\n",
            );
        }
        for c in &self.header {
            let _ = writeln!(out, "# {}", one_line(c));
        }
        let _ = writeln!(
            out,
            "target = {}",
            string(&super::names::table(&self.target.0, &self.target.1))
        );
        if self.source != self.target {
            comments(&mut out, "", &self.source_comments);
            let _ = writeln!(
                out,
                "source = {}",
                string(&super::names::table(&self.source.0, &self.source.1))
            );
        }
        if !self.ignore.is_empty() {
            out.push_str("ignore = [\n");
            for (name, why) in &self.ignore {
                let _ = writeln!(out, "    {},  # {}", string(name), one_line(why));
            }
            out.push_str("]\n");
        }
        if !self.columns.is_empty() {
            out.push_str("\n[columns]\n");
            for c in &self.columns {
                comments(&mut out, "", &c.comments);
                let _ = writeln!(out, "{} = {{ {} }}", key(&c.name), feed(&c.feed));
            }
        }
        if !self.key.is_empty() {
            out.push_str("\n[key]\n");
            for (target, source) in &self.key {
                let _ = writeln!(out, "{} = {}", key(target), string(source));
            }
        }
        if let Some(why) = &self.filter_decision {
            let _ = write!(out, "\n[filter]\ndecide = {}\n", string(why));
        }
        out
    }
}

/// Comment lines; whatever a line holds (names come from the catalogs) stays one comment
/// line, never a line of TOML.
fn comments(out: &mut String, indent: &str, lines: &[String]) {
    for l in lines {
        let _ = writeln!(out, "{indent}# {}", one_line(l));
    }
}

fn feed(f: &Feed) -> String {
    match f {
        Feed::From(c) => format!("from = {}", string(c)),
        Feed::Expr(e) => format!("expr = {}", string(e)),
        Feed::Omit => "omit = true".into(),
        Feed::Decide(why) => format!("decide = {}", string(why)),
    }
}

/// A TOML key: bare when it can be.
fn key(name: &str) -> String {
    let bare = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_string()
    } else {
        string(name)
    }
}

/// A TOML string: a literal string ('...') when the text holds a double quote or a
/// backslash but no single quote (SQL with quoted identifiers reads as written), else a basic
/// string with escapes.
fn string(text: &str) -> String {
    let control = text.chars().any(|c| c.is_control());
    if !control && (text.contains('"') || text.contains('\\')) && !text.contains('\'') {
        return format!("'{text}'");
    }
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::mapping::file;

    fn sample() -> TableDraft {
        TableDraft {
            target: ("public".into(), "Orders".into()),
            source: ("public".into(), "purchases".into()),
            source_comments: vec!["guess: renamed".into()],
            ignore: vec![
                ("prefs".into(), "green-only".into()),
                ("odd \"one\"".into(), "x".into()),
            ],
            columns: vec![
                ColumnDraft {
                    name: "email".into(),
                    feed: Feed::From("email_address".into()),
                    comments: vec!["guess: renamed".into()],
                },
                ColumnDraft {
                    name: "Qty".into(),
                    feed: Feed::Expr("CAST(\"Qty\" AS integer)".into()),
                    comments: vec![],
                },
                ColumnDraft {
                    name: "it's".into(),
                    feed: Feed::Expr("'it''s' || \"a\\b\"".into()),
                    comments: vec![],
                },
                ColumnDraft {
                    name: "legacy".into(),
                    feed: Feed::Omit,
                    comments: vec![],
                },
                ColumnDraft {
                    name: "note".into(),
                    feed: Feed::Decide("blue-only \"note\"".into()),
                    comments: vec![],
                },
            ],
            key: vec![("id".into(), "uid".into())],
            filter_decision: Some("invert tenant_id = 42".into()),
            ..TableDraft::default()
        }
    }

    /// What is rendered reads back as written, decisions included.
    #[test]
    fn rendered_files_parse_back() {
        let d = sample();
        let text = d.render();
        let m = file::parse(Path::new("x.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(m.target, ("public".into(), "Orders".into()));
        assert_eq!(m.source, ("public".into(), "purchases".into()));
        assert_eq!(m.ignore, vec!["prefs", "odd \"one\""]);
        assert_eq!(m.columns["email"].feed, file::Feed::From("email_address".into()));
        assert_eq!(
            m.columns["Qty"].feed,
            file::Feed::Expr("CAST(\"Qty\" AS integer)".into())
        );
        assert_eq!(m.columns["it's"].feed, file::Feed::Expr("'it''s' || \"a\\b\"".into()));
        assert_eq!(m.columns["legacy"].feed, file::Feed::Omit);
        assert_eq!(m.key["id"], "uid");
        let keys: Vec<&str> = m.decisions.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["columns.note", "filter"]);
        assert_eq!(m.decisions[0].text, "blue-only \"note\"");
        assert!(text.starts_with("# Drafted by `pgbridge draft`"), "{text}");
        assert!(text.contains("Qty = { expr = 'CAST(\"Qty\" AS integer)' }"), "{text}");
        assert_eq!(d.decisions(), 2);
    }

    #[test]
    fn same_shape_needs_no_file() {
        let d = TableDraft {
            target: ("public".into(), "t".into()),
            source: ("public".into(), "t".into()),
            ..TableDraft::default()
        };
        assert!(!d.needed());
        assert_eq!(file::parse(Path::new("t.toml"), &d.render()).unwrap().target.1, "t");
    }
}
