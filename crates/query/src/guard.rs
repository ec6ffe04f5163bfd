//! What `runs query` accepts, decided on the parsed statement before Polars sees it.
//!
//! Polars' `SQLContext` also executes `CREATE TABLE … AS`, `DELETE`, `TRUNCATE` and
//! `DROP` (on its in-memory copy, so they "succeed" and change nothing), and its table
//! functions `read_parquet`, `read_csv`, `read_ipc` and `read_json` read any file the
//! process can open. A query over the run store needs none of that, so the rules are:
//!
//! - exactly one statement, and it is a query: `SELECT`, `WITH … SELECT`, set operations
//!   (`UNION`, `INTERSECT`, `EXCEPT`), `VALUES`; or plain `SHOW TABLES`, which is
//!   answered with the store's table names (Polars would list only the tables a
//!   statement names, and `SHOW TABLES` names none). Everything else (`INSERT`, `UPDATE`,
//!   `DELETE`, `MERGE`, `TRUNCATE`, `CREATE`, `DROP`, `ALTER`, `SET`, `COPY`, `ATTACH`,
//!   `SELECT … INTO`, and also `EXPLAIN`, whose plan would show every file although the
//!   query itself reads only some: see prune.rs) is refused;
//! - every relation in `FROM`/`JOIN` (and `TABLE t`, where a dialect parses it), at any
//!   depth (subqueries in expressions and CTE bodies included), is one of the store's
//!   tables or a CTE the query defines, or a derived table, a nested join or `UNNEST` of
//!   literal arrays built from those; table functions and quoted file paths are refused.

use std::ops::ControlFlow;

use sqlparser::ast::{Ident, ObjectName, Query, SetExpr, Statement, TableFactor, Visit, Visitor};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::{Parser, ParserOptions};

use crate::tables::TABLES;

/// A statement `runs query` will run.
#[derive(Debug)]
pub(crate) enum Checked {
    /// A query, with every reference to one of the store's tables, as written, one entry
    /// per reference (so a table named twice appears twice).
    Query {
        /// The parsed query (for rewrites that work around Polars, see lib.rs).
        query: Box<Query>,
        /// The store tables it reads.
        tables: Vec<String>,
    },
    /// Plain `SHOW TABLES`.
    ShowTables,
}

/// Why a statement is not run.
#[derive(Debug, PartialEq)]
pub(crate) enum Refusal {
    /// The SQL does not parse (the parser's message).
    Parse(String),
    /// Not exactly one query: what was given ("a DELETE statement", "2 statements").
    NotAQuery(String),
    /// A table function or file path in `FROM`: what it is.
    NotAStoreTable(String),
    /// A relation name that is neither a store table nor a CTE of the query.
    UnknownTable(String),
}

/// Parses `sql` as Polars does (generic dialect, trailing commas allowed) and applies
/// the rules in the module docs.
pub(crate) fn check(sql: &str) -> Result<Checked, Refusal> {
    let stmts = Parser::new(&GenericDialect {})
        .with_options(ParserOptions::new().with_trailing_commas(true))
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| Refusal::Parse(e.to_string()))?;
    let query = match stmts.as_slice() {
        [] => return Err(Refusal::NotAQuery("no statement".into())),
        [Statement::Query(q)] => q.clone(),
        [s @ Statement::ShowTables { .. }] if s.to_string() == "SHOW TABLES" => {
            return Ok(Checked::ShowTables)
        }
        [s] => return Err(Refusal::NotAQuery(with_article(&statement_kind(s)))),
        many => return Err(Refusal::NotAQuery(format!("{} statements", many.len()))),
    };
    let mut walk = Walk::default();
    if let ControlFlow::Break(r) = query.visit(&mut walk) {
        return Err(r);
    }
    let mut tables = Vec::new();
    for name in walk.relations {
        let Some(ident) = single_ident(&name) else {
            return Err(Refusal::UnknownTable(name.to_string()));
        };
        let lower = ident.to_ascii_lowercase();
        if TABLES.iter().any(|t| t.name == lower) {
            tables.push(ident.to_string());
        } else if walk.ctes.contains(&lower) {
            // Defined by the query itself; Polars resolves it.
        } else if looks_like_path(&name) {
            return Err(Refusal::NotAStoreTable(format!("the file path {name}")));
        } else {
            return Err(Refusal::UnknownTable(name.to_string()));
        }
    }
    Ok(Checked::Query { query, tables })
}

