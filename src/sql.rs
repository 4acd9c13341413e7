//! Quoting for generated SQL. Every identifier pgbridge writes into a statement goes through
//! [`ident`], whatever its origin (catalog, mapping file or configuration), so a table named
//! `"Order"; DROP TABLE x` is just an odd table name.

/// `name` as a quoted identifier: `"name"`, with embedded quotes doubled.
pub fn ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

/// `value` as a string literal: `'value'` with embedded quotes doubled, or `E'...'` with
/// backslashes doubled too when it holds any, so it reads the same whatever the server's
/// `standard_conforming_strings`.
pub fn literal(value: &str) -> String {
    let escape = value.contains('\\');
    let mut out = String::with_capacity(value.len() + 3);
    if escape {
        out.push('E');
    }
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || (escape && c == '\\') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// `body` between dollar quotes whose tag does not occur in it (a function body pgbridge
/// generates, which may hold any text of a mapping).
pub fn dollar_quoted(body: &str) -> String {
    let mut tag = "pgbridge".to_string();
    while body.contains(&format!("${tag}$")) {
        tag.push('_');
    }
    format!("${tag}${body}${tag}$")
}

/// In a PL/pgSQL exception handler that ran `GET STACKED DIAGNOSTICS v_message =
/// MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL`: PostgreSQL's message, with its detail in
/// parentheses when there is one. What the row-by-row functions of `check` and `verify` report.
pub const ERROR_TEXT: &str =
    "v_message || CASE WHEN coalesce(v_detail, '') = '' THEN '' ELSE ' (' || v_detail || ')' END";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_quotes_pick_a_tag_the_body_lacks() {
        assert_eq!(dollar_quoted("x"), "$pgbridge$x$pgbridge$");
        assert_eq!(dollar_quoted("a $pgbridge$ b"), "$pgbridge_$a $pgbridge$ b$pgbridge_$");
    }

    #[test]
    fn identifiers_are_always_quoted() {
        assert_eq!(ident("orders"), "\"orders\"");
        assert_eq!(ident("Or\"der"), "\"Or\"\"der\"");
        assert_eq!(qualified("public", "x; drop table y"), "\"public\".\"x; drop table y\"");
    }

    #[test]
    fn literals_double_quotes() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"back\slash"), r"E'back\\slash'");
    }
}
