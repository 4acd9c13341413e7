//! Whether the target's server converts a source column's values to a target column's type,
//! asked of that server (never guessed from type names): each conversion a draft would write
//! is prepared, not run, exactly as the apply path will issue it. A draft is made twice: the
//! first pass records what it asks ([`Casts::asked`]), the server answers, the second pass
//! reads the answers.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::sql;

/// One conversion a draft may write.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ask {
    /// `CAST(NULL::from AS to)` (an `expr` feed); `from` as the apply path names the source
    /// type, `to` as `format_type` prints the target's cast type.
    Cast { from: String, to: String },
    /// `INSERT INTO table (column) SELECT NULL::from` (a `from` feed, converted on assignment).
    Assign {
        from: String,
        table: (String, String),
        column: String,
    },
}

impl Ask {
    fn sql(&self) -> String {
        match self {
            Ask::Cast { from, to } => format!("SELECT CAST(NULL::{from} AS {to})"),
            Ask::Assign { from, table, column } => format!(
                "INSERT INTO {} ({}) SELECT NULL::{from}",
                sql::qualified(&table.0, &table.1),
                sql::ident(column)
            ),
        }
    }
}

/// The server's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Works,
    /// The source type does not exist on the target's server.
    NoType,
    /// The server refuses the conversion; its message.
    Fails(String),
}

/// The answers known, and what a draft asked.
#[derive(Debug, Default)]
pub struct Casts {
    answers: HashMap<Ask, Answer>,
    asked: RefCell<BTreeSet<Ask>>,
}

impl Casts {
    /// Known answers only (for tests); anything else works.
    pub fn with(answers: impl IntoIterator<Item = (Ask, Answer)>) -> Self {
        Casts {
            answers: answers.into_iter().collect(),
            asked: RefCell::default(),
        }
    }

    /// The answer to `ask`: [`Answer::Works`] while the server has not been asked.
    pub fn answer(&self, ask: Ask) -> Answer {
        let answer = self.answers.get(&ask).cloned().unwrap_or(Answer::Works);
        self.asked.borrow_mut().insert(ask);
        answer
    }

    /// What was asked that the server has not answered.
    pub fn unanswered(&self) -> Vec<Ask> {
        self.asked
            .borrow()
            .iter()
            .filter(|a| !self.answers.contains_key(*a))
            .cloned()
            .collect()
    }

    /// Asks `client` (the target's server, named `side`) about `asks`, adding the answers.
    pub async fn ask(&mut self, client: &Client, side: &str, asks: Vec<Ask>) -> Result<()> {
        let answers = futures_util::future::join_all(asks.iter().map(|a| async move {
            let text = a.sql();
            match client.prepare(&text).await {
                Ok(_) => Ok(Answer::Works),
                Err(e) => match e.as_db_error() {
                    Some(db) if db.code() == &SqlState::UNDEFINED_OBJECT => Ok(Answer::NoType),
                    Some(db) => Ok(Answer::Fails(db.message().to_string())),
                    None => Err(Error::postgres(format!("asking {side} about a conversion"), &e).into_definite()),
                },
            }
        }))
        .await;
        for (a, answer) in asks.into_iter().zip(answers) {
            self.answers.insert(a, answer?);
        }
        self.asked.borrow_mut().clear();
        Ok(())
    }
}
