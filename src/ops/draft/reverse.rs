//! The reverse draft of one table: a bridge from blue back to green (target green, source
//! blue), inverted from the forward mapping file (or the by-name mapping). Pure.
//!
//! A copy inverts to a copy (a rename to the rename back), a cast written by `draft` to the
//! cast back; a green column the forward mapping ignores must now be fed (omitted when green
//! has a default, else a decision); a general expression and a filter cannot be inverted by
//! a program and are left to a person with the forward text in the marker.

use crate::mapping::expression;
use crate::mapping::file::{Feed as FileFeed, MappingFile};

use super::catalog::{Column, Table};
use super::forward::{convert, null_note, unfed, Conversion, Ctx};
use super::model::{ColumnDraft, Feed, Line, TableDraft, Tag};
use super::names::{cast_source, one_line, shown};

/// How the forward mapping feeds one blue column.
enum Forward<'a> {
    /// A copy (or a cast written by draft) of this green column.
    Copy(&'a str),
    /// Any other expression.
    Expr(&'a str),
    /// Omitted, or blue-only and fed by nothing.
    Unfed,
}

/// The forward feed of each writable blue column of `blue`.
fn forward_feeds<'a>(
    green: &'a Table,
    blue: &'a Table,
    file: Option<&'a MappingFile>,
) -> Vec<(&'a Column, Forward<'a>)> {
    let named = |n: &str| green.columns.iter().find(|c| c.name == n).map(|c| c.name.as_str());
    blue.columns
        .iter()
        .filter(|b| !b.generated)
        .map(|b| {
            let how = match file.and_then(|f| f.columns.get(&b.name)).map(|s| &s.feed) {
                Some(FileFeed::From(g)) => named(g).map_or(Forward::Expr(g), Forward::Copy),
                Some(FileFeed::Expr(e)) => match cast_source(e).as_deref().and_then(named) {
                    Some(g) => Forward::Copy(g),
                    None => Forward::Expr(e),
                },
                Some(FileFeed::Omit) => Forward::Unfed,
                None => named(&b.name).map_or(Forward::Unfed, Forward::Copy),
            };
            (b, how)
        })
        .collect()
}

/// The draft for green table `green` fed back from blue table `blue`, inverting `file` (the
/// forward mapping; `None` when the tables map by name).
pub fn draft(ctx: &Ctx, green: &Table, blue: &Table, file: Option<&MappingFile>) -> TableDraft {
    let mut d = TableDraft {
        target: green.id(),
        source: blue.id(),
        ..TableDraft::default()
    };
    let origin = file.map_or_else(
        || "the by-name mapping".to_string(),
        |f| one_line(&f.path.display().to_string()),
    );
    d.header.push(format!(
        "Reverse of {origin}: for a bridge from blue back to green (its [green] is blue, its [blue] is green)."
    ));
    if d.target != d.source {
        d.source_comments.push(format!("inverts the table rename of {origin}"));
        d.lines.push(Line::new(
            Tag::Rename,
            format!("table {} <- {}", green.shown(), blue.shown()),
        ));
    }
    let feeds = forward_feeds(green, blue, file);
    let mut used: Vec<&str> = Vec::new();
    for g in green.columns.iter().filter(|g| !g.generated) {
        if let Some(c) = invert_column(ctx, green, g, &feeds, file, &mut d.lines, &mut used) {
            d.columns.push(c);
        }
    }
    for (b, how) in &feeds {
        if used.contains(&b.name.as_str()) {
            continue;
        }
        let why = match how {
            Forward::Unfed => "blue-only: green has no place for it".to_string(),
            Forward::Copy(g) => format!("a copy of green's {}, which is fed back from another column", shown(g)),
            Forward::Expr(e) => format!("the forward mapping fills it with {}; not carried back", one_line(e)),
        };
        d.lines
            .push(Line::new(Tag::Ignore, format!("{}: {why}", shown(&b.name))));
        d.ignore.push((b.name.clone(), why));
    }
    if let Some(f) = file {
        d.key = f.key.iter().map(|(b, g)| (g.clone(), b.clone())).collect();
        if let Some(filter) = &f.filter {
            let why = format!(
                "the forward mapping carries only green rows where {}; write the condition over blue's \
                 columns that picks the rows to carry back (where = ...), or remove [filter] to carry every row",
                one_line(filter)
            );
            d.lines.push(Line::new(Tag::Decide, format!("filter: {why}")));
            d.filter_decision = Some(why);
        }
    }
    d
}

