//! Finding the key ranges that differ: green's key order cut every `range_rows` rows (the
//! cuts read from green's key index as the pass goes, never all at once), each range's
//! checksum computed on both sides at once, and a range that differs cut again into up to
//! [`SPLIT`] parts, checksummed in turn, down to ranges of a few rows; those, and ranges
//! where most parts differ, are what the row-by-row comparison gets. The first range starts
//! below green's first key and the last reaches past its last, so blue rows beyond either end
//! are in a range too.

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use super::checksum::{self, Checksums, Sums};
use super::table::Range;
use crate::error::Result;
use crate::ops::copy::transfer;

/// Parts a differing range is cut into.
const SPLIT: i64 = 16;
/// A differing range of at most this many green rows is compared row by row.
const LEAF_ROWS: u64 = 1_000;

/// What the checksum pass found.
#[derive(Debug, Default)]
pub(super) struct Found {
    /// Ranges whose checksums were compared, the parts of bisected ones included.
    pub(super) ranges_compared: u64,
    /// Ranges to compare row by row, in key order.
    pub(super) differing: Vec<Range>,
    /// Rows of the ranges found identical (on each side).
    pub(super) matched_rows: i64,
}

/// One table's checksum pass: green (in a snapshot transaction of its own, under the
/// evaluation environment) and blue.
pub(super) struct Ranger<'a> {
    pub(super) sums: &'a Checksums<'a>,
    pub(super) green: &'a Client,
    pub(super) blue: &'a Client,
    pub(super) what: &'a str,
    /// Green rows per range (`config.switches.verify_chunk_rows`).
    pub(super) range_rows: u64,
    /// Green computes some of blue's values: the first range is compared row by row even when
    /// its checksums match, blue evaluating the mapping itself as streaming does, so that a
    /// difference between the two evaluations (which `setup --copy` would share with the
    /// checksums when it computed on green too) cannot pass unseen.
    pub(super) spot_check: bool,
}

