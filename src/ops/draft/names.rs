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
        assert_eq!(file_name("Sales", "a/b"), "Sales.a_b.toml");
    }
}
