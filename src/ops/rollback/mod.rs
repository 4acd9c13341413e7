//! What a rollback to blue would lose, for `pgbridge check`:
//!
//! * [`loses`]: read off the plan (columns not carried, narrowing casts, expressions,
//!   filters); printed by every `check`, informational;
//! * [`data`]: `check --data`, green's rows blue would refuse, found by passing them through
//!   the mapping on blue into temporary copies of blue's tables, rolled back;
//! * [`roundtrip`]: `check --roundtrip --reverse PATH`, blue's rows through the reverse
//!   mapping on green and back through this one on blue, compared by key.
//!
//! Both data checks evaluate mappings with the statement text of [`crate::mapping::statements`]
//! in the sessions of [`crate::evaluation`] (DESIGN.md rule 10), and write nothing to either
//! side's tables. [`stage`], [`pair`] and [`partitions`] hold their SQL text.

pub mod data;
pub mod loses;
mod pair;
mod partitions;
pub mod roundtrip;
mod stage;
