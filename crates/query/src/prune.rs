//! Run pruning: a query that can only return rows of known runs reads only those
//! runs' files. Scanning a Parquet file costs Polars ~0.1 ms even when it is skipped by
//! statistics, so "the loss curve of one run" over a 1,000-run store would pay ~100 ms
//! for files it does not need.
//!
//! The rule is deliberately narrow, so that it can never change a result: the statement
//! is one plain `SELECT` (no CTE, no set operation) whose `FROM` is exactly one of
//! `metrics`, `evals`, `metrics_all` and `evals_all`, without joins, the table is named
//! nowhere else in the statement (not even in a subquery), and a top-level `AND` term
//! of its `WHERE` is `run_id = '<id>'` or `run_id IN ('<id>', …)`. Every row of the
//! result then belongs to those runs, so reading only their files gives the same
//! answer (which rows of a run are live depends on that run's events alone).

use sqlparser::ast::{BinaryOperator, Expr, SetExpr, Statement, TableFactor, Value};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

/// When `sql` qualifies (see the module docs): the table name and the run ids.
pub(crate) fn run_filter(sql: &str) -> Option<(String, Vec<String>)> {
    let stmts = Parser::parse_sql(&GenericDialect {}, sql).ok()?;
    let [Statement::Query(q)] = stmts.as_slice() else {
        return None;
    };
    if q.with.is_some() {
        return None;
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let [from] = s.from.as_slice() else {
        return None;
    };
    if !from.joins.is_empty() {
        return None;
    }
    let TableFactor::Table {
        name,
        alias,
        args: None,
        ..
    } = &from.relation
    else {
        return None;
    };
    let [part] = name.0.as_slice() else {
        return None;
    };
    let table = part.as_ident()?.value.to_ascii_lowercase();
    crate::tables::run_table_kind(&table)?;
    let qualifier = alias
        .as_ref()
        .map(|a| a.name.value.to_ascii_lowercase())
        .unwrap_or_else(|| table.clone());
    let mut terms = Vec::new();
    conjuncts(s.selection.as_ref()?, &mut terms);
    for t in terms {
        if let Some(ids) = run_ids(t, &qualifier) {
            return Some((table, ids));
        }
    }
    None
}

fn conjuncts<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Expr::Nested(inner) => conjuncts(inner, out),
        other => out.push(other),
    }
}

fn is_run_id(e: &Expr, qualifier: &str) -> bool {
    match e {
        Expr::Identifier(i) => i.value.eq_ignore_ascii_case("run_id"),
        Expr::CompoundIdentifier(parts) => {
            parts.len() == 2
                && parts[0].value.eq_ignore_ascii_case(qualifier)
                && parts[1].value.eq_ignore_ascii_case("run_id")
        }
        Expr::Nested(inner) => is_run_id(inner, qualifier),
        _ => false,
    }
}

fn literal(e: &Expr) -> Option<String> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        Expr::Nested(inner) => literal(inner),
        _ => None,
    }
}

fn run_ids(e: &Expr, qualifier: &str) -> Option<Vec<String>> {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => {
            if is_run_id(left, qualifier) {
                literal(right).map(|s| vec![s])
            } else if is_run_id(right, qualifier) {
                literal(left).map(|s| vec![s])
            } else {
                None
            }
        }
        Expr::InList {
            expr,
            list,
            negated: false,
        } if is_run_id(expr, qualifier) => list.iter().map(literal).collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::run_filter;

    fn ids(sql: &str) -> Option<Vec<String>> {
        run_filter(sql).map(|(_, ids)| ids)
    }

    #[test]
    fn prunes_only_when_the_result_is_confined_to_the_runs() {
        let one = Some(vec!["r1".to_string()]);
        assert_eq!(ids("SELECT step, value FROM metrics WHERE run_id = 'r1' AND name = 'loss' ORDER BY step"), one);
        assert_eq!(
            ids("select * from METRICS m where (m.run_id = 'r1') and m.step > 5"),
            one
        );
        assert_eq!(ids("SELECT * FROM evals WHERE 'r1' = run_id"), one);
        assert_eq!(
            ids("SELECT count(*) FROM metrics WHERE run_id IN ('a', 'b')"),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        for sql in [
            "SELECT * FROM metrics WHERE run_id = 'r1' OR name = 'loss'",
            "SELECT * FROM metrics WHERE NOT run_id = 'r1'",
            "SELECT * FROM metrics WHERE run_id <> 'r1'",
            "SELECT * FROM metrics WHERE run_id NOT IN ('r1')",
            "SELECT * FROM metrics m JOIN runs r ON m.run_id = r.run_id WHERE r.run_id = 'r1'",
            "SELECT * FROM metrics WHERE run_id = 'r1' UNION SELECT * FROM metrics",
            "WITH x AS (SELECT * FROM metrics) SELECT * FROM x WHERE run_id = 'r1'",
            "SELECT * FROM runs WHERE run_id = 'r1'",
            "SELECT * FROM metrics WHERE x.run_id = 'r1'",
            "SELECT * FROM metrics WHERE run_id = name",
            "SELECT * FROM metrics",
            "not sql at all",
        ] {
            assert_eq!(ids(sql), None, "{sql}");
        }
    }
}
