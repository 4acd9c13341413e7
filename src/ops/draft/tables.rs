//! Which green table goes with which blue table, for the whole database: by name, else (a
//! guess) the unmatched tables whose columns are most alike. Pure.

use std::collections::{BTreeMap, BTreeSet};

use crate::mapping::file::MappingFile;

use super::catalog::Table;
use super::forward::Ctx;
use super::model::TableDraft;
use super::names::similarity;
use super::pairing::{self, Candidate};
use super::{forward, reverse};

type Tables = BTreeMap<(String, String), Table>;

/// The drafts, the tables that map by name, and what needs a person beyond the files.
#[derive(Debug, Default)]
pub struct Drafted {
    pub drafts: Vec<TableDraft>,
    /// Tables (qualified) whose by-name mapping covers them: no file.
    pub same: Vec<String>,
    /// Tables no file can settle (no counterpart, or several equally likely): a person must.
    pub attention: Vec<String>,
    /// Worth knowing, nothing to do.
    pub notes: Vec<String>,
}

/// How alike two tables' columns are: the share of same-named columns.
fn columns_alike(g: &Table, b: &Table) -> (f64, usize) {
    let common = g.columns.iter().filter(|c| b.column(&c.name).is_some()).count();
    let most = g.columns.len().max(b.columns.len()).max(1);
    (common as f64 / most as f64, common)
}

/// The forward drafts: blue tables fed by `green` (as published); `unstreamed`: green tables
/// the stream does not carry (excluded, or not in the publication); `implicit`: same-shaped
/// tables need no file.
pub fn forward(
    ctx: &Ctx,
    green: &[Table],
    unstreamed: &BTreeSet<(String, String)>,
    blue: &Tables,
    implicit: bool,
) -> Drafted {
    let mut out = Drafted::default();
    let by_name: Vec<&Table> = green.iter().filter(|g| blue.contains_key(&g.id())).collect();
    let lonely_green: Vec<&Table> = green.iter().filter(|g| !blue.contains_key(&g.id())).collect();
    let lonely_blue: Vec<&Table> = blue
        .values()
        .filter(|b| !green.iter().any(|g| g.id() == b.id()) && !unstreamed.contains(&b.id()))
        .collect();
    for g in by_name {
        push(&mut out, forward::draft(ctx, g, &blue[&g.id()], None), implicit);
    }
    let mut candidates = Vec::new();
    for (gi, g) in lonely_green.iter().enumerate() {
        for (bi, b) in lonely_blue.iter().enumerate() {
            let (alike, _) = columns_alike(g, b);
            if alike >= 0.5 {
                let score = 0.8 * alike + 0.2 * similarity(&g.name, &b.name);
                candidates.push(Candidate {
                    left: gi,
                    right: bi,
                    score,
                });
            }
        }
    }
    let (pairs, ties) = pairing::pair(candidates);
    for &(gi, bi) in &pairs {
        let (g, b) = (lonely_green[gi], lonely_blue[bi]);
        let (_, common) = columns_alike(g, b);
        let why = if common == g.columns.len() && common == b.columns.len() {
            format!("the same {common} column names")
        } else {
            format!("{common} column names in common")
        };
        push(&mut out, forward::draft(ctx, g, b, Some(&why)), true);
    }
    for tie in &ties {
        let b = lonely_blue[tie.right];
        let names: Vec<String> = tie.lefts.iter().map(|&g| lonely_green[g].shown()).collect();
        out.attention.push(format!(
            "blue table {} may be fed by green's {} (columns equally alike): write its mapping file \
             (target = {}, source = one of them)",
            b.shown(),
            names.join(" or "),
            b.shown()
        ));
    }
    for (gi, g) in lonely_green.iter().enumerate() {
        let settled = pairs.iter().any(|&(p, _)| p == gi) || ties.iter().any(|t| t.lefts.contains(&gi));
        if !settled {
            out.attention.push(format!(
                "green table {} has no blue table: create it on blue, write a mapping file for a renamed one, \
                 or list it in [mapping] exclude",
                g.shown()
            ));
        }
    }
    for (bi, b) in lonely_blue.iter().enumerate() {
        if !pairs.iter().any(|&(_, p)| p == bi) && !ties.iter().any(|t| t.right == bi) {
            out.notes.push(format!(
                "blue table {} has no green table; the bridge does not feed it",
                b.shown()
            ));
        }
    }
    for id in unstreamed.iter().filter(|id| blue.contains_key(*id)) {
        out.notes.push(format!(
            "blue table {}: green's table of that name is excluded from the stream ([mapping] exclude, or not in \
             the publication); the bridge does not feed it",
            super::names::shown_table(&id.0, &id.1)
        ));
    }
    out
}

