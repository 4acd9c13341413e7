//! Names in drafts: quoting only where SQL or a mapping file needs it (a draft is read by a
//! person first), and how alike two names are, for the guesses.

use std::collections::HashSet;

use crate::sql;

/// Quotes identifiers for expressions on the server whose keywords it holds.
#[derive(Clone, Debug, Default)]
pub struct Quoter {
    keywords: HashSet<String>,
}

impl Quoter {
    pub fn new(keywords: HashSet<String>) -> Self {
        Quoter { keywords }
    }

    /// `name` as an identifier in SQL: bare when PostgreSQL reads it back unchanged (lower
    /// case, no keyword), quoted by [`sql::ident`] otherwise.
    pub fn ident(&self, name: &str) -> String {
        if plain(name) && !self.keywords.contains(name) {
            name.to_string()
        } else {
            sql::ident(name)
        }
    }

    /// `CAST(column AS type)`; `type` as `format_type` prints it, already valid SQL.
    pub fn cast(&self, column: &str, to: &str) -> String {
        format!("CAST({} AS {to})", self.ident(column))
    }
}

/// Lower-case letters, digits, `_` and `$`, not starting with a digit or `$`.
fn plain(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
}

/// A table name as mapping files write it (`schema.table`, parts quoted where needed).
pub fn table(schema: &str, name: &str) -> String {
    let part = |p: &str| if plain(p) { p.to_string() } else { sql::ident(p) };
    format!("{}.{}", part(schema), part(name))
}

