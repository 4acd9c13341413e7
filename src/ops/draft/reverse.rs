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
use super::forward::{cast_comment, cast_feed, unfed};
use super::model::{ColumnDraft, Feed, Line, TableDraft, Tag};
use super::names::{cast_source, Quoter};

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
pub fn draft(green: &Table, blue: &Table, file: Option<&MappingFile>, q: &Quoter) -> TableDraft {
    let mut d = TableDraft {
        target: green.id(),
        source: blue.id(),
        ..TableDraft::default()
    };
    let origin = file.map_or_else(|| "the by-name mapping".to_string(), |f| f.path.display().to_string());
    d.header.push(format!(
        "Reverse of {origin}: for a bridge from blue back to green (its [green] is blue, its [blue] is green)."
    ));
    if d.target != d.source {
        d.source_comments.push(format!("inverts the table rename of {origin}"));
        d.lines.push(Line::new(
            Tag::Rename,
            format!("table {} <- {}", green.qualified(), blue.qualified()),
        ));
    }
    let feeds = forward_feeds(green, blue, file);
    let mut used: Vec<&str> = Vec::new();
    for g in green.columns.iter().filter(|g| !g.generated) {
        if let Some(c) = invert_column(g, &feeds, file, q, &mut d.lines, &mut used) {
            d.columns.push(c);
        }
    }
    for (b, how) in &feeds {
        if used.contains(&b.name.as_str()) {
            continue;
        }
        let why = match how {
            Forward::Unfed => "blue-only: green has no place for it".to_string(),
            Forward::Copy(g) => format!("another copy of green's {g}"),
            Forward::Expr(e) => format!("the forward mapping fills it with {e}; not carried back"),
        };
        d.lines.push(Line::new(Tag::Ignore, format!("{}: {why}", b.name)));
        d.ignore.push((b.name.clone(), why));
    }
    if let Some(f) = file {
        d.key = f.key.iter().map(|(b, g)| (g.clone(), b.clone())).collect();
        if let Some(filter) = &f.filter {
            let why = format!(
                "the forward mapping carries only green rows where {filter}; write the condition over blue's \
                 columns that picks the rows to carry back (where = ...), or remove [filter] to carry every row"
            );
            d.lines.push(Line::new(Tag::Decide, format!("filter: {why}")));
            d.filter_decision = Some(why);
        }
    }
    d
}

/// How green column `g` is fed back, `None` when by name; records the blue columns it reads
/// in `used`.
fn invert_column<'a>(
    g: &Column,
    feeds: &[(&'a Column, Forward<'a>)],
    file: Option<&MappingFile>,
    q: &Quoter,
    lines: &mut Vec<Line>,
    used: &mut Vec<&'a str>,
) -> Option<ColumnDraft> {
    let copy = feeds
        .iter()
        .filter(|(_, how)| matches!(how, Forward::Copy(n) if *n == g.name))
        .map(|(b, _)| *b)
        .min_by_key(|b| b.name != g.name);
    if let Some(b) = copy {
        used.push(b.name.as_str());
        if b.declared == g.declared {
            if b.name == g.name {
                return None;
            }
            lines.push(Line::new(
                Tag::Rename,
                format!("{} <- {} (inverts the rename)", g.name, b.name),
            ));
            return Some(column(&g.name, Feed::From(b.name.clone()), Vec::new()));
        }
        let (comment, _) = cast_comment(&b.declared, &g.declared);
        lines.push(Line::new(Tag::Cast, format!("{} <- {}: {comment}", g.name, b.name)));
        return Some(column(&g.name, cast_feed(q, b, g), vec![comment]));
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
        let mut c = unfed(g, "green", lines);
        let why = if ignored {
            "the forward mapping ignores it, so blue has no copy"
        } else {
            "no blue column is a copy of it"
        };
        c.comments.insert(0, why.to_string());
        if let Feed::Decide(text) = &mut c.feed {
            *text = format!("{why}; {text}");
        }
        return Some(c);
    }
    let forward: Vec<String> = readers.iter().map(|(b, e)| format!("{} = {e}", b.name)).collect();
    used.extend(readers.iter().map(|(b, _)| b.name.as_str()));
    let why = format!(
        "the forward mapping computes blue's {}; write the inverse (an expr over blue's columns) or omit it",
        forward.join(" and ")
    );
    lines.push(Line::new(Tag::Decide, format!("columns.{}: {why}", g.name)));
    Some(column(
        &g.name,
        Feed::Decide(why),
        vec![format!("forward: {}", forward.join("; "))],
    ))
}

fn column(name: &str, feed: Feed, comments: Vec<String>) -> ColumnDraft {
    ColumnDraft {
        name: name.to_string(),
        feed,
        comments,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::mapping::file;

    fn col(name: &str, declared: &str) -> Column {
        Column {
            name: name.into(),
            declared: declared.into(),
            cast_type: declared.into(),
            not_null: false,
            has_default: false,
            generated: false,
            key: false,
        }
    }

    fn table(name: &str, cols: Vec<Column>) -> Table {
        Table {
            schema: "public".into(),
            name: name.into(),
            columns: cols,
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
        let d = draft(&green, &blue, Some(&forward), &Quoter::default());
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
        let d = draft(&green, &blue, Some(&forward), &Quoter::default());
        assert_eq!(d.columns.len(), 1);
        assert_eq!(d.columns[0].feed, Feed::Expr("CAST(quantity AS numeric(10,2))".into()));
        assert!(d.ignore.is_empty());
        assert_eq!(d.decisions(), 0);
    }
}
