//! A rewrite that makes grouped joins work in Polars SQL: `GROUP BY` and `ORDER BY`
//! terms that repeat a `SELECT` item become that item's position.
//!
//! When both sides of a join have a column (`run_id` in `metrics m JOIN runs r`),
//! Polars names the right-hand one `run_id:r` and resolves `r.run_id` to
//! `col("run_id:r").alias("run_id")`. After the aggregation only the output names exist,
//! so `… GROUP BY r.run_id ORDER BY r.run_id` fails with "unable to find column
//! run_id:r", and so does `SELECT r.run_id AS id … GROUP BY r.run_id` (the doubly
//! aliased item no longer matches the key). Likewise `ORDER BY min(e.value)` after a
//! `GROUP BY` is evaluated against the aggregated frame, where `value` is gone.
//!
//! SQL defines `GROUP BY k` / `ORDER BY k`, where `k` is written exactly as a `SELECT`
//! item, to mean that item; Polars resolves the ordinal `GROUP BY n` / `ORDER BY n` to
//! the n-th item's expression and its output column, which works in all these cases. So
//! in a grouped `SELECT` without wildcards, such terms are replaced by their ordinal.
//! Rewriting `r.run_id` to the unqualified `run_id` instead would be wrong: that is the
//! left table's column, which differs from the right one's under an outer join.
//! Bare column names and ordinals are left alone (Polars handles them), and so is every
//! query that is not grouped.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, GroupByExpr, OrderByKind, Query, SelectItem, SetExpr, Value, VisitMut, VisitorMut,
};

/// The rewritten SQL, when a term was rewritten (otherwise the original text is used,
/// so a query Polars already handles is never re-rendered).
pub(crate) fn rewrite(query: &Query) -> Option<String> {
    let mut q = query.clone();
    let mut r = Rewrite { changed: false };
    let _ = q.visit(&mut r);
    r.changed.then(|| q.to_string())
}

struct Rewrite {
    changed: bool,
}

impl VisitorMut for Rewrite {
    type Break = ();

    fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
        let SetExpr::Select(s) = q.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        let grouped = match &s.group_by {
            GroupByExpr::All(_) => true,
            GroupByExpr::Expressions(e, _) => !e.is_empty(),
        };
        let mut items = Vec::with_capacity(s.projection.len());
        for item in &s.projection {
            match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    items.push(e.clone())
                }
                // Wildcards: positions would not count the expanded columns.
                _ => return ControlFlow::Continue(()),
            }
        }
        if !grouped {
            return ControlFlow::Continue(());
        }
        if let GroupByExpr::Expressions(terms, _) = &mut s.group_by {
            for t in terms {
                self.replace_by_position(t, &items);
            }
        }
        if let Some(OrderByKind::Expressions(terms)) = q.order_by.as_mut().map(|o| &mut o.kind) {
            for t in terms {
                self.replace_by_position(&mut t.expr, &items);
            }
        }
        ControlFlow::Continue(())
    }
}

impl Rewrite {
    fn replace_by_position(&mut self, term: &mut Expr, items: &[Expr]) {
        if matches!(term, Expr::Identifier(_) | Expr::Value(_)) {
            return;
        }
        if let Some(i) = items.iter().position(|e| e == term) {
            *term = Expr::value(Value::Number((i + 1).to_string(), false));
            self.changed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlparser::ast::Statement;
    use sqlparser::dialect::GenericDialect;
    use sqlparser::parser::Parser;

    fn rewrite(sql: &str) -> Option<String> {
        let stmts = Parser::parse_sql(&GenericDialect {}, sql).unwrap();
        let [Statement::Query(q)] = stmts.as_slice() else {
            panic!("{sql}")
        };
        super::rewrite(q)
    }

    #[test]
    fn repeated_select_items_become_positions_in_grouped_selects_only() {
        let j = "FROM metrics m JOIN runs r ON m.run_id = r.run_id";
        assert_eq!(
            rewrite(&format!("SELECT r.run_id AS id, count(*) AS n {j} GROUP BY r.run_id ORDER BY r.run_id DESC, count(*)")),
            Some(format!("SELECT r.run_id AS id, count(*) AS n {j} GROUP BY 1 ORDER BY 1 DESC, 2"))
        );
        assert_eq!(
            rewrite(&format!(
                "SELECT r.model, min(m.value) AS best {j} GROUP BY ALL ORDER BY min(m.value)"
            )),
            Some(format!(
                "SELECT r.model, min(m.value) AS best {j} GROUP BY ALL ORDER BY 2"
            ))
        );
        // In a CTE and a subquery too.
        assert_eq!(
            rewrite("WITH x AS (SELECT r.sweep, count(*) AS n FROM runs r GROUP BY r.sweep) SELECT * FROM x"),
            Some("WITH x AS (SELECT r.sweep, count(*) AS n FROM runs r GROUP BY 1) SELECT * FROM x".into())
        );
        for sql in [
            // Not grouped: Polars resolves qualified names itself.
            format!("SELECT r.run_id {j} ORDER BY r.run_id"),
            // Bare names and ordinals are Polars' own business.
            "SELECT run_id, count(*) AS n FROM metrics GROUP BY run_id ORDER BY n".to_string(),
            format!("SELECT r.run_id, count(*) AS n {j} GROUP BY 1 ORDER BY 2"),
            // Not a SELECT item: nothing to point at.
            format!("SELECT count(*) AS n {j} GROUP BY r.run_id ORDER BY n"),
            // A wildcard shifts positions.
            format!("SELECT *, count(*) AS n {j} GROUP BY r.run_id"),
        ] {
            assert_eq!(rewrite(&sql), None, "{sql}");
        }
    }
}
