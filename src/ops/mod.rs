//! The operations below the command line: each does one job against green and blue and returns
//! what it found, so a command in [`crate::cli`] only turns arguments into a call, prints and
//! chooses the exit code. Nothing here imports from the command layer.
//!
//! * [`preflight`]: the validation `check` and `setup` share (mappings against both catalogs,
//!   privileges, the server's settings).
//! * [`setup`], [`slot`], [`copy`]: create what the bridge needs and fill blue from a snapshot.
//! * [`run`]: what the long-running bridge does besides the pipeline (start-up checks, catalog
//!   watching, the lag poller).
//! * [`ha`]: whether the bridge's slot survives a failover of green, for `check` and `status`.
//! * [`rollback`]: what a rollback to blue would lose, for `check` (`--data`, `--roundtrip`).
//! * [`draft`]: mapping files drafted from both catalogs, for review.
//! * [`ready`]: whether a rollback now would lose nothing, condition by condition (the command,
//!   and the judgement `run` shares).
//! * [`lag`], [`wait`], [`status`], [`verify`], [`sequences`], [`privileges`], [`teardown`],
//!   [`switchover`].

pub mod copy;
pub mod draft;
pub mod ha;
pub mod lag;
pub mod preflight;
pub mod privileges;
pub mod ready;
pub mod rollback;
pub mod run;
pub mod sequences;
pub mod setup;
pub mod slot;
pub mod status;
pub mod switchover;
pub mod teardown;
pub mod verify;
pub mod wait;
