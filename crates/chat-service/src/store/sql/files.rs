//! The `files` and `blobs` tables: reads on the pool, writes on the
//! writer's connection (inside the batch's transaction where a message
//! attaches files or a deletion releases them).

use std::collections::{BTreeMap, HashMap};

use chat_files::ContentHash;
use chat_proto::{ChatMessage, RoomId};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row, Transaction};

use super::{clamp_i64, decode_error};
use crate::store::{FileRecord, NewEvent, NewMessage, Refusal, StoreError};

const FILE_COLUMNS: &str = "id, room_id, uploader_id, name, content_type, size, sha256, \
    width, height, thumbnail_size, created_at_ms, message_id";

fn file_from_row(row: &AnyRow) -> Result<FileRecord, StoreError> {
    let room_id: String = row.try_get("room_id")?;
    let sha256: String = row.try_get("sha256")?;
    let dimension = |name: &str| -> Result<Option<u32>, StoreError> {
        Ok(row
            .try_get::<Option<i64>, _>(name)?
            .and_then(|v| u32::try_from(v).ok()))
    };
    Ok(FileRecord {
        id: row.try_get("id")?,
        room_id: RoomId::parse(&room_id, &chat_proto::ProtoLimits::default())
            .map_err(|_| decode_error("a stored file's room id"))?,
        uploader_id: row.try_get::<String, _>("uploader_id")?.into(),
        name: row.try_get("name")?,
        content_type: row.try_get("content_type")?,
        size: row.try_get::<i64, _>("size")? as u64,
        sha256: sha256
            .parse()
            .map_err(|_| decode_error("a stored file's sha256"))?,
        width: dimension("width")?,
        height: dimension("height")?,
        thumbnail_size: row
            .try_get::<Option<i64>, _>("thumbnail_size")?
            .map(|v| v as u64),
        created_at_ms: row.try_get("created_at_ms")?,
        message_id: row.try_get("message_id")?,
    })
}

pub(super) async fn file(pool: &AnyPool, id: &str) -> Result<Option<FileRecord>, StoreError> {
    let row = sqlx::query(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(file_from_row).transpose()
}

pub(super) async fn condemned_blobs(
    pool: &AnyPool,
    limit: usize,
) -> Result<Vec<ContentHash>, StoreError> {
    let hashes: Vec<String> =
        sqlx::query_scalar("SELECT sha256 FROM blobs WHERE condemned = 1 ORDER BY sha256 LIMIT $1")
            .bind(limit as i64)
            .fetch_all(pool)
            .await?;
    hashes
        .iter()
        .map(|hash| {
            hash.parse()
                .map_err(|_| decode_error("a stored blob's sha256"))
        })
        .collect()
}

/// Gives each message its attachments, in their order. The messages are
/// one room's; deleted ones have none.
pub(super) async fn fill_attachments<'c>(
    executor: impl Executor<'c, Database = Any>,
    messages: &mut [&mut ChatMessage],
) -> Result<(), StoreError> {
    let live = messages.iter().filter(|m| !m.deleted);
    let (Some(first), Some(last)) = (live.clone().map(|m| m.seq).min(), live.map(|m| m.seq).max())
    else {
        return Ok(());
    };
    let room_id = messages[0].room_id.clone();
    let rows = sqlx::query(&format!(
        "SELECT {FILE_COLUMNS} FROM files WHERE room_id = $1 AND message_seq BETWEEN $2 AND $3 \
         AND message_id IS NOT NULL ORDER BY message_seq, ordinal"
    ))
    .bind(room_id.as_str())
    .bind(clamp_i64(first))
    .bind(clamp_i64(last))
    .fetch_all(executor)
    .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut by_message: HashMap<String, Vec<chat_proto::Attachment>> = HashMap::new();
    for row in &rows {
        let file = file_from_row(row)?;
        if let Some(message_id) = &file.message_id {
            by_message
                .entry(message_id.clone())
                .or_default()
                .push(file.attachment());
        }
    }
    for message in messages.iter_mut().filter(|m| !m.deleted) {
        if let Some(attachments) = by_message.remove(&message.id) {
            message.attachments = attachments;
        }
    }
    Ok(())
}

