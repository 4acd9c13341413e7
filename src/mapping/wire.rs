//! Which form green's values travel in: binary (`binary 'true'`) or text.
//!
//! With `binary 'true'` green's walsender sends every column whose type has a send function in
//! that form ('b'), the others as text ('t'); the option is per replication session, not per
//! table (`logicalrep_write_tuple` in proto.c, the same in 15 to 18). pgbridge hands a binary
//! value to blue as a binary parameter of the type the text path casts to (green's type, by
//! name, as blue knows it), so blue's receive function reads it where the text path had its
//! input function. That is exact when blue's type of that name reads what green's writes:
//!
//! * built-in types: the same OID and send/receive forms on every server;
//! * enums: `enum_send` writes the label, as text does; domains: their base type's form;
//!   ranges and multiranges: their subtype's, without OIDs;
//! * arrays: their element type's OID is embedded and `array_recv` refuses another, so it is
//!   rewritten to blue's (the element values must travel exactly themselves);
//! * not composites: `record_send` embeds each field's type OID, which `record_recv` checks
//!   against blue's, field by field; not base types from extensions, whose binary forms are
//!   the extension's own (and may change between its versions); not arrays of a type without
//!   a send function (`aclitem[]`), which the walsender cannot send in binary at all.
//!
//! Where a published column is none of these, or green's type and blue's type of the same
//! name are not the same kind of thing (a domain over `int8` on green, over `int4` on blue),
//! the whole stream travels as text, as before; [`Decision`] says which columns made it so.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::sql;

/// OIDs below this are the same on every server (FirstNormalObjectId: initdb's, including
/// the information_schema's).
const FIRST_USER_OID: u32 = 16_384;
/// Nesting deeper than this (a domain over an array of a domain over ...) is not followed.
const MAX_DEPTH: usize = 8;

/// Every type of one server, as far as its binary form is concerned; the same query on
/// both sides, answered in text so the replication connection can run it too.
pub const TYPES_SQL: &str = "SELECT t.oid::int8::text, quote_ident(n.nspname) || '.' || quote_ident(t.typname), \
       t.typtype::text, \
       (CASE WHEN t.typsubscript = 'pg_catalog.array_subscript_handler'::regproc THEN t.typelem ELSE 0 END)::int8::text, \
       t.typbasetype::int8::text, COALESCE(r.rngsubtype, m.rngtypid, 0)::int8::text, \
       (t.typsend <> 0)::text, (t.typreceive <> 0)::text \
     FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
     LEFT JOIN pg_catalog.pg_range r ON r.rngtypid = t.oid \
     LEFT JOIN pg_catalog.pg_range m ON m.rngmultitypid = t.oid \
     WHERE t.typtype <> 'p'";

/// The columns of the tables publication `publication` carries, with their types:
/// `(table, column, type OID)`.
pub fn published_columns_sql(publication: &str) -> String {
    format!(
        "SELECT pt.schemaname || '.' || pt.tablename, a.attname::text, a.atttypid::int8::text \
         FROM pg_catalog.pg_publication_tables pt \
         JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname \
         JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         WHERE pt.pubname = {} ORDER BY 1, a.attnum",
        sql::literal(publication)
    )
}

/// The columns of `tables` (`(schema, name)`), as [`published_columns_sql`] reads them: for
/// `check` before `setup` created the publication.
fn columns_of_sql(tables: &[(String, String)]) -> String {
    let named: Vec<String> = tables
        .iter()
        .map(|(schema, name)| format!("({}, {})", sql::literal(schema), sql::literal(name)))
        .collect();
    format!(
        "SELECT n.nspname || '.' || c.relname, a.attname::text, a.atttypid::int8::text \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         WHERE (n.nspname::text, c.relname::text) IN (VALUES {}) ORDER BY 1, a.attnum",
        named.join(", ")
    )
}