/// Records a draft, or the table as mapping by name when a file would say nothing more (its
/// notes then printed on their own).
fn push(out: &mut Drafted, d: TableDraft, implicit: bool) {
    if d.needed() || !implicit {
        out.drafts.push(d);
    } else {
        let table = super::names::shown_table(&d.target.0, &d.target.1);
        out.notes.extend(d.lines.iter().map(|l| format!("{table}: {}", l.text)));
        out.same.push(table);
    }
}

/// The reverse drafts: green tables (`green`, every column) fed back from blue, inverting
/// `files` (the forward mappings) and the by-name mappings of `published` (the green tables
/// the forward bridge streams).
pub fn reverse(
    published: &[(String, String)],
    green: &Tables,
    blue: &Tables,
    files: &[MappingFile],
    ctx: &Ctx,
) -> Drafted {
    let mut out = Drafted::default();
    let mut fed_blue = Vec::new();
    for id in published {
        let Some(g) = green.get(id) else { continue };
        let file = files.iter().find(|f| &f.source == id);
        let blue_id = file.map_or_else(|| id.clone(), |f| f.target.clone());
        let Some(b) = blue.get(&blue_id) else {
            out.attention.push(match file {
                Some(f) => format!(
                    "{} maps green {} into blue {}, which blue does not have",
                    super::names::one_line(&f.path.display().to_string()),
                    g.shown(),
                    super::names::shown_table(&blue_id.0, &blue_id.1)
                ),
                None => format!("green table {} has no blue table to be fed back from", g.shown()),
            });
            continue;
        };
        fed_blue.push(blue_id);
        push(&mut out, reverse::draft(ctx, g, b, file), true);
    }
    for b in blue.values().filter(|b| !fed_blue.contains(&b.id())) {
        out.attention.push(format!(
            "blue table {} has no green table: list it in the reverse bridge's [mapping] exclude, or create it on green",
            b.shown()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::draft::catalog::Column;
    use crate::ops::draft::forward::with_ctx;

    fn table(name: &str, cols: &[&str]) -> Table {
        Table {
            schema: "public".into(),
            name: name.into(),
            columns: cols.iter().map(|c| Column::test(c, "text")).collect(),
            withheld: Vec::new(),
        }
    }

    fn tables(list: Vec<Table>) -> Tables {
        list.into_iter().map(|t| (t.id(), t)).collect()
    }

    #[test]
    fn renamed_tables_same_tables_and_lonely_ones() {
        let green = vec![
            table("purchases", &["id", "customer_id", "total"]),
            table("same", &["id", "v"]),
            table("audit", &["at", "what"]),
        ];
        let blue = tables(vec![
            table("orders", &["id", "customer_id", "total"]),
            table("same", &["id", "v"]),
            table("legacy", &["x"]),
        ]);
        let d = with_ctx(false, |c| forward(c, &green, &BTreeSet::new(), &blue, true));
        assert_eq!(d.same, ["public.same"]);
        assert_eq!(d.drafts.len(), 1);
        assert_eq!(d.drafts[0].target.1, "orders");
        assert_eq!(d.drafts[0].source.1, "purchases");
        assert!(d.drafts[0].source_comments[0].starts_with("guess"));
        assert!(
            d.attention[0].contains("green table public.audit has no blue table"),
            "{:?}",
            d.attention
        );
        assert!(d.notes[0].contains("public.legacy"));
    }

    #[test]
    fn equally_likely_tables_are_not_paired() {
        let green = vec![table("a1", &["id", "v"]), table("a2", &["id", "v"])];
        let blue = tables(vec![table("b", &["id", "v"])]);
        let d = with_ctx(false, |c| forward(c, &green, &BTreeSet::new(), &blue, true));
        assert!(d.drafts.is_empty());
        assert_eq!(d.attention.len(), 1, "{:?}", d.attention);
        assert!(d.attention[0].contains("public.a1 or public.a2"));
    }
}