/// How green column `g` (of `green`) is fed back, `None` when by name; records the blue
/// columns it reads in `used`.
fn invert_column<'a>(
    ctx: &Ctx,
    green: &Table,
    g: &Column,
    feeds: &[(&'a Column, Forward<'a>)],
    file: Option<&MappingFile>,
    lines: &mut Vec<Line>,
    used: &mut Vec<&'a str>,
) -> Option<ColumnDraft> {
    let copy = feeds
        .iter()
        .filter(|(_, how)| matches!(how, Forward::Copy(n) if *n == g.name))
        .map(|(b, _)| *b)
        .min_by_key(|b| b.name != g.name);
    let (gn, table) = (shown(&g.name), green.id());
    if let Some(b) = copy {
        used.push(b.name.as_str());
        return invert_copy(ctx, &table, g, b, lines);
    }
    let ignored = file.is_some_and(|f| f.ignore.contains(&g.name));
    let readers: Vec<(&'a Column, &'a str)> = feeds
        .iter()
        .filter_map(|(b, how)| match how {
            Forward::Expr(e) if expression::identifiers(e).contains(&g.name) => Some((*b, *e)),
            _ => None,
        })
        .collect();
    if readers.is_empty() {
        let namesake = feeds.iter().find(|(b, _)| b.name == g.name);
        let why = match namesake {
            Some((_, Forward::Copy(other))) => format!(
                "blue's {gn} is not a copy of it: the forward mapping fills blue's {gn} from green's {}",
                shown(other)
            ),
            Some(_) => format!("blue's {gn} is not a copy of it (the forward mapping fills it otherwise)"),
            None if ignored => "the forward mapping ignores it, so blue has no copy".to_string(),
            None => "no blue column is a copy of it".to_string(),
        };
        return Some(unfed(g, "green", Some(why), &[], lines));
    }
    let forward: Vec<String> = readers
        .iter()
        .map(|(b, e)| format!("{} = {}", shown(&b.name), one_line(e)))
        .collect();
    used.extend(readers.iter().map(|(b, _)| b.name.as_str()));
    let why = format!(
        "the forward mapping computes blue's {}; write the inverse (an expr over blue's columns) or omit it",
        forward.join(" and ")
    );
    lines.push(Line::new(Tag::Decide, format!("columns.{gn}: {why}")));
    Some(ColumnDraft::new(
        &g.name,
        Feed::Decide(why),
        vec![format!("forward: {}", forward.join("; "))],
    ))
}

