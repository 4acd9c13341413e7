//! Which green columns a mapping expression (a blue column's `expr`, a `filter.where`) reads.
//!
//! The plan needs it for three decisions: a column read by nothing may enter statements as
//! text (its type need not exist on blue), a filter may only read green's replica identity,
//! and a blue column whose inputs include an unchanged TOAST value is left alone on update.
//! The scan is a lexer, not a parser: it takes every identifier outside string literals and
//! type names, and keeps those that name a green column. It over-approximates (a function
//! named like a column counts), which only makes the unchanged-TOAST handling more careful;
//! it does not miss a column the expression names.
//!
//! Why not PostgreSQL's own parser (the `pg_query` crate, tried for issue 15): it builds, but
//! its build script (libpg_query's C sources, bindgen) and then the crate (generated protobuf
//! types) run one after the other, 105 s and 54 s in a clean build on a shared two-core
//! machine (110 s of CPU with its build dependencies), about the whole budget of two minutes; it
//! needs libclang and protoc on every build machine; and its node walk (`nodes()`) skips node
//! kinds, so it missed `x` in `x IN (SELECT a)`, `a` in `(a).f` and in `a COLLATE "C"`. A
//! missed column is a wrong value on blue (an unchanged TOAST value taken as NULL), a column
//! too many only a more careful update.

use super::GreenTable;

/// Green columns (indexes) an expression reads, each once, in order of first mention.
pub fn columns(expr: &str, green: &GreenTable) -> Vec<usize> {
    let mut found = Vec::new();
    for word in identifiers(expr) {
        if let Some(i) = green.position(&word) {
            if !found.contains(&i) {
                found.push(i);
            }
        }
    }
    found
}

/// The identifiers of an expression that may name a column, in order: unquoted ones folded to
/// lower case as SQL does, quoted ones as written; none from inside string literals
/// (`'...'`, `E'...'`, `$tag$...$tag$`) or from a type name after `::`.
pub fn identifiers(expr: &str) -> Vec<String> {
    let mut scan = Scan {
        chars: expr.chars().collect(),
        i: 0,
        after_cast: false,
        words: Vec::new(),
    };
    while scan.i < scan.chars.len() {
        scan.step();
    }
    scan.words
}

/// The lexer's state: a position in the expression and whether a `::` type name follows.
struct Scan {
    chars: Vec<char>,
    i: usize,
    /// What follows `::` is a type name, not a column.
    after_cast: bool,
    words: Vec<String>,
}

impl Scan {
    /// Consumes one token (or one character of punctuation).
    fn step(&mut self) {
        let c = self.chars[self.i];
        let next = self.chars.get(self.i + 1).copied();
        if c == '\'' || ((c == 'E' || c == 'e') && next == Some('\'') && !self.after_word()) {
            self.string_literal(c != '\'');
            self.after_cast = false;
        } else if c == '$' && !self.after_word() {
            self.dollar_quoted();
            self.after_cast = false;
        } else if c == ':' && next == Some(':') {
            self.after_cast = true;
            self.i += 2;
        } else if c == '"' {
            let word = self.quoted_identifier();
            if !self.after_cast {
                self.words.push(word);
            }
            self.after_cast = false;
        } else if c.is_alphabetic() || c == '_' {
            self.word();
        } else {
            if !c.is_whitespace() {
                self.after_cast = false;
            }
            self.i += 1;
        }
    }

    /// Whether the character before the current one belongs to a word (`E'` inside `none'`
    /// and `$` inside `a$1` start nothing).
    fn after_word(&self) -> bool {
        word_char(self.chars.get(self.i.wrapping_sub(1)))
    }

    /// `'literal'` with `''` inside, or `E'literal'` with backslash escapes.
    fn string_literal(&mut self, escapes: bool) {
        let chars = &self.chars;
        let mut i = self.i + if escapes { 2 } else { 1 };
        while i < chars.len() {
            match chars[i] {
                '\\' if escapes => i += 2,
                '\'' if chars.get(i + 1) == Some(&'\'') => i += 2,
                '\'' => break,
                _ => i += 1,
            }
        }
        self.i = i + 1;
    }