/// Records an upload, counting a reference to its blob; false (nothing
/// recorded) when the blob is condemned.
pub(super) async fn add(pool: &AnyPool, file: &FileRecord) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let counted = sqlx::query(
        "INSERT INTO blobs (sha256, refs, condemned) VALUES ($1, 1, 0) \
         ON CONFLICT (sha256) DO UPDATE SET refs = blobs.refs + 1 WHERE blobs.condemned = 0",
    )
    .bind(file.sha256.to_hex())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if counted == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query(&format!(
        "INSERT INTO files ({FILE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    ))
    .bind(file.id.as_str())
    .bind(file.room_id.as_str())
    .bind(&*file.uploader_id)
    .bind(file.name.as_str())
    .bind(file.content_type.as_str())
    .bind(clamp_i64(file.size))
    .bind(file.sha256.to_hex())
    .bind(file.width.map(i64::from))
    .bind(file.height.map(i64::from))
    .bind(file.thumbnail_size.map(clamp_i64))
    .bind(file.created_at_ms)
    .bind(file.message_id.as_deref())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Deletes uploads never sent from before the cutoff, and the files of
/// messages that are gone; true if any was removed.
pub(super) async fn sweep(pool: &AnyPool, unsent_before_ms: i64) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    // Two statements: each row's condition is on the row alone or on
    // messages stored with it, so a file sent meanwhile is never taken
    // for an orphan.
    let mut gone: Vec<String> = sqlx::query_scalar(
        "DELETE FROM files WHERE message_id IS NULL AND created_at_ms < $1 RETURNING sha256",
    )
    .bind(unsent_before_ms)
    .fetch_all(&mut *tx)
    .await?;
    gone.extend(
        sqlx::query_scalar::<_, String>(
            "DELETE FROM files WHERE message_id IS NOT NULL AND NOT EXISTS \
             (SELECT 1 FROM room_events e WHERE e.id = files.message_id AND e.deleted = 0) \
             RETURNING sha256",
        )
        .fetch_all(&mut *tx)
        .await?,
    );
    let removed = !gone.is_empty();
    release(&mut tx, gone).await?;
    tx.commit().await?;
    Ok(removed)
}

/// The blob is deleted from the file store: forget it.
pub(super) async fn forget(pool: &AnyPool, hash: &ContentHash) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM blobs WHERE sha256 = $1 AND condemned = 1")
        .bind(hash.to_hex())
        .execute(pool)
        .await?
        .rows_affected();
    Ok(done > 0)
}

/// The records of every file the batch's messages attach.
pub(super) async fn named_by(
    tx: &mut Transaction<'_, Any>,
    batch: &[NewEvent],
) -> Result<HashMap<String, FileRecord>, StoreError> {
    let conn: &mut AnyConnection = tx;
    let mut files = HashMap::new();
    for event in batch {
        let NewEvent::Message(new) = event else {
            continue;
        };
        for id in &new.attachments {
            if files.contains_key(id) {
                continue;
            }
            let row = sqlx::query(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1"))
                .bind(id.as_str())
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(row) = row {
                files.insert(id.clone(), file_from_row(&row)?);
            }
        }
    }
    Ok(files)
}

/// Marks the message's files as sent with it. A file another writer
/// attached or deleted since it was read refuses the message.
pub(super) async fn attach(
    tx: &mut Transaction<'_, Any>,
    message: &NewMessage,
    seq: u64,
) -> Result<(), StoreError> {
    let conn: &mut AnyConnection = tx;
    for (position, id) in message.attachments.iter().enumerate() {
        let done = sqlx::query(
            "UPDATE files SET message_id = $1, message_seq = $2, ordinal = $3 \
             WHERE id = $4 AND room_id = $5 AND uploader_id = $6 AND message_id IS NULL",
        )
        .bind(message.id.as_str())
        .bind(clamp_i64(seq))
        .bind(position as i64)
        .bind(id.as_str())
        .bind(message.room_id.as_str())
        .bind(&*message.user_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if done != 1 {
            return Err(StoreError::Raced(Refusal::InvalidAttachment));
        }
    }
    Ok(())
}

/// Deletes the files of a deleted message; true if a blob lost its last
/// reference.
pub(super) async fn release_message(
    tx: &mut Transaction<'_, Any>,
    message_id: &str,
) -> Result<bool, StoreError> {
    let gone: Vec<String> =
        sqlx::query_scalar("DELETE FROM files WHERE message_id = $1 RETURNING sha256")
            .bind(message_id)
            .fetch_all(&mut **tx)
            .await?;
    release(tx, gone).await
}

/// One reference fewer to each blob per hash given; a blob with none left
/// is condemned. True if any was.
async fn release(tx: &mut Transaction<'_, Any>, gone: Vec<String>) -> Result<bool, StoreError> {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for hash in gone {
        *counts.entry(hash).or_default() += 1;
    }
    let mut condemned = false;
    for (hash, count) in counts {
        let now: Option<i64> = sqlx::query_scalar(
            "UPDATE blobs SET refs = refs - $2, \
             condemned = CASE WHEN refs - $2 <= 0 THEN 1 ELSE condemned END \
             WHERE sha256 = $1 RETURNING condemned",
        )
        .bind(hash.as_str())
        .bind(count)
        .fetch_optional(&mut **tx)
        .await?;
        condemned |= now == Some(1);
    }
    Ok(condemned)
}