/// One type, as [`TYPES_SQL`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeRow {
    pub oid: u32,
    /// Quoted and schema-qualified.
    pub name: String,
    /// `typtype`: b base, c composite, d domain, e enum, r range, m multirange.
    pub kind: char,
    /// A true array's element type, else 0.
    pub element: u32,
    /// A domain's base type, else 0.
    pub base: u32,
    /// A range's subtype, or a multirange's range type, else 0.
    pub inner: u32,
    pub send: bool,
    pub receive: bool,
}

/// One server's types by OID, with an index by name.
#[derive(Clone, Debug, Default)]
pub struct Types {
    by_oid: HashMap<u32, TypeRow>,
    by_name: HashMap<String, u32>,
}

impl Types {
    /// From [`TYPES_SQL`]'s rows; rows that do not parse are left out (their types then count
    /// as unknown, which keeps the stream in text).
    pub fn from_rows(rows: &[Vec<Option<String>>]) -> Types {
        let mut types = Types::default();
        for row in rows {
            let text = |i: usize| row.get(i).and_then(|v| v.as_deref());
            let number = |i: usize| text(i).and_then(|v| v.parse::<u32>().ok());
            let (Some(oid), Some(name), Some(kind)) = (number(0), text(1), text(2).and_then(|k| k.chars().next()))
            else {
                continue;
            };
            let t = TypeRow {
                oid,
                name: name.to_string(),
                kind,
                element: number(3).unwrap_or(0),
                base: number(4).unwrap_or(0),
                inner: number(5).unwrap_or(0),
                send: text(6) == Some("true"),
                receive: text(7) == Some("true"),
            };
            types.by_name.insert(t.name.clone(), oid);
            types.by_oid.insert(oid, t);
        }
        types
    }

    pub fn get(&self, oid: u32) -> Option<&TypeRow> {
        self.by_oid.get(&oid)
    }

    fn named(&self, name: &str) -> Option<&TypeRow> {
        self.by_name.get(name).and_then(|o| self.by_oid.get(o))
    }

    /// Whether `oid` is a true array (its binary form embeds its element type's OID).
    pub fn is_array(&self, oid: u32) -> bool {
        self.get(oid).is_some_and(|t| t.element != 0)
    }
}

/// Which side a form is read for: green sends, blue receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Green,
    Blue,
}

/// The shape of a type's binary form (`Ok`), compared between the sides, or why it cannot
/// travel exactly in binary (`Err`). `Ok("text")`: green has no send function for it, so
/// the walsender sends it as text even in binary mode.
fn form(types: &Types, oid: u32, side: Side, depth: usize) -> Result<String, String> {
    let t = types
        .get(oid)
        .ok_or_else(|| format!("type OID {oid} is not in the catalog"))?;
    if depth > MAX_DEPTH {
        return Err(format!("{} nests types too deeply to be checked", t.name));
    }
    let usable = match side {
        Side::Green => t.send,
        Side::Blue => t.receive,
    };
    if !usable {
        return match (side, depth) {
            (Side::Green, 0) => Ok("text".into()),
            (Side::Green, _) => Err(format!(
                "{} has no binary output function, so green cannot send it in binary",
                t.name
            )),
            (Side::Blue, _) => Err(format!("{} has no binary input function on blue", t.name)),
        };
    }
    let inner = |oid: u32| form(types, oid, side, depth + 1);
    match t.kind {
        _ if t.element != 0 => Ok(format!("array of {}", inner(t.element)?)),
        'b' if oid < FIRST_USER_OID => Ok(format!("built-in {oid}")),
        'b' => Err(format!(
            "{} is a base type defined by an extension or module, whose binary form is its own and not known to be the same on both servers",
            t.name
        )),
        'e' => Ok("enum".into()),
        'd' => Ok(format!("domain over {}", inner(t.base)?)),
        'r' => Ok(format!("range of {}", inner(t.inner)?)),
        'm' => Ok(format!("multirange of {}", inner(t.inner)?)),
        'c' => Err(format!(
            "{} is a composite type, whose binary form carries each field's type OID, which blue checks against its own",
            t.name
        )),
        other => Err(format!("{} is of kind '{other}'", t.name)),
    }
}