/// A name as output shows it (comments, stdout): bare when SQL reads it so, else quoted, and
/// a name holding control characters in SQL's `U&"..."` form with them escaped, so that what
/// is shown is one line, cannot be read as TOML, and is never ambiguous (`public."a.b"` is
/// not `"public.a".b`).
pub fn shown(name: &str) -> String {
    if plain(name) {
        return name.to_string();
    }
    if !name.chars().any(char::is_control) {
        return sql::ident(name);
    }
    let mut out = String::from("U&\"");
    for c in name.chars() {
        match c {
            '"' => out.push_str("\"\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `schema.table` as output shows it: each part as [`shown`].
pub fn shown_table(schema: &str, name: &str) -> String {
    format!("{}.{}", shown(schema), shown(name))
}

/// Any text made one line: control characters (a type name from the catalog may hold a
/// newline) written as `\u{..}` escapes.
pub fn one_line(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The column a draft's own forms read: `CAST(column AS type)` or a lone column name; `None`
/// for any other expression.
pub fn cast_source(expr: &str) -> Option<String> {
    let e = expr.trim();
    let inner = if e.len() > 5 && e[..5].eq_ignore_ascii_case("cast(") && e.ends_with(')') {
        e[5..e.len() - 1].trim()
    } else {
        e
    };
    let (name, rest) = identifier(inner)?;
    let rest = rest.trim_start();
    let cast = inner.len() != e.len();
    let ok = if cast {
        rest.len() > 3 && rest[..3].eq_ignore_ascii_case("as ")
    } else {
        rest.is_empty()
    };
    ok.then_some(name)
}

/// A leading identifier (quoted, or bare and folded to lower case) and what follows it.
fn identifier(text: &str) -> Option<(String, &str)> {
    if let Some(rest) = text.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if chars.peek().is_some_and(|(_, n)| *n == '"') {
                    chars.next();
                    name.push('"');
                } else {
                    return (!name.is_empty()).then(|| (name, &rest[i + 1..]));
                }
            } else {
                name.push(c);
            }
        }
        return None;
    }
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(text.len());
    let word = &text[..end];
    let starts = word.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_');
    starts.then(|| (word.to_lowercase(), &text[end..]))
}

/// How alike two names are, from 0 to 1: 1 for the same name, 0.9 when the words of one are
/// all words of the other (`email` and `email_address`), else the overlap of their letter
/// pairs (`qty` and `quantity` score low: a guess needs more than that).
pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (a.to_lowercase(), b.to_lowercase());
    if a == b {
        return 1.0;
    }
    let words = |s: &str| -> HashSet<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    let (wa, wb) = (words(&a), words(&b));
    if !wa.is_empty() && !wb.is_empty() && (wa.is_subset(&wb) || wb.is_subset(&wa)) {
        return 0.9;
    }
    let pairs = |s: &str| -> Vec<(char, char)> {
        let c: Vec<char> = s.chars().collect();
        c.windows(2).map(|w| (w[0], w[1])).collect()
    };
    let (pa, pb) = (pairs(&a), pairs(&b));
    if pa.is_empty() || pb.is_empty() {
        return 0.0;
    }
    let mut rest = pb.clone();
    let mut common = 0;
    for p in &pa {
        if let Some(i) = rest.iter().position(|q| q == p) {
            rest.swap_remove(i);
            common += 1;
        }
    }
    2.0 * common as f64 / (pa.len() + pb.len()) as f64
}

/// Words that say what kind of value a column holds, not which: `created_by` and
/// `created_at` share the stem `created`, `customer_ref` and `customer_id` the stem `customer`.
const AFFIXES: &[&str] = &[
    "at", "on", "by", "id", "ids", "ref", "key", "no", "num", "ts", "fk", "uid",
];

/// Words that name one end of a pair: names holding the two ends are never alike.
const OPPOSITES: &[(&str, &str)] = &[
    ("created", "deleted"),
    ("created", "updated"),
    ("updated", "deleted"),
    ("inserted", "deleted"),
    ("added", "removed"),
    ("old", "new"),
    ("start", "end"),
    ("begin", "end"),
    ("starts", "ends"),
    ("started", "ended"),
    ("min", "max"),
    ("first", "last"),
    ("from", "to"),
    ("src", "dst"),
    ("source", "target"),
    ("before", "after"),
    ("in", "out"),
    ("prev", "next"),
    ("open", "close"),
    ("opened", "closed"),
    ("low", "high"),
    ("lower", "upper"),
    ("sent", "received"),
    ("buy", "sell"),
    ("debit", "credit"),
    ("home", "work"),
    ("billing", "shipping"),
];

fn words(name: &str) -> Vec<String> {
    name.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// How alike two column names are, for a guessed rename: 0 when they are not, else up to 1.
/// Alike means the same name; or the words of one, less [`AFFIXES`], all words of the other
/// (`email` and `email_address`, `customer_ref` and `customer_id`); or one, four letters or
/// more, spelled inside the other (`email` in `emailaddr`). Names holding the two ends of an
/// [`OPPOSITES`] pair (`created_by` and `deleted_by`, `old_col` and `new_col`) never are.
pub fn alike(a: &str, b: &str) -> f64 {
    if a.to_lowercase() == b.to_lowercase() {
        return 1.0;
    }
    let (wa, wb) = (words(a), words(b));
    let has = |ws: &[String], w: &str| ws.iter().any(|x| x == w);
    if OPPOSITES
        .iter()
        .any(|(x, y)| (has(&wa, x) && has(&wb, y)) || (has(&wa, y) && has(&wb, x)))
    {
        return 0.0;
    }
    let stem =
        |ws: &[String]| -> Vec<String> { ws.iter().filter(|w| !AFFIXES.contains(&w.as_str())).cloned().collect() };
    let (sa, sb) = (stem(&wa), stem(&wb));
    if !sa.is_empty() && !sb.is_empty() {
        if sa == sb {
            return 0.95;
        }
        if sa.iter().all(|w| sb.contains(w)) || sb.iter().all(|w| sa.contains(w)) {
            return 0.9;
        }
    }
    let (ja, jb) = (sa.concat(), sb.concat());
    let (short, long) = if ja.len() <= jb.len() { (&ja, &jb) } else { (&jb, &ja) };
    if short.chars().count() >= 4 && long.contains(short.as_str()) {
        return 0.8;
    }
    0.0
}

/// A file name for table `schema.name`: `name.toml` in schema public, `schema.name.toml`
/// elsewhere, with characters a file name should not hold replaced by `_`.
pub fn file_name(schema: &str, name: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    if schema == "public" {
        format!("{}.toml", clean(name))
    } else {
        format!("{}.{}.toml", clean(schema), clean(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_only_when_needed() {
        let q = Quoter::new(["select".to_string(), "user".to_string()].into());
        assert_eq!(q.ident("quantity"), "quantity");
        assert_eq!(q.ident("user"), "\"user\"");
        assert_eq!(q.ident("Total"), "\"Total\"");
        assert_eq!(q.ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(q.ident("1st"), "\"1st\"");
        assert_eq!(q.cast("Qty", "integer"), "CAST(\"Qty\" AS integer)");
        assert_eq!(table("public", "Orders"), "public.\"Orders\"");
    }

    #[test]
    fn the_drafts_own_forms_are_recognised() {
        assert_eq!(cast_source("CAST(quantity AS integer)").as_deref(), Some("quantity"));
        assert_eq!(cast_source("cast(\"Qty\" as numeric(10,2))").as_deref(), Some("Qty"));
        assert_eq!(cast_source(" Amount ").as_deref(), Some("amount"));
        assert_eq!(cast_source("CAST(a + b AS integer)"), None);
        assert_eq!(cast_source("location_structured ->> 'city'"), None);
        assert_eq!(cast_source("'bridge'"), None);
        assert_eq!(cast_source("CAST(\"unterminated AS x)"), None);
    }

    #[test]
    fn similar_names() {
        assert_eq!(similarity("email", "email"), 1.0);
        assert_eq!(similarity("email", "email_address"), 0.9);
        assert_eq!(similarity("location_structured", "location"), 0.9);
        assert!(similarity("qty", "quantity") < 0.5);
        assert!(similarity("customer_ref", "customer_id") >= 0.5);
        assert!(similarity("preferences", "location") < 0.5);
        assert_eq!(file_name("public", "orders"), "orders.toml");
    }

    /// Tester's finding 5: only genuinely alike names are a rename guess.
    #[test]
    fn alike_names_need_a_shared_stem_and_never_opposites() {
        for (a, b) in [
            ("email", "email_address"),
            ("location_structured", "location"),
            ("full_name", "name"),
            ("customer_ref", "customer_id"),
            ("emailaddr", "email"),
        ] {
            assert!(alike(a, b) > 0.0, "{a} ~ {b}");
        }
        for (a, b) in [
            ("created_by", "deleted_by"),
            ("old_col", "new_col"),
            ("start_at", "end_at"),
            ("min_price", "max_price"),
            ("tier", "loyalty_points"),
            ("extra", "newthing"),
            ("qty", "quantity"),
            ("id", "customer_id"),
        ] {
            assert_eq!(alike(a, b), 0.0, "{a} !~ {b}");
        }
    }

    /// Tester's finding 2: a name with a newline is shown on one line, in a form SQL reads.
    #[test]
    fn shown_names_stay_on_one_line_and_are_unambiguous() {
        assert_eq!(shown("note"), "note");
        assert_eq!(shown("a.b"), "\"a.b\"");
        assert_eq!(shown_table("public", "a.b"), "public.\"a.b\"");
        assert_eq!(shown_table("public.a", "b"), "\"public.a\".b");
        assert_eq!(shown("x\ny = 1\\"), "U&\"x\\000Ay = 1\\\\\"");
        assert_eq!(one_line("public.\"mo\nod\""), "public.\"mo\\u{a}od\"");
        assert_eq!(file_name("Sales", "a/b"), "Sales.a_b.toml");
    }
}