#[derive(Default)]
struct Walk {
    /// CTE names defined anywhere in the statement, lowercased. Scoping is left to
    /// Polars: a CTE used outside its scope fails there with "relation not found".
    ctes: Vec<String>,
    /// Every plain relation name (`FROM x`, `JOIN x`, `TABLE x`), in order.
    relations: Vec<ObjectName>,
}

impl Visitor for Walk {
    type Break = Refusal;

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<Refusal> {
        if let Some(with) = &q.with {
            self.ctes.extend(
                with.cte_tables
                    .iter()
                    .map(|c| c.alias.name.value.to_ascii_lowercase()),
            );
        }
        self.body(&q.body)
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<Refusal> {
        match t {
            TableFactor::Table {
                name, args: None, ..
            } => {
                self.relations.push(name.clone());
                ControlFlow::Continue(())
            }
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => ControlFlow::Break(Refusal::NotAStoreTable(
                format!("the table function {name}(…)"),
            )),
            TableFactor::TableFunction { expr, .. } => ControlFlow::Break(Refusal::NotAStoreTable(
                format!("the table function TABLE({})", short(expr)),
            )),
            // Built from other relations, which are visited on their own.
            TableFactor::Derived { .. }
            | TableFactor::NestedJoin { .. }
            | TableFactor::UNNEST { .. } => ControlFlow::Continue(()),
            other => ControlFlow::Break(Refusal::NotAStoreTable(short(other))),
        }
    }

    // Only reached for statements nested in the query (`SetExpr::Insert` and the like,
    // e.g. a data-modifying CTE): the top-level statement is not visited.
    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<Refusal> {
        ControlFlow::Break(Refusal::NotAQuery(with_article(&statement_kind(s))))
    }
}

impl Walk {
    fn body(&mut self, e: &SetExpr) -> ControlFlow<Refusal> {
        match e {
            SetExpr::Select(s) if s.into.is_some() => {
                ControlFlow::Break(Refusal::NotAQuery("a SELECT … INTO statement".into()))
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.body(left)?;
                self.body(right)
            }
            SetExpr::Table(t) => {
                let mut parts = Vec::new();
                parts.extend(t.schema_name.as_deref().map(Ident::new));
                parts.extend(t.table_name.as_deref().map(Ident::new));
                self.relations.push(ObjectName::from(parts));
                ControlFlow::Continue(())
            }
            // Nested queries get their own `pre_visit_query`, nested statements their
            // `pre_visit_statement`.
            _ => ControlFlow::Continue(()),
        }
    }
}

fn single_ident(name: &ObjectName) -> Option<&str> {
    match name.0.as_slice() {
        [part] => part.as_ident().map(|i| i.value.as_str()),
        _ => None,
    }
}

/// A quoted name such as `"/data/x.parquet"`: other engines (DuckDB) read it as a file.
fn looks_like_path(name: &ObjectName) -> bool {
    name.0.iter().any(|p| {
        p.as_ident()
            .is_some_and(|i| i.quote_style.is_some() && i.value.contains(['/', '\\', '.']))
    })
}

/// The statement's leading keywords: "DELETE", "CREATE TABLE", "DROP TABLE".
fn statement_kind(s: &Statement) -> String {
    match s {
        Statement::CreateTable(_) => "CREATE TABLE".into(),
        Statement::CreateView(_) => "CREATE VIEW".into(),
        Statement::AlterTable(_) => "ALTER TABLE".into(),
        Statement::Drop { object_type, .. } => format!("DROP {object_type}"),
        Statement::ShowTables { .. } => "SHOW TABLES with options".into(),
        // Every other statement's text starts with its keyword (INSERT, UPDATE, DELETE,
        // TRUNCATE, SET, EXPLAIN, COPY, ATTACH, …).
        other => other
            .to_string()
            .split_whitespace()
            .next()
            .unwrap_or("empty")
            .to_ascii_uppercase(),
    }
}

fn with_article(kind: &str) -> String {
    let an = kind.starts_with(['A', 'E', 'I', 'O', 'U']);
    format!("{} {kind} statement", if an { "an" } else { "a" })
}

/// The start of an AST node's SQL, for a one-line message.
fn short(node: &impl std::fmt::Display) -> String {
    let text = node.to_string();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::{check, Checked, Refusal};

    fn tables(sql: &str) -> Vec<String> {
        match check(sql) {
            Ok(Checked::Query { tables, .. }) => tables,
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn refusal(sql: &str) -> Refusal {
        match check(sql) {
            Err(r) => r,
            Ok(c) => panic!("{sql} was accepted: {c:?}"),
        }
    }

    #[test]
    fn queries_are_accepted_with_their_store_tables() {
        assert_eq!(tables("SELECT * FROM runs"), ["runs"]);
        assert_eq!(
            tables("select m.step from METRICS m join runs r on m.run_id = r.run_id"),
            ["METRICS", "runs"]
        );
        assert_eq!(
            tables("WITH best AS (SELECT run_id, min(value) AS v FROM evals GROUP BY run_id) SELECT * FROM best JOIN runs USING (run_id)"),
            ["evals", "runs"]
        );
        assert_eq!(
            tables("SELECT run_id FROM runs UNION SELECT run_id FROM metrics WHERE step IN (SELECT max(step) FROM metrics)"),
            ["runs", "metrics", "metrics"]
        );
        assert_eq!(tables("SELECT * FROM (SELECT * FROM events) e"), ["events"]);
        assert_eq!(tables("VALUES (1, 2)"), Vec::<String>::new());
        assert_eq!(tables("SELECT 1,"), Vec::<String>::new());
        assert!(matches!(check("SHOW TABLES"), Ok(Checked::ShowTables)));
        assert!(matches!(check("show tables;"), Ok(Checked::ShowTables)));
    }

    #[test]
    fn statements_other_than_one_query_are_refused_by_kind() {
        for (sql, got) in [
            ("DELETE FROM runs", "a DELETE statement"),
            ("TRUNCATE runs", "a TRUNCATE statement"),
            (
                "CREATE TABLE t AS SELECT * FROM runs",
                "a CREATE TABLE statement",
            ),
            ("DROP TABLE runs", "a DROP TABLE statement"),
            ("INSERT INTO runs VALUES (1)", "an INSERT statement"),
            ("UPDATE runs SET status = 'x'", "an UPDATE statement"),
            (
                "ALTER TABLE runs ADD COLUMN x INT",
                "an ALTER TABLE statement",
            ),
            ("EXPLAIN SELECT * FROM runs", "an EXPLAIN statement"),
            ("SET x = 1", "a SET statement"),
            (
                "SHOW TABLES LIKE 'r%'",
                "a SHOW TABLES with options statement",
            ),
            ("SELECT * INTO t FROM runs", "a SELECT … INTO statement"),
            ("SELECT 1; SELECT 2", "2 statements"),
            ("SELECT 1; DELETE FROM runs", "2 statements"),
            ("", "no statement"),
        ] {
            assert_eq!(refusal(sql), Refusal::NotAQuery(got.into()), "{sql}");
        }
    }

    #[test]
    fn only_store_tables_and_ctes_are_read() {
        for (sql, what) in [
            (
                "SELECT * FROM read_parquet('/etc/x.parquet')",
                "the table function read_parquet(…)",
            ),
            (
                "SELECT * FROM runs JOIN read_csv('x.csv') c ON true",
                "the table function read_csv(…)",
            ),
            (
                "SELECT * FROM runs WHERE run_id IN (SELECT run_id FROM read_ipc('a'))",
                "the table function read_ipc(…)",
            ),
            (
                "WITH x AS (SELECT * FROM read_json('a.json')) SELECT * FROM x",
                "the table function read_json(…)",
            ),
            (
                "SELECT * FROM (SELECT * FROM Read_Parquet('a')) t",
                "the table function Read_Parquet(…)",
            ),
            (
                "SELECT * FROM \"/tmp/runs.parquet\"",
                "the file path \"/tmp/runs.parquet\"",
            ),
        ] {
            assert_eq!(refusal(sql), Refusal::NotAStoreTable(what.into()), "{sql}");
        }
        for (sql, name) in [
            ("SELECT * FROM nosuchtable", "nosuchtable"),
            ("SELECT * FROM main.runs", "main.runs"),
            (
                "SELECT * FROM runs r JOIN best b ON r.run_id = b.run_id",
                "best",
            ),
        ] {
            assert_eq!(refusal(sql), Refusal::UnknownTable(name.into()), "{sql}");
        }
        assert!(matches!(refusal("SELEC broken"), Refusal::Parse(_)));
    }
}
