//! Green's tables as its Relation messages describe them, their plans, and the statements
//! prepared for them on blue: a change is routed here to the statement (or batch) that
//! applies it.

use std::sync::Arc;

use tokio_postgres::types::Type;

use super::exec::Context;
use super::params::WireParam;
use super::{green, rows, Applier, Rel};
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::mapping::statements::{self, Shape};
use crate::mapping::{GreenTable, TablePlan};
use crate::protocol::pgoutput::Relation;

impl Applier {
    pub(super) async fn on_relation(&mut self, relation: Relation) -> Result<()> {
        let oid = relation.oid;
        // Rows batched under the old description go out before it changes.
        self.flush_batch(oid).await?;
        self.cache.statements.retain(|(o, _), _| *o != oid);
        let excluded = self.cx.config.is_excluded(&relation.namespace, &relation.name);
        let label: Arc<str> = format!("{}.{}", relation.namespace, relation.name).into();
        if !excluded {
            self.still_binary(&relation, &label)?;
        }
        self.cache.relations.insert(
            oid,
            Rel {
                relation,
                label,
                excluded,
                plan: None,
            },
        );
        // Rule 7: a Relation message that no longer fits stops the bridge before the
        // transaction that carries it is applied. Inside a skipped transaction the plan is
        // resolved when first used instead.
        let expected = self.cx.mappings.expects(&self.cache.relations[&oid].label);
        if !excluded && expected && !self.tx.as_ref().is_some_and(|t| t.skip) {
            self.resolve(oid).await?;
        }
        Ok(())
    }

    /// In a binary session, a column whose type was not found exact when the session decided
    /// (added since, or of a type created since) ends the session: the next one decides again,
    /// from blue's checkpoint, before anything of it is applied.
    fn still_binary(&self, relation: &Relation, label: &str) -> Result<()> {
        if !self.cx.wire.binary {
            return Ok(());
        }
        match relation.columns.iter().find(|c| !self.cx.wire.exact.contains(&c.type_oid)) {
            None => Ok(()),
            Some(c) => Err(Error::transient(format!(
                "green table {label} now has column {} of type OID {}, which was not checked to travel exactly in binary when this stream started; restarting the stream to decide again",
                c.name, c.type_oid
            ))),
        }
    }

    pub(super) async fn resolve(&mut self, oid: u32) -> Result<Arc<TablePlan>> {
        self.pipe.drain().await?;
        let relation = self.cache.relations[&oid].relation.clone();
        let oids: Vec<u32> = relation.columns.iter().map(|c| c.type_oid).collect();
        let planned = async {
            self.cache.types.resolve_builtins(self.pipe.client(), &oids).await?;
            let green = GreenTable::from_relation(&relation, |o| self.cache.types.get(o))?;
            self.cx.mappings.plan_with_blue(self.pipe.client(), &green).await
        };
        let (plan, blue) = match planned.await {
            Ok(p) => p,
            Err(e) if e.is_transient() => return Err(self.pipe.root_cause(e).await),
            Err(e) => return Err(self.drifted_or(e)),
        };
        self.hold_to_baseline(&plan, &blue)?;
        let rel = self.cache.relations.get_mut(&oid).expect("relation just looked up");
        tracing::info!(table = %rel.label, blue = %plan.blue_name, columns = plan.targets.len(), "mapped green table");
        rel.plan = Some(plan.clone());
        Ok(plan)
    }

    /// The plan for a change's table, or `None` when the change is not applied (skipped
    /// transaction or excluded table).
    pub(super) async fn change_target(&mut self, oid: u32) -> Result<Option<(Arc<TablePlan>, Lsn)>> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| green("green sent a change outside a transaction"))?;
        if tx.skip || tx.foreign {
            return Ok(None);
        }
        let lsn = tx.commit_lsn;
        let rel = self
            .cache
            .relations
            .get(&oid)
            .ok_or_else(|| green(format!("green sent a change for relation {oid} before describing it")))?;
        if rel.excluded {
            return Ok(None);
        }
        let plan = match &rel.plan {
            Some(p) => p.clone(),
            None => self.resolve(oid).await?,
        };
        if let Some(g) = self.commits.groups.open.as_mut() {
            g.rows += 1;
        }
        Ok(Some((plan, lsn)))
    }

    /// The form this session's statements take values in.
    pub(super) fn wire_form(&self) -> statements::Wire {
        match self.cx.wire.binary {
            true => statements::Wire::Binary,
            false => statements::Wire::Text,
        }
    }

    /// Runs `shape` for `plan` with values from the new and old tuples.
    pub(super) async fn run_shape(
        &mut self,
        plan: &Arc<TablePlan>,
        shape: Shape,
        lsn: Lsn,
        action: &'static str,
        values: rows::Values<'_>,
    ) -> Result<()> {
        let key = (plan.green.oid, shape);
        // Batches pay off when changes are waiting; a change that arrives alone goes out at
        // once as its own statement, so steady-state latency stays low.
        if self.batches.enabled
            && self.batches.backlog
            && !self.is_careful(lsn)
            && self.batch(plan, &key.1, lsn, &values, action == "insert").await?
        {
            return Ok(());
        }
        self.flush_before(plan.green.oid).await?;
        if !self.cache.statements.contains_key(&key) {
            let sql = statements::build_for(plan, &key.1, self.wire_form());
            // In binary blue infers each parameter's type from its cast to green's type.
            let types = match self.cx.wire.binary {
                true => Vec::new(),
                false => vec![Type::TEXT; sql.params.len()],
            };
            let prepared = self.pipe.client().prepare_typed(&sql.text, &types).await;
            let stmt = match prepared {
                Ok(s) => s,
                Err(e) => {
                    let err = Error::postgres(format!("preparing {action} for blue table {}", plan.blue_name), &e);
                    return Err(self.pipe.root_cause(err).await);
                }
            };
            self.cache.statements.insert(key.clone(), (stmt, Arc::new(sql)));
        }
        let (stmt, sql) = &self.cache.statements[&key];
        let params = values.bind(plan, &sql.params, self.cx.wire.binary)?;
        if self.is_careful(lsn) {
            let stmt = stmt.clone();
            return self.apply_one_row(plan, &stmt, params, action, values).await;
        }
        let ctx = Context {
            action,
            table: Some(plan.green_name.clone()),
            lsn,
            lsn_end: lsn,
            expect_rows: None,
            weight: params.iter().map(WireParam::weight).sum(),
            commit: false,
            optimistic: false,
        };
        let stmt = stmt.clone();
        self.pipe.execute(&stmt, params, ctx).await
    }
}
