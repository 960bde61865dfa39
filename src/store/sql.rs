//! Raw SQL pieces that differ per backend: placeholders and typed casts.
use std::fmt::Write;

use sea_orm::DbBackend;

/// Builds placeholders for hand-written statements (multi-row batches, conditional updates).
#[derive(Clone, Copy)]
pub struct BatchSql {
    backend: DbBackend,
}

impl BatchSql {
    pub fn new(backend: DbBackend) -> Self {
        BatchSql { backend }
    }

    /// The `n`th (1-based) parameter.
    pub fn placeholder(&self, n: usize) -> String {
        match self.backend {
            DbBackend::Postgres => format!("${n}"),
            _ => "?".to_owned(),
        }
    }

    /// `(p1, p2, ...), (...)` for `rows` rows of the given column types, numbering from 1. On
    /// PostgreSQL each parameter carries its type (`$1::bigint`), which a `VALUES` list cannot
    /// infer; `types` are e.g. `bigint`, `integer`, `text`, `timestamptz`.
    pub fn values_rows(&self, rows: usize, types: &[&str]) -> String {
        let mut out = String::with_capacity(rows * types.len() * 8);
        let mut n = 0;
        for row in 0..rows {
            if row > 0 {
                out.push_str(", ");
            }
            out.push('(');
            for (i, ty) in types.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                n += 1;
                match self.backend {
                    DbBackend::Postgres => {
                        let _ = write!(out, "${n}::{ty}");
                    }
                    _ => out.push('?'),
                }
            }
            out.push(')');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_numbers_and_types_placeholders() {
        let sql = BatchSql::new(DbBackend::Postgres);
        assert_eq!(
            sql.values_rows(2, &["bigint", "text"]),
            "($1::bigint, $2::text), ($3::bigint, $4::text)"
        );
    }

    #[test]
    fn sqlite_uses_question_marks() {
        let sql = BatchSql::new(DbBackend::Sqlite);
        assert_eq!(sql.values_rows(1, &["bigint", "text"]), "(?, ?)");
    }
}
