//! The few multi-row statements the writer uses, built once.

use std::fmt::Write;
use std::sync::LazyLock;

/// What a new message's row sets.
pub(super) const COLUMNS: &str =
    "room_id, seq, id, user_id, username, body, created_at_ms, client_id, kind";

/// What reading any row of the log needs.
pub(super) const EVENT_COLUMNS: &str = "room_id, seq, id, user_id, username, body, \
    created_at_ms, client_id, kind, target_id, edited_at_ms, deleted, added";

/// How a statement names its parameters. PostgreSQL needs `$n`. SQLite
/// accepts `$n` too, but sqlx then looks each name up, which SQLite does in
/// linear time: a 256-row insert spent most of its time there.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Placeholders {
    Numbered,
    Anonymous,
}

/// Rows per statement. Only these few statements ever exist, so each is
/// prepared once and then reused from the statement cache (a statement per
/// batch size would be prepared again for almost every batch). Powers of
/// two keep the statements per batch few: every statement is a round trip.
const CHUNK_ROWS: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

/// How many of `remaining` rows the next statement takes.
pub(super) fn chunk_rows(remaining: usize) -> usize {
    CHUNK_ROWS
        .into_iter()
        .find(|rows| *rows <= remaining)
        .unwrap_or(1)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Statement {
    /// Adds `count` to each room's `last_seq`, returning the new value.
    Reserve,
    Insert,
}

impl Statement {
    fn columns(self) -> usize {
        match self {
            Statement::Reserve => 2,
            Statement::Insert => 9,
        }
    }

    fn head(self) -> String {
        match self {
            Statement::Reserve => "INSERT INTO room_seq (room_id, last_seq) VALUES ".into(),
            Statement::Insert => format!("INSERT INTO room_events ({COLUMNS}) VALUES "),
        }
    }

    fn tail(self) -> &'static str {
        match self {
            Statement::Reserve => {
                " ON CONFLICT (room_id) DO UPDATE SET last_seq = room_seq.last_seq + excluded.last_seq \
                 RETURNING room_id, last_seq"
            }
            Statement::Insert => "",
        }
    }
}

/// The statement for `rows` rows, built once per kind, size and style.
pub(super) fn statement(kind: Statement, rows: usize, placeholders: Placeholders) -> &'static str {
    type Built = (Statement, usize, Placeholders, String);
    static STATEMENTS: LazyLock<Vec<Built>> = LazyLock::new(|| {
        let mut all = Vec::new();
        for kind in [Statement::Reserve, Statement::Insert] {
            for style in [Placeholders::Numbered, Placeholders::Anonymous] {
                for rows in CHUNK_ROWS {
                    all.push((kind, rows, style, build_statement(kind, rows, style)));
                }
            }
        }
        all
    });
    STATEMENTS
        .iter()
        .find(|(k, size, style, _)| *k == kind && *size == rows && *style == placeholders)
        .map(|(_, _, _, sql)| sql.as_str())
        .expect("chunk sizes come from CHUNK_ROWS")
}

fn build_statement(kind: Statement, rows: usize, placeholders: Placeholders) -> String {
    let columns = kind.columns();
    let mut sql = kind.head();
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ",(" });
        for column in 0..columns {
            if column > 0 {
                sql.push(',');
            }
            match placeholders {
                Placeholders::Numbered => {
                    let _ = write!(sql, "${}", row * columns + column + 1);
                }
                Placeholders::Anonymous => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql.push_str(kind.tail());
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_few_cached_statements() {
        let split = |mut n: usize| {
            let mut sizes = Vec::new();
            while n > 0 {
                let rows = chunk_rows(n);
                sizes.push(rows);
                n -= rows;
            }
            sizes
        };
        assert_eq!(split(10), [8, 2]);
        assert_eq!(split(37), [32, 4, 1]);
        assert_eq!(split(600), [256, 256, 64, 16, 8]);
    }

    #[test]
    fn statements_number_or_leave_anonymous_their_parameters() {
        assert_eq!(
            statement(Statement::Reserve, 2, Placeholders::Numbered),
            "INSERT INTO room_seq (room_id, last_seq) VALUES ($1,$2),($3,$4) \
             ON CONFLICT (room_id) DO UPDATE SET last_seq = room_seq.last_seq + excluded.last_seq \
             RETURNING room_id, last_seq"
        );
        assert!(statement(Statement::Insert, 1, Placeholders::Anonymous)
            .ends_with("VALUES (?,?,?,?,?,?,?,?,?)"));
    }
}