/// Whether green's type `oid` travels exactly in binary to blue's type of the same name:
/// `Ok(())`, or why not.
fn exact(green: &Types, blue: &Types, oid: u32) -> Result<(), String> {
    let g = form(green, oid, Side::Green, 0)?;
    if g == "text" {
        return Ok(());
    }
    let name = &green.get(oid).expect("form found it").name;
    // A type blue lacks cannot be cast to in either form: planning the table says so.
    let Some(b) = blue.named(name) else {
        return Ok(());
    };
    let b = form(blue, b.oid, Side::Blue, 0)?;
    if g == b {
        Ok(())
    } else {
        Err(format!("{name} is {g} on green but {b} on blue"))
    }
}

/// A published column that keeps the stream in text, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextColumn {
    pub table: String,
    pub column: String,
    pub why: String,
}

/// The form of this run's stream.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    /// Ask green for `binary 'true'`.
    pub binary: bool,
    /// `PGBRIDGE_BINARY=off` asked for text.
    pub forced_off: bool,
    /// The published columns that keep the stream in text (empty when binary).
    pub text_columns: Vec<TextColumn>,
    /// Green type OIDs that travel exactly in binary: a Relation message with another type
    /// (a column added since) ends the session, and the next one decides again.
    pub exact: HashSet<u32>,
    /// Green array types (whose values cannot be batched in binary: one array per row).
    pub arrays: HashSet<u32>,
    /// Published tables, by name, in order.
    pub tables: Vec<String>,
    /// Published columns of array types, `(table, column)`.
    pub array_columns: Vec<(String, String)>,
}

impl Decision {
    /// Text, as the switch asks.
    pub fn off() -> Decision {
        Decision {
            forced_off: true,
            ..Decision::default()
        }
    }

    /// From both servers' types and the published columns (`(table, column, type OID)`).
    pub fn new(green: &Types, blue: &Types, columns: &[(String, String, u32)]) -> Decision {
        let exact_types: HashSet<u32> = green
            .by_oid
            .keys()
            .copied()
            .filter(|&o| exact(green, blue, o).is_ok())
            .collect();
        let mut tables = Vec::new();
        let mut text_columns = Vec::new();
        let mut array_columns = Vec::new();
        for (table, column, oid) in columns {
            if tables.last() != Some(table) {
                tables.push(table.clone());
            }
            if green.is_array(*oid) {
                array_columns.push((table.clone(), column.clone()));
            }
            if let Err(why) = exact(green, blue, *oid) {
                text_columns.push(TextColumn {
                    table: table.clone(),
                    column: column.clone(),
                    why,
                });
            }
        }
        let arrays = green
            .by_oid
            .values()
            .filter(|t| t.element != 0)
            .map(|t| t.oid)
            .collect();
        Decision {
            binary: text_columns.is_empty(),
            forced_off: false,
            text_columns,
            exact: exact_types,
            arrays,
            tables,
            array_columns,
        }
    }

    /// What a table travels as, and why, one line for `check`.
    pub fn describe(&self, table: &str) -> String {
        if self.forced_off {
            return "text (PGBRIDGE_BINARY=off)".into();
        }
        let own: Vec<String> = self
            .text_columns
            .iter()
            .filter(|c| c.table == table)
            .map(|c| format!("column {}: {}", c.column, c.why))
            .collect();
        if !own.is_empty() {
            return format!("text, and so is the whole stream: {}", own.join("; "));
        }
        if !self.binary {
            let first = self.text_columns.first().map_or(String::new(), |c| c.table.clone());
            return format!("text (green sends one form for the whole stream, and table {first} needs text)");
        }
        let arrays: Vec<&str> = self
            .array_columns
            .iter()
            .filter(|(t, _)| t == table)
            .map(|(_, c)| c.as_str())
            .collect();
        if arrays.is_empty() {
            "binary".into()
        } else {
            format!(
                "binary; a backlog of its rows is applied one statement per row, not in batches, as it has array \
                 columns ({}), which a batch's arrays cannot hold in binary",
                arrays.join(", ")
            )
        }
    }