    /// `$tag$ ... $tag$`, skipped whole (a bare `$1` is a parameter, not a quote).
    fn dollar_quoted(&mut self) {
        let (chars, i) = (&self.chars, self.i);
        let tag_end = chars[i + 1..].iter().position(|&ch| ch == '$').map(|p| i + 1 + p);
        match tag_end {
            Some(end)
                if chars[i + 1..end].iter().all(|&ch| ch.is_alphanumeric() || ch == '_')
                    && !chars.get(i + 1).is_some_and(|ch| ch.is_ascii_digit()) =>
            {
                let tag: String = chars[i..=end].iter().collect();
                let body: String = chars[end + 1..].iter().collect();
                self.i = match body.find(&tag) {
                    Some(p) => end + 1 + body[..p].chars().count() + tag.chars().count(),
                    None => chars.len(),
                };
            }
            _ => self.i += 1,
        }
    }

    /// `"name"` with `""` inside, as written.
    fn quoted_identifier(&mut self) -> String {
        let chars = &self.chars;
        let mut word = String::new();
        let mut i = self.i + 1;
        while i < chars.len() {
            if chars[i] == '"' && chars.get(i + 1) == Some(&'"') {
                word.push('"');
                i += 2;
            } else if chars[i] == '"' {
                break;
            } else {
                word.push(chars[i]);
                i += 1;
            }
        }
        self.i = i + 1;
        word
    }

    /// An unquoted word, folded to lower case; a qualified type name after `::`
    /// (`pg_catalog.text`) is skipped whole.
    fn word(&mut self) {
        let start = self.i;
        while self.i < self.chars.len() && word_char(self.chars.get(self.i)) {
            self.i += 1;
        }
        let word: String = self.chars[start..self.i].iter().collect::<String>().to_lowercase();
        let qualified = self.chars.get(self.i) == Some(&'.');
        if !self.after_cast {
            self.words.push(word);
        }
        self.after_cast = self.after_cast && qualified;
        if qualified && self.after_cast {
            self.i += 1;
        }
    }
}

fn word_char(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn green(cols: &[&str]) -> GreenTable {
        crate::mapping::int_table(cols)
    }

    #[test]
    fn expression_columns_skip_literals_and_match_quoted_names() {
        let g = green(&["a", "b", "Mixed", "c"]);
        assert_eq!(columns("a || 'b' || \"Mixed\" || upper(C)", &g), vec![0, 2, 3]);
        assert_eq!(columns("'it''s b'", &g), Vec::<usize>::new());
        assert_eq!(columns(r"E'\'' || b", &g), vec![1]);
        assert_eq!(columns("$q$ a $q$ || $$b$$ || c", &g), vec![3]);
        assert_eq!(columns("b::a || c::pg_catalog.a || $1", &g), vec![1, 3]);
    }

    #[test]
    fn each_column_is_named_once_in_order_of_first_mention() {
        let g = green(&["a", "b"]);
        assert_eq!(columns("b + a + b * a", &g), vec![1, 0]);
        assert_eq!(columns("coalesce(x, 0)", &g), Vec::<usize>::new());
    }

    #[test]
    fn functions_named_like_columns_count() {
        // Over-approximation by design: reading a column too many is only more careful.
        let g = green(&["lower", "b"]);
        assert_eq!(columns("lower(b)", &g), vec![0, 1]);
    }

    #[test]
    fn identifiers_leave_out_literals_and_type_names() {
        assert_eq!(
            identifiers("A::text || \"B\" || 'c' || e'd' || none'x'"),
            ["a", "B", "none"]
        );
        assert_eq!(identifiers("x::pg_catalog.int4 + y"), ["x", "y"]);
        assert_eq!(identifiers("$t$ unterminated"), Vec::<String>::new());
        assert_eq!(identifiers("'unterminated"), Vec::<String>::new());
        assert_eq!(identifiers("\"unterminated"), ["unterminated"]);
        assert_eq!(identifiers("a$1 + $2"), ["a$1"]);
    }
}
