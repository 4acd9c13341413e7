//! Where a table's mapping is evaluated during the copy: on green, when green computes exactly
//! what blue would store ([`crate::mapping::on_green`]), so rows go from green's COPY straight
//! into blue's table; else on blue, through a stage. Green evaluates only in sessions that
//! carry blue's evaluation settings (rule 10), the one asking included.

use tokio_postgres::Client;

use crate::config::Config;
use crate::error::Result;
use crate::evaluation::Environment;
use crate::mapping::on_green::on_green;
pub use crate::mapping::on_green::OnGreen;
use crate::mapping::TablePlan;

/// A green session for asking [`on_green`]: with blue's evaluation settings, or why green
/// does not take them.
pub struct Asker {
    green: Client,
    /// Where blue's reading of the same SQL is asked for, under the same settings.
    blue: std::sync::Arc<Client>,
    evaluates: std::result::Result<(), String>,
    /// Whether the databases' collations differ ([`crate::mapping::on_green::text_rules`]).
    text_rules: Option<String>,
}

impl Asker {
    pub async fn open(config: &Config, env: &Environment) -> Result<Asker> {
        let green = super::transfer::green_for_snapshots(config).await?;
        let evaluates = apply(&green, env).await;
        let blue = crate::connect::connect_blue(&config.blue).await?;
        env.apply(&blue).await?;
        let text_rules = crate::mapping::on_green::text_rules(&green, &blue).await?;
        Ok(Asker {
            green,
            blue,
            evaluates,
            text_rules,
        })
    }

    /// How green computes `plan`'s blue values, or why it cannot. Without blue's settings
    /// only plain same-type copies qualify: they compute nothing.
    pub async fn ask(&self, plan: &TablePlan) -> Result<std::result::Result<OnGreen, String>> {
        if let Err(why) = &self.evaluates {
            if plan.computes() {
                return Ok(Err(why.clone()));
            }
        }
        on_green(&self.green, &self.blue, plan, &self.text_rules).await
    }
}

/// Gives a green session blue's evaluation settings; outside a transaction, so a setting
/// green refuses (a locale or a text search configuration only blue has) leaves the session
/// as it was, and says why green does not evaluate.
pub async fn apply(green: &Client, env: &Environment) -> std::result::Result<(), String> {
    env.apply(green)
        .await
        .map_err(|e| format!("green does not take blue's evaluation settings ({e})"))
}