    /// The published tables by what they travel as, for `check`.
    pub fn by_table(&self) -> BTreeMap<String, String> {
        self.tables.iter().map(|t| (t.clone(), self.describe(t))).collect()
    }
}

/// Green's published columns from [`published_columns_sql`]'s rows.
pub fn columns_from_rows(rows: &[Vec<Option<String>>]) -> Vec<(String, String, u32)> {
    rows.iter()
        .filter_map(|row| {
            let text = |i: usize| row.get(i).and_then(|v| v.clone());
            Some((text(0)?, text(1)?, text(2)?.parse().ok()?))
        })
        .collect()
}

/// Blue's types, for [`Decision::new`].
pub async fn blue_types(blue: &tokio_postgres::Client) -> crate::error::Result<Types> {
    types_on(blue, "blue").await
}

/// The types of the server `client` is connected to (`side` names it in an error).
pub async fn types_on(client: &tokio_postgres::Client, side: &str) -> crate::error::Result<Types> {
    let messages = client
        .simple_query(TYPES_SQL)
        .await
        .map_err(|e| crate::error::Error::postgres(format!("reading types on {side}"), &e))?;
    Ok(Types::from_rows(&simple_rows(messages)))
}

/// The columns `columns_sql` ([`published_columns_sql`], or the tables `setup` would publish)
/// reads on green.
pub async fn green_columns(
    green: &tokio_postgres::Client,
    columns_sql: &str,
) -> crate::error::Result<Vec<(String, String, u32)>> {
    let messages = green
        .simple_query(columns_sql)
        .await
        .map_err(|e| crate::error::Error::postgres("reading the published columns on green", &e))?;
    Ok(columns_from_rows(&simple_rows(messages)))
}

/// The decision `run` would take now, for `check`: over the published columns, or before the
/// publication exists over the columns of `tables` (the ones `setup` would publish).
pub async fn review(
    config: &crate::config::Config,
    green: &tokio_postgres::Client,
    blue: &tokio_postgres::Client,
    tables: &[(String, String)],
    publication_exists: bool,
) -> crate::error::Result<Decision> {
    let columns_sql = match publication_exists {
        true => published_columns_sql(&config.publication),
        false if tables.is_empty() => return Ok(Decision::new(&Types::default(), &Types::default(), &[])),
        false => columns_of_sql(tables),
    };
    let columns = green_columns(green, &columns_sql).await?;
    if !config.switches.binary {
        let mut off = Decision::off();
        off.tables = columns.iter().map(|(t, _, _)| t.clone()).collect();
        off.tables.dedup();
        return Ok(off);
    }
    Ok(Decision::new(
        &types_on(green, "green").await?,
        &blue_types(blue).await?,
        &columns,
    ))
}

