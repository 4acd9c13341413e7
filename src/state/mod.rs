//! Everything pgbridge keeps on blue, with all of its SQL: the checkpoint row per slot (and the
//! tables created beside it), the replication origins, the accepted plan and drift tables, and which green server the
//! checkpoint belongs to; and what pgbridge reads of blue's standbys (`standbys`).
//! Commands and the apply path call these functions instead of writing statements on
//! pgbridge's own tables themselves, so the tables' shape is known in one place. The dead
//! letters the apply path parks are here too (`dead_letters`).

pub mod checkpoint;
pub mod dead_letters;
pub mod origin;
pub mod plan;
pub mod server;
pub mod standbys;
