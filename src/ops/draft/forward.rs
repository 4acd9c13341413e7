//! The forward draft of one table: how green's table (as published) feeds blue's. Pure.
//!
//! Same-named columns of the same type stay implicit; a type change gets an explicit cast,
//! commented with what it can lose; a green-only and a blue-only column whose names are alike
//! and whose types convert are proposed as a rename, marked as a guess; green-only columns are
//! ignored; blue-only columns with a default are omitted; the rest is left to a person.

use super::catalog::{Column, Table};
use super::model::{ColumnDraft, Feed, Line, TableDraft, Tag};
use super::names::{similarity, Quoter};
use super::pairing::{self, Candidate};
use crate::mapping::lossy::{classify, Cast};

/// Names at least this alike may be a rename.
pub const ALIKE: f64 = 0.5;

/// What a cast from `from` to `to` does, for a comment, and whether it may lose information.
pub fn cast_comment(from: &str, to: &str) -> (String, bool) {
    match classify(from, to) {
        Cast::Same => (format!("type {from} -> {to}: the same values"), false),
        Cast::Widening => (format!("type {from} -> {to}: every value fits"), false),
        Cast::Narrowing(why) => (
            format!("LOSSY cast {from} -> {to}: {why}; `pgbridge check --data` lists rows that do not fit"),
            true,
        ),
        Cast::Unknown => (
            format!("MAY LOSE: cast {from} -> {to}: pgbridge cannot tell whether every value converts unchanged"),
            true,
        ),
    }
}

/// How `target` is fed from `source` of another type: an explicit cast, or, for a key
/// column (which blue finds rows by, and must be a plain copy), the column itself, converted
/// on assignment.
pub fn cast_feed(q: &Quoter, source: &Column, target: &Column) -> Feed {
    if target.key {
        Feed::From(source.name.clone())
    } else {
        Feed::Expr(q.cast(&source.name, &target.cast_type))
    }
}

/// Whether values of `from` can feed a column of `to` at all (for a guessed rename).
fn converts(from: &str, to: &str) -> bool {
    from == to || classify(from, to) != Cast::Unknown
}

/// The draft for blue table `blue` fed by green table `green` (its published columns);
/// `renamed`: why green's table is taken for a renamed blue table, when it is.
pub fn draft(green: &Table, blue: &Table, q: &Quoter, renamed: Option<&str>) -> TableDraft {
    let mut d = TableDraft {
        target: blue.id(),
        source: green.id(),
        ..TableDraft::default()
    };
    if let Some(why) = renamed {
        d.source_comments.push(format!(
            "guess: green table {} is blue's {} renamed ({why})",
            green.qualified(),
            blue.qualified()
        ));
        d.lines.push(Line::new(
            Tag::Rename,
            format!("table {} <- {} (guess: {why})", blue.qualified(), green.qualified()),
        ));
    }
    let writable: Vec<&Column> = blue.columns.iter().filter(|c| !c.generated).collect();
    let mut entries: Vec<(usize, ColumnDraft)> = Vec::new();
    for (at, b) in writable.iter().enumerate() {
        if let Some(g) = green.column(&b.name).filter(|g| g.declared != b.declared) {
            let (comment, _) = cast_comment(&g.declared, &b.declared);
            d.lines.push(Line::new(Tag::Cast, format!("{}: {comment}", b.name)));
            entries.push((at, column(&b.name, cast_feed(q, g, b), vec![comment])));
        }
    }
    let green_only: Vec<&Column> = green
        .columns
        .iter()
        .filter(|g| !writable.iter().any(|b| b.name == g.name))
        .collect();
    let blue_only: Vec<(usize, &Column)> = writable
        .iter()
        .enumerate()
        .filter(|(_, b)| green.column(&b.name).is_none())
        .map(|(i, b)| (i, *b))
        .collect();
    let (pairs, ties) = pairing::pair(rename_candidates(&green_only, &blue_only));
    for &(gi, bi) in &pairs {
        let (at, b) = blue_only[bi];
        entries.push((at, renamed_column(q, green_only[gi], b, &mut d.lines)));
    }
    let mut undecided = Vec::new();
    for tie in &ties {
        let (at, b) = blue_only[tie.right];
        let names: Vec<&str> = tie.lefts.iter().map(|&g| green_only[g].name.as_str()).collect();
        undecided.extend(tie.lefts.iter().copied());
        let why = format!(
            "blue-only column; green's {} fit it equally well (names alike, types convert): feed it from one \
             (and ignore the others) or omit it",
            names.join(" and ")
        );
        d.lines
            .push(Line::new(Tag::Decide, format!("columns.{}: {why}", b.name)));
        entries.push((at, column(&b.name, Feed::Decide(why), Vec::new())));
    }
    for (gi, g) in green_only.iter().enumerate() {
        if !pairs.iter().any(|&(p, _)| p == gi) && !undecided.contains(&gi) {
            let why = format!("green-only ({}): a rollback to blue does not carry it", g.declared);
            d.lines.push(Line::new(Tag::Ignore, format!("{}: {why}", g.name)));
            d.ignore.push((g.name.clone(), why));
        }
    }
    for (bi, &(at, b)) in blue_only.iter().enumerate() {
        if !pairs.iter().any(|&(_, p)| p == bi) && !ties.iter().any(|t| t.right == bi) {
            entries.push((at, unfed(b, "blue", &mut d.lines)));
        }
    }
    entries.sort_by_key(|(at, _)| *at);
    d.columns = entries.into_iter().map(|(_, c)| c).collect();
    d
}

