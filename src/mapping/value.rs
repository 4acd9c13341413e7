//! How a blue column is fed: a green column copied as it is, or a SQL expression over green's
//! columns. Every question about it (which green columns it reads, its SQL in a statement,
//! whether COPY can move it as it is, how messages and signatures name it) is answered here,
//! so that statements, `check`, `copy` and the drift signatures agree on it.

use super::{expression, GreenTable, Target};
use crate::sql::ident;

/// What a blue column receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// The value of green column `i`.
    Green(usize),
    /// A SQL expression over green's columns.
    Expr(String),
}

impl Value {
    /// The green columns it reads: a copy its column, an expression the columns it names
    /// (see [`expression::columns`]).
    pub fn reads(&self, green: &GreenTable) -> Vec<usize> {
        match self {
            Value::Green(g) => vec![*g],
            Value::Expr(sql) => expression::columns(sql, green),
        }
    }

    /// The green column it copies unchanged, when it is a plain copy.
    pub fn copied(&self) -> Option<usize> {
        match self {
            Value::Green(g) => Some(*g),
            Value::Expr(_) => None,
        }
    }

    /// The expression, when it is one.
    pub fn expression(&self) -> Option<&str> {
        match self {
            Value::Green(_) => None,
            Value::Expr(sql) => Some(sql),
        }
    }

    /// Its SQL in a query over green's row: `relation."column"` (just `"column"` without a
    /// relation), or the expression in parentheses (its columns resolve against the query's
    /// relation by name).
    pub fn sql(&self, green: &GreenTable, relation: Option<&str>) -> String {
        match (self, relation) {
            (Value::Green(g), Some(relation)) => format!("{relation}.{}", ident(&green.columns[*g].name)),
            (Value::Green(g), None) => ident(&green.columns[*g].name),
            (Value::Expr(sql), _) => format!("({sql})"),
        }
    }

    /// `green column x` or `expression ...`: how drift signatures and their messages name it
    /// (stored on blue, so the wording is part of the accepted plan).
    pub fn describe(&self, green: &GreenTable) -> String {
        match self {
            Value::Green(g) => format!("green column {}", green.columns[*g].name),
            Value::Expr(e) => format!("expression {e}"),
        }
    }

    /// `x` or `expr ...`: the short form `check` lists a plan with.
    pub fn summary(&self, green: &GreenTable) -> String {
        match self {
            Value::Green(g) => green.columns[*g].name.clone(),
            Value::Expr(e) => format!("expr {e}"),
        }
    }
}

impl Target {
    /// Green columns the value reads (for unchanged TOAST values and the read set).
    pub fn reads(&self) -> &[usize] {
        &self.depends
    }

    /// Whether the value reads no green column (an expression like `'bridge'` or `now()`).
    pub fn is_constant(&self) -> bool {
        self.depends.is_empty()
    }

    /// Whether the value is green column `g` copied unchanged.
    pub fn copies(&self, g: usize) -> bool {
        self.value.copied() == Some(g)
    }

    /// Whether COPY can move the value as it is: a plain copy of a green column whose type is
    /// blue's (compared without quotes).
    pub fn copies_same_type(&self, green: &GreenTable) -> bool {
        let unquote = |s: &str| s.replace('"', "");
        self.value
            .copied()
            .is_some_and(|g| unquote(&self.blue_type) == unquote(&green.columns[g].type_sql))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn green() -> GreenTable {
        crate::mapping::int_table(&["id", "Odd\"Name"])
    }

    fn target(value: Value, blue_type: &str) -> Target {
        let depends = value.reads(&green());
        Target {
            blue_name: "b".into(),
            blue_type: blue_type.into(),
            stored_type: blue_type.into(),
            value,
            depends,
            insert_only: false,
            comparable: true,
            identity_always: false,
        }
    }

    #[test]
    fn a_copy_reads_its_column_and_is_quoted_in_sql() {
        let g = green();
        let v = Value::Green(1);
        assert_eq!(v.reads(&g), vec![1]);
        assert_eq!(v.copied(), Some(1));
        assert_eq!(v.expression(), None);
        assert_eq!(v.sql(&g, Some("g")), "g.\"Odd\"\"Name\"");
        assert_eq!(v.sql(&g, None), "\"Odd\"\"Name\"");
        assert_eq!(v.describe(&g), "green column Odd\"Name");
        assert_eq!(v.summary(&g), "Odd\"Name");
    }

    #[test]
    fn an_expression_reads_the_columns_it_names() {
        let g = green();
        let v = Value::Expr("id * 2".into());
        assert_eq!(v.reads(&g), vec![0]);
        assert_eq!(v.copied(), None);
        assert_eq!(v.expression(), Some("id * 2"));
        assert_eq!(v.sql(&g, Some("g")), "(id * 2)");
        assert_eq!(v.describe(&g), "expression id * 2");
        assert_eq!(v.summary(&g), "expr id * 2");
    }

    #[test]
    fn targets_tell_constants_and_direct_copies() {
        let g = green();
        let int = "\"pg_catalog\".\"int4\"";
        assert!(target(Value::Expr("'bridge'".into()), int).is_constant());
        assert!(!target(Value::Expr("id".into()), int).is_constant());
        let copy = target(Value::Green(0), "pg_catalog.int4");
        assert!(copy.copies(0) && !copy.copies(1));
        assert!(copy.copies_same_type(&g));
        assert!(!target(Value::Green(0), "\"pg_catalog\".\"int8\"").copies_same_type(&g));
        assert!(!target(Value::Expr("id".into()), int).copies_same_type(&g));
    }
}