/// Green column `g` fed back from `b`, which the forward mapping copies (or casts) it into.
fn invert_copy(
    ctx: &Ctx,
    table: &(String, String),
    g: &Column,
    b: &Column,
    lines: &mut Vec<Line>,
) -> Option<ColumnDraft> {
    let (gn, bn) = (shown(&g.name), shown(&b.name));
    let note = null_note(ctx, b, g);
    let noted = |text: String| match &note {
        Some(n) => format!("{text}; {n}"),
        None => text,
    };
    match convert(ctx, table, b, g) {
        Conversion::Copy if b.name == g.name => {
            if let Some(n) = &note {
                lines.push(Line::new(Tag::Note, format!("{gn}: {n}")));
            }
            None
        }
        Conversion::Copy => {
            lines.push(Line::new(
                Tag::Rename,
                noted(format!("{gn} <- {bn} (inverts the rename)")),
            ));
            Some(ColumnDraft::new(
                &g.name,
                Feed::From(b.name.clone()),
                note.into_iter().collect(),
            ))
        }
        Conversion::Convert { feed, comment, .. } => {
            lines.push(Line::new(Tag::Cast, noted(format!("{gn} <- {bn}: {comment}"))));
            let mut comments = vec![comment];
            comments.extend(note);
            Some(ColumnDraft::new(&g.name, feed, comments))
        }
        Conversion::Decide(why) => {
            let why = noted(format!("blue's {bn} feeds it back, but {why}"));
            lines.push(Line::new(Tag::Decide, format!("columns.{gn}: {why}")));
            Some(ColumnDraft::new(&g.name, Feed::Decide(why), Vec::new()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::mapping::file;
    use crate::ops::draft::forward::with_ctx;

    fn col(name: &str, declared: &str) -> Column {
        Column::test(name, declared)
    }

    fn table(name: &str, cols: Vec<Column>) -> Table {
        Table {
            schema: "public".into(),
            name: name.into(),
            columns: cols,
            withheld: Vec::new(),
        }
    }

    /// The example's customers mapping, inverted.
    #[test]
    fn renames_invert_ignores_and_expressions_need_a_person() {
        let mut prefs = col("preferences", "jsonb");
        prefs.has_default = true;
        let green = table(
            "customers",
            vec![
                col("id", "bigint"),
                col("email_address", "text"),
                col("location_structured", "jsonb"),
                prefs,
                col("nick", "text"),
            ],
        );
        let blue = table(
            "customers",
            vec![
                col("id", "bigint"),
                col("email", "text"),
                col("location", "text"),
                col("legacy", "text"),
            ],
        );
        let forward = file::parse(
            Path::new("mappings/customers.toml"),
            "target = \"customers\"\nignore = [\"preferences\", \"nick\"]\n[columns]\nemail = { from = \"email_address\" }\n\
             location = { expr = \"location_structured ->> 'city'\" }\nlegacy = { omit = true }\n[filter]\nwhere = \"id > 0\"\n",
        )
        .unwrap();
        let d = with_ctx(true, |c| draft(c, &green, &blue, Some(&forward)));
        let feed = |n: &str| d.columns.iter().find(|c| c.name == n).map(|c| c.feed.clone());
        assert_eq!(feed("email_address"), Some(Feed::From("email".into())));
        assert!(
            matches!(feed("location_structured"), Some(Feed::Decide(w)) if w.contains("location = location_structured ->> 'city'"))
        );
        assert_eq!(feed("preferences"), Some(Feed::Omit));
        assert!(matches!(feed("nick"), Some(Feed::Decide(w)) if w.contains("ignores it")));
        assert_eq!(feed("id"), None);
        assert_eq!(d.ignore.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["legacy"]);
        assert!(d.filter_decision.as_deref().is_some_and(|f| f.contains("id > 0")));
        assert_eq!(d.decisions(), 3);
    }

    #[test]
    fn casts_invert_to_the_cast_back() {
        let green = table("jobs", vec![col("id", "bigint"), col("qty", "numeric(10,2)")]);
        let blue = table("jobs", vec![col("id", "bigint"), col("quantity", "integer")]);
        let forward = file::parse(
            Path::new("m/jobs.toml"),
            "target = \"jobs\"\n[columns]\nquantity = { expr = \"CAST(qty AS integer)\" }\n",
        )
        .unwrap();
        let d = with_ctx(true, |c| draft(c, &green, &blue, Some(&forward)));
        assert_eq!(d.columns.len(), 1);
        assert_eq!(d.columns[0].feed, Feed::Expr("CAST(quantity AS numeric(10,2))".into()));
        assert!(d.ignore.is_empty());
        assert_eq!(d.decisions(), 0);
    }

    /// Tester's finding 10: blue's x filled from green's id is not a copy of green's x; the
    /// reverse says so instead of calling x green-only.
    #[test]
    fn a_namesake_fed_from_another_column_is_not_called_green_only() {
        let green = table("t", vec![col("id", "bigint"), col("x", "integer")]);
        let blue = table("t", vec![col("id", "bigint"), col("x", "integer")]);
        let forward = file::parse(
            Path::new("m/t.toml"),
            "target = \"t\"\nignore = [\"x\"]\n[columns]\nx = { expr = \"CAST(id AS integer)\" }\n",
        )
        .unwrap();
        let d = with_ctx(true, |c| draft(c, &green, &blue, Some(&forward)));
        let x = d.columns.iter().find(|c| c.name == "x").unwrap();
        assert!(
            matches!(&x.feed, Feed::Decide(w) if w.starts_with("blue's x is not a copy of it") && !w.contains("green-only")),
            "{x:?}"
        );
        assert!(
            d.ignore.iter().all(|(_, why)| !why.contains("green-only")),
            "{:?}",
            d.ignore
        );
    }
}