fn column(name: &str, feed: Feed, comments: Vec<String>) -> ColumnDraft {
    ColumnDraft {
        name: name.to_string(),
        feed,
        comments,
    }
}

/// Green-only and blue-only columns that may be one column renamed: names alike and types
/// that convert, or else the only two left, of the same type.
fn rename_candidates(green_only: &[&Column], blue_only: &[(usize, &Column)]) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (gi, g) in green_only.iter().enumerate() {
        for (bi, (_, b)) in blue_only.iter().enumerate() {
            let alike = similarity(&g.name, &b.name);
            if alike >= ALIKE && converts(&g.declared, &b.declared) {
                let same = if g.declared == b.declared { 0.05 } else { 0.0 };
                out.push(Candidate {
                    left: gi,
                    right: bi,
                    score: alike + same,
                });
            }
        }
    }
    if out.is_empty()
        && green_only.len() == 1
        && blue_only.len() == 1
        && green_only[0].declared == blue_only[0].1.declared
    {
        out.push(Candidate {
            left: 0,
            right: 0,
            score: 0.1,
        });
    }
    out
}

/// Blue column `b` fed by green column `g` under another name (a guess).
fn renamed_column(q: &Quoter, g: &Column, b: &Column, lines: &mut Vec<Line>) -> ColumnDraft {
    let why = if similarity(&g.name, &b.name) >= ALIKE {
        "names alike"
    } else {
        "the only unmatched columns, of the same type"
    };
    let mut comments = vec![format!("guess: renamed from {} ({why}); check it", g.name)];
    let feed = if g.declared == b.declared {
        lines.push(Line::new(
            Tag::Rename,
            format!("{} <- {} (guess: {why}, both {})", b.name, g.name, b.declared),
        ));
        Feed::From(g.name.clone())
    } else {
        let (comment, _) = cast_comment(&g.declared, &b.declared);
        lines.push(Line::new(
            Tag::Rename,
            format!("{} <- {} (guess: {why}); {comment}", b.name, g.name),
        ));
        comments.push(comment);
        cast_feed(q, g, b)
    };
    column(&b.name, feed, comments)
}