impl Ranger<'_> {
    /// Compares every range of the table; returns the ranges to compare row by row.
    pub(super) async fn run(&self) -> Result<Found> {
        let mut found = Found::default();
        // Before the transaction: a rollback after an error in it keeps them.
        self.on_both(checksum::THROUGH_INDEX).await?;
        transfer::begin_snapshot(self.green, None).await?;
        let mut lo: Option<Vec<String>> = None;
        let mut hi = self.bound(&lo).await?;
        loop {
            let range = Range {
                lo: lo.clone(),
                hi: hi.clone(),
            };
            // Green's next cut is asked right behind this range's checksum, blue's checksum
            // meanwhile.
            let next = async {
                match &hi {
                    Some(_) => self.bound(&hi).await.map(Some),
                    None => Ok(None),
                }
            };
            let (green, next, blue) =
                futures_util::future::join3(self.green_sums(&range), next, self.blue_sums(&range)).await;
            let green = green?;
            // After an error green's transaction was opened again: the cut asked behind it failed.
            let next = match (&green, &hi) {
                (None, Some(_)) => Some(self.bound(&hi).await?),
                _ => next?,
            };
            found.ranges_compared += 1;
            let blue = blue?;
            match green {
                Some(_) if self.spot_check && lo.is_none() => found.differing.push(range),
                Some(g) if Some(&g) == blue.as_ref() => found.matched_rows += g.rows,
                _ => self.bisect(range, (green, blue), &mut found).await?,
            }
            match next {
                Some(cut) => (lo, hi) = (hi, cut),
                None => break,
            }
        }
        transfer::end_snapshot(self.green).await?;
        self.on_both(checksum::PLAN_AS_USUAL).await?;
        Ok(found)
    }

    /// Runs `sql` on both sessions at once.
    async fn on_both(&self, sql: &str) -> Result<()> {
        let (green, blue) =
            futures_util::future::join(self.green.batch_execute(sql), self.blue.batch_execute(sql)).await;
        green.map_err(|e| checksum::on("green", self.what, &e))?;
        blue.map_err(|e| checksum::on("blue", self.what, &e))
    }

    /// Cuts a differing `range` (with its checksums) into parts, compares them, and goes on
    /// into the parts that differ; the ranges to compare row by row go to `found`.
    async fn bisect(&self, range: Range, sums: (Option<Sums>, Option<Sums>), found: &mut Found) -> Result<()> {
        let mut todo = vec![(range, sums)];
        while let Some((range, (green, blue))) = todo.pop() {
            let rows = match &green {
                Some(s) => s.rows,
                None => self.count(&range).await?,
            };
            let blue_rows = blue.as_ref().map_or(1, |s| s.rows);
            if rows as u64 <= LEAF_ROWS.min(self.range_rows / 4).max(1) || blue_rows == 0 {
                found.differing.push(range);
                continue;
            }
            let parts = self.split(&range, rows).await?;
            let mut differ = Vec::new();
            let mut matched = 0;
            for part in &parts {
                let (green, blue) = futures_util::future::join(self.green_sums(part), self.blue_sums(part)).await;
                let (green, blue) = (green?, blue?);
                found.ranges_compared += 1;
                match green {
                    Some(g) if Some(&g) == blue.as_ref() => matched += g.rows,
                    _ => differ.push((part.clone(), (green, blue))),
                }
            }
            if differ.len() * 2 > parts.len() {
                // Differences throughout: cutting further would read it all again.
                found.differing.push(range);
                continue;
            }
            found.matched_rows += matched;
            todo.extend(differ.into_iter().rev());
        }
        Ok(())
    }

    /// `range` cut into consecutive parts of about `rows / SPLIT` green rows each.
    async fn split(&self, range: &Range, rows: i64) -> Result<Vec<Range>> {
        let step = (rows + SPLIT - 1) / SPLIT;
        let params: [(&(dyn ToSql + Sync), Type); 2] = [(&step, Type::INT8), (&rows, Type::INT8)];
        let cuts = self
            .green
            .query_typed(&self.sums.split_sql(range), &params)
            .await
            .map_err(|e| checksum::on("green", self.what, &e))?;
        let mut parts = Vec::new();
        let mut lo = range.lo.clone();
        for cut in cuts {
            let hi: Vec<String> = (0..cut.len()).map(|i| cut.get(i)).collect();
            parts.push(Range {
                lo: lo.clone(),
                hi: Some(hi.clone()),
            });
            lo = Some(hi);
        }
        parts.push(Range {
            lo,
            hi: range.hi.clone(),
        });
        Ok(parts)
    }

    /// Green's key `range_rows` rows past `lo`, or `None` when fewer are left.
    async fn bound(&self, lo: &Option<Vec<String>>) -> Result<Option<Vec<String>>> {
        let offset = self.range_rows.saturating_sub(1).min(i64::MAX as u64) as i64;
        let params: [(&(dyn ToSql + Sync), Type); 1] = [(&offset, Type::INT8)];
        let after = Range {
            lo: lo.clone(),
            hi: None,
        };
        let row = self
            .green
            .query_typed(&self.sums.bound_sql(&after), &params)
            .await
            .map_err(|e| checksum::on("green", self.what, &e))?;
        Ok(row.first().map(|r| (0..r.len()).map(|i| r.get(i)).collect()))
    }

    /// Green's rows in `range`.
    async fn count(&self, range: &Range) -> Result<i64> {
        let row = self
            .green
            .query_one(&self.sums.count_sql(range), &[])
            .await
            .map_err(|e| checksum::on("green", self.what, &e))?;
        Ok(row.get(0))
    }

    /// `range`'s checksum on green; `None` when a value fails to compute (green's
    /// transaction is then opened again).
    async fn green_sums(&self, range: &Range) -> Result<Option<Sums>> {
        match self.green.query_typed(&self.sums.green_sql(range), &[]).await {
            Ok(rows) => Ok(rows.first().map(sums)),
            Err(e) if checksum::from_values(&e) => {
                self.green
                    .batch_execute("ROLLBACK")
                    .await
                    .map_err(|e| checksum::on("green", self.what, &e))?;
                transfer::begin_snapshot(self.green, None).await?;
                Ok(None)
            }
            Err(e) => Err(checksum::on("green", self.what, &e)),
        }
    }

    /// `range`'s checksum on blue; `None` when it cannot be computed.
    async fn blue_sums(&self, range: &Range) -> Result<Option<Sums>> {
        match self.blue.query_typed(&self.sums.blue_sql(range), &[]).await {
            Ok(rows) => Ok(rows.first().map(sums)),
            Err(e) if checksum::from_values(&e) => Ok(None),
            Err(e) => Err(checksum::on("blue", self.what, &e)),
        }
    }
}

fn sums(row: &tokio_postgres::Row) -> Sums {
    Sums {
        rows: row.get(0),
        digest: row.get(1),
    }
}