/// Rows of a simple query on a tokio-postgres client, as text.
fn simple_rows(messages: Vec<tokio_postgres::SimpleQueryMessage>) -> Vec<Vec<Option<String>>> {
    messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                Some((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(oid: u32, name: &str, kind: char, element: u32, base: u32, inner: u32, send: bool) -> Vec<Option<String>> {
        [
            oid.to_string(),
            name.to_string(),
            kind.to_string(),
            element.to_string(),
            base.to_string(),
            inner.to_string(),
            send.to_string(),
            send.to_string(),
        ]
        .into_iter()
        .map(Some)
        .collect()
    }

    /// Built-ins plus user types at `offset` (their OIDs differ between servers).
    fn server(offset: u32, domain_base: u32) -> Types {
        Types::from_rows(&[
            row(23, "pg_catalog.int4", 'b', 0, 0, 0, true),
            row(20, "pg_catalog.int8", 'b', 0, 0, 0, true),
            row(1007, "pg_catalog._int4", 'b', 23, 0, 0, true),
            row(1033, "pg_catalog.aclitem", 'b', 0, 0, 0, false),
            row(1034, "pg_catalog._aclitem", 'b', 1033, 0, 0, true),
            row(offset, "public.mood", 'e', 0, 0, 0, true),
            row(offset + 1, "public._mood", 'b', offset, 0, 0, true),
            row(offset + 2, "public.pair", 'c', 0, 0, 0, true),
            row(offset + 3, "public.posint", 'd', 0, domain_base, 0, true),
            row(offset + 4, "public.citext", 'b', 0, 0, 0, true),
            row(offset + 5, "public.moodrange", 'r', 0, 0, offset, true),
        ])
    }

    fn decide(columns: &[(&str, u32)]) -> Decision {
        let cols: Vec<(String, String, u32)> = columns
            .iter()
            .map(|(c, o)| ("public.t".to_string(), c.to_string(), *o))
            .collect();
        Decision::new(&server(16_400, 23), &server(20_000, 23), &cols)
    }

    #[test]
    fn built_ins_enums_domains_ranges_and_their_arrays_travel_in_binary() {
        let d = decide(&[
            ("a", 23),
            ("b", 1007),
            ("m", 16_400),
            ("ms", 16_401),
            ("p", 16_403),
            ("r", 16_405),
        ]);
        assert!(d.binary, "{:?}", d.text_columns);
        assert!(
            d.describe("public.t").starts_with("binary; a backlog"),
            "{}",
            d.describe("public.t")
        );
        assert!(d.describe("public.t").contains("(b, ms)"), "{}", d.describe("public.t"));
        assert!(d.arrays.contains(&16_401) && d.arrays.contains(&1007) && !d.arrays.contains(&23));
        assert!(d.exact.contains(&16_400));
    }

    #[test]
    fn a_type_without_send_travels_as_text_inside_a_binary_stream() {
        assert!(decide(&[("acl", 1033)]).binary);
    }

    #[test]
    fn composites_extension_types_and_arrays_green_cannot_send_keep_the_stream_in_text() {
        for (oid, expect) in [
            (16_402, "composite type"),
            (16_404, "defined by an extension"),
            (1034, "no binary output function"),
        ] {
            let d = decide(&[("a", 23), ("x", oid)]);
            assert!(!d.binary, "{oid}");
            assert_eq!(d.text_columns.len(), 1);
            assert!(d.describe("public.t").contains(expect), "{}", d.describe("public.t"));
            assert!(!d.exact.contains(&oid));
        }
    }

    #[test]
    fn a_domain_over_another_base_on_blue_keeps_the_stream_in_text() {
        let cols = vec![("public.t".to_string(), "p".to_string(), 16_403)];
        let d = Decision::new(&server(16_400, 20), &server(20_000, 23), &cols);
        assert!(!d.binary);
        assert_eq!(
            d.text_columns[0].why,
            "public.posint is domain over built-in 20 on green but domain over built-in 23 on blue"
        );
    }

    #[test]
    fn other_tables_name_the_table_that_needs_text() {
        let cols = vec![
            ("public.a".to_string(), "id".to_string(), 23),
            ("public.b".to_string(), "p".to_string(), 16_402),
        ];
        let d = Decision::new(&server(16_400, 23), &server(20_000, 23), &cols);
        assert_eq!(d.tables, ["public.a", "public.b"]);
        assert!(d.describe("public.a").contains("table public.b needs text"));
        assert!(Decision::off().describe("public.a").contains("PGBRIDGE_BINARY=off"));
    }
}