/// A target column nothing on the other side feeds (`side` names the target): omitted when
/// the target's default fills it, else left to a person.
pub fn unfed(c: &Column, side: &str, lines: &mut Vec<Line>) -> ColumnDraft {
    let (feed, comments) = if c.has_default {
        let why = format!("{side}-only: {side}'s default fills the rows the bridge inserts");
        lines.push(Line::new(Tag::Omit, format!("{}: {why}", c.name)));
        (Feed::Omit, vec![why])
    } else {
        let why = if c.not_null {
            format!(
                "{side}-only column, NOT NULL without a default: rows the bridge inserts would be refused; \
                 feed it (from/expr), or give it a default on {side} and omit it"
            )
        } else {
            format!(
                "{side}-only column without a default: rows the bridge inserts would get NULL; feed it \
                 (from/expr), or omit it if NULL is right"
            )
        };
        lines.push(Line::new(Tag::Decide, format!("columns.{}: {why}", c.name)));
        (Feed::Decide(why), Vec::new())
    };
    column(&c.name, feed, comments)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn renames_ignores_omits_and_decisions() {
        let mut id = col("id", "bigint");
        id.key = true;
        let mut legacy = col("legacy", "text");
        legacy.has_default = true;
        let green = table(
            "customers",
            vec![
                id.clone(),
                col("email_address", "text"),
                col("preferences", "jsonb"),
                col("name", "text"),
            ],
        );
        let blue = table(
            "customers",
            vec![
                id,
                col("email", "text"),
                legacy,
                col("note", "text"),
                col("name", "text"),
            ],
        );
        let d = draft(&green, &blue, &Quoter::default(), None);
        let feeds: Vec<(&str, &Feed)> = d.columns.iter().map(|c| (c.name.as_str(), &c.feed)).collect();
        assert_eq!(feeds[0], ("email", &Feed::From("email_address".into())));
        assert_eq!(feeds[1], ("legacy", &Feed::Omit));
        assert!(matches!(feeds[2], ("note", Feed::Decide(why)) if why.contains("would get NULL")));
        assert_eq!(d.ignore.len(), 1);
        assert_eq!(d.ignore[0].0, "preferences");
        assert!(d.columns[0].comments[0].starts_with("guess: renamed from email_address"));
        assert_eq!(d.decisions(), 1);
    }

    #[test]
    fn two_equally_likely_sources_are_a_decision_naming_both() {
        let green = table(
            "t",
            vec![col("id", "int"), col("phone_home", "text"), col("phone_work", "text")],
        );
        let blue = table("t", vec![col("id", "int"), col("phone", "text")]);
        let d = draft(&green, &blue, &Quoter::default(), None);
        assert!(
            matches!(&d.columns[0].feed, Feed::Decide(why) if why.contains("phone_home and phone_work")),
            "{:?}",
            d.columns
        );
        assert!(
            d.ignore.is_empty(),
            "the candidates are not ignored behind the person's back"
        );
    }

    #[test]
    fn same_named_columns_of_another_type_get_a_cast_key_columns_a_copy() {
        let mut gid = col("id", "integer");
        gid.key = true;
        let mut bid = col("id", "bigint");
        bid.key = true;
        let green = table("jobs", vec![gid, col("Qty", "numeric(10,2)")]);
        let blue = table("jobs", vec![bid, col("Qty", "integer")]);
        let d = draft(&green, &blue, &Quoter::default(), None);
        assert_eq!(d.columns[0].feed, Feed::From("id".into()));
        assert_eq!(d.columns[1].feed, Feed::Expr("CAST(\"Qty\" AS integer)".into()));
        assert!(d.columns[1].comments[0].contains("numeric(10,2) -> integer"));
    }

    #[test]
    fn identical_tables_need_no_file() {
        let t = table("t", vec![col("id", "int"), col("v", "text")]);
        assert!(!draft(&t, &t, &Quoter::default(), None).needed());
    }
}
