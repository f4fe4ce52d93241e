//! Calls in the SQL log: a `call` row in `room_events` takes the room's
//! `seq` like any durable event; its record lives in `calls` and
//! `call_participants` (migration 0008).

use std::str::FromStr;

use chat_proto::call::{CallMedia, CallParticipant, CallRecord, EndReason};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use super::{decode_error, LogKind};
use crate::store::{NewCall, StoreError};

/// Stores an ended call with `seq`, in the writer's transaction.
pub(super) async fn store(
    conn: &mut AnyConnection,
    call: &NewCall,
    seq: i64,
) -> Result<(), StoreError> {
    let record = &call.record;
    sqlx::query(
        "INSERT INTO room_events (room_id, seq, id, user_id, username, body, created_at_ms, kind) \
         VALUES ($1, $2, $3, $4, $5, '', $6, $7)",
    )
    .bind(call.room_id.as_str())
    .bind(seq)
    .bind(record.call_id.as_str())
    .bind(&*record.user_id)
    .bind(&*record.username)
    .bind(record.ended_at_ms)
    .bind(LogKind::Call.as_str())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO calls (call_id, room_id, media, started_at_ms, duration_secs, reason) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(record.call_id.as_str())
    .bind(call.room_id.as_str())
    .bind(record.media.as_str())
    .bind(record.started_at_ms)
    .bind(i64::try_from(record.duration_secs).unwrap_or(i64::MAX))
    .bind(record.reason.as_str())
    .execute(&mut *conn)
    .await?;
    for (position, participant) in record.participants.iter().enumerate() {
        sqlx::query(
            "INSERT INTO call_participants (call_id, position, user_id, username, state) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(record.call_id.as_str())
        .bind(position as i64)
        .bind(&*participant.user_id)
        .bind(&*participant.username)
        .bind(participant.state.as_str())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The record of the call a `call` row of the log stands for.
pub(super) async fn record(pool: &AnyPool, row: &AnyRow) -> Result<CallRecord, StoreError> {
    let call_id: String = row.try_get("id")?;
    let call = sqlx::query(
        "SELECT media, started_at_ms, duration_secs, reason FROM calls WHERE call_id = $1",
    )
    .bind(call_id.as_str())
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| decode_error("a call row without its record"))?;
    let participants = sqlx::query(
        "SELECT user_id, username, state FROM call_participants WHERE call_id = $1 \
         ORDER BY position",
    )
    .bind(call_id.as_str())
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| {
        Ok(CallParticipant {
            user_id: row.try_get::<String, _>("user_id")?.into(),
            username: row.try_get::<String, _>("username")?.into(),
            state: parsed(row, "state")?,
        })
    })
    .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(CallRecord {
        room_id: row.try_get("room_id")?,
        user_id: row.try_get::<String, _>("user_id")?.into(),
        username: row.try_get::<String, _>("username")?.into(),
        ended_at_ms: row.try_get("created_at_ms")?,
        seq: row.try_get::<i64, _>("seq")? as u64,
        media: parsed::<CallMedia>(&call, "media")?,
        started_at_ms: call.try_get("started_at_ms")?,
        duration_secs: call.try_get::<i64, _>("duration_secs")?.max(0) as u64,
        reason: parsed::<EndReason>(&call, "reason")?,
        participants,
        call_id,
    })
}

fn parsed<T: FromStr>(row: &AnyRow, column: &str) -> Result<T, StoreError> {
    row.try_get::<String, _>(column)?
        .parse()
        .map_err(|_| decode_error("an unknown value in a call record"))
}

/// Forgets the records of calls whose rows were pruned from the log.
pub(super) async fn prune(pool: &AnyPool) -> Result<(), StoreError> {
    for table in ["call_participants", "calls"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE NOT EXISTS \
             (SELECT 1 FROM room_events e WHERE e.id = {table}.call_id)"
        ))
        .execute(pool)
        .await?;
    }
    Ok(())
}
