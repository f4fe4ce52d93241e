//! The writer: one database connection, driven from a thread of its own.
//!
//! A commit is several round trips (begin, reserve, insert, commit), and
//! each wakes the task that waits on it. Under saturating fan-out every
//! tokio worker has a long run queue, and a task woken from outside the
//! runtime (SQLite's worker thread, or the network) waits its turn in it:
//! commits took three to four times as long as on an idle machine. Here
//! the round trips wake a thread that does nothing else, and the sequencer
//! is woken once per batch. A connection of its own also keeps writes from
//! queueing behind history reads for a pooled one.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chat_proto::{ChatMessage, RoomEvent, RoomId};
use sqlx::{Any, AnyConnection, AnyPool, Row, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::files;
use super::statements::{chunk_rows, statement, Placeholders, Statement, EVENT_COLUMNS};
use super::{message_from_row, LogKind, PoolSettings, MESSAGE_KINDS};
use crate::store::rules::{self, Decision, Target};
use crate::store::{
    Appended, Change, NewEvent, NewMessage, Refusal, StoreError, CLIENT_ID_WINDOW_MS,
};

type Reply = oneshot::Sender<Result<Vec<Appended>, StoreError>>;

enum Job {
    Append {
        batch: Vec<NewEvent>,
        reply: Reply,
    },
    Change {
        change: Change,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

/// A handle to the writer thread. The thread ends on [`Writer::close`] or
/// when the last handle is dropped.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the thread and opens its connection; fails if it cannot.
    pub(super) async fn start(settings: PoolSettings) -> Result<Writer, StoreError> {
        let (jobs, queue) = mpsc::channel(16);
        let (ready, started) = oneshot::channel();
        std::thread::Builder::new()
            .name("chat-store-writer".into())
            .spawn(move || run_thread(settings, queue, ready))?;
        started.await.map_err(|_| StoreError::WriterGone)??;
        Ok(Writer { jobs })
    }

    pub(super) async fn append(&self, batch: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Append { batch, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Makes a change; true if it changed anything.
    pub(super) async fn change(&self, change: Change) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Change { change, reply };
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Finishes the jobs queued before it, then closes the connection.
    pub(super) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Job::Close { done }).await.is_ok() {
            let _ = closed.await;
        }
    }
}

fn run_thread(
    settings: PoolSettings,
    queue: mpsc::Receiver<Job>,
    ready: oneshot::Sender<Result<(), StoreError>>,
) {
    let opened = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StoreError::Io)
        .and_then(|runtime| Ok((runtime.block_on(settings.connect(1))?, runtime)));
    let (pool, runtime) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    runtime.block_on(serve(queue, pool, settings.placeholders()));
}

async fn serve(mut queue: mpsc::Receiver<Job>, pool: AnyPool, placeholders: Placeholders) {
    while let Some(job) = queue.recv().await {
        match job {
            Job::Append { batch, reply } => {
                let _ = reply.send(append_isolating(&pool, placeholders, &batch).await);
            }
            Job::Change { change, reply } => {
                let _ = reply.send(apply(&pool, change).await);
            }
            Job::Close { done } => {
                pool.close().await;
                let _ = done.send(());
                return;
            }
        }
    }
    pool.close().await;
}

/// Commits the batch in one transaction; if the database refuses it for
/// what some row holds, commits the rest without the rows it refuses on
/// their own. A batch mixes many senders' events, and one bad row must
/// not fail the others. Halving keeps this to about 2·log2(n) extra
/// transactions per bad row, and a database that is down fails at once
/// (its errors are not about rows, so nothing is retried).
async fn append_isolating(
    pool: &AnyPool,
    placeholders: Placeholders,
    batch: &[NewEvent],
) -> Result<Vec<Appended>, StoreError> {
    let earlier = earlier_sends(pool, batch).await?;
    if earlier.iter().all(Option::is_none) {
        return store_isolating(pool, placeholders, batch).await;
    }
    let fresh: Vec<NewEvent> = batch
        .iter()
        .zip(&earlier)
        .filter(|(_, earlier)| earlier.is_none())
        .map(|(new, _)| new.clone())
        .collect();
    let mut stored = store_isolating(pool, placeholders, &fresh)
        .await?
        .into_iter();
    let mut answers: Vec<Appended> = Vec::with_capacity(batch.len());
    for earlier in earlier {
        let answer = match earlier {
            None => stored.next().expect("one answer per fresh row"),
            Some(Earlier::Stored(message)) => Appended::Repeated(*message),
            Some(Earlier::InBatch(first)) => match &answers[first] {
                Appended::Stored(RoomEvent::Message(message)) | Appended::Repeated(message) => {
                    Appended::Repeated(message.clone())
                }
                other => other.clone(),
            },
        };
        answers.push(answer);
    }
    Ok(answers)
}

async fn apply(pool: &AnyPool, change: Change) -> Result<bool, StoreError> {
    let done = match change {
        // The update's condition keeps markers moving forward only; a
        // marker already there or further changes no row.
        Change::MarkRead { room, user, seq } => sqlx::query(
            "INSERT INTO read_markers (room_id, user_id, seq) VALUES ($1, $2, $3) \
             ON CONFLICT (room_id, user_id) DO UPDATE SET seq = excluded.seq \
             WHERE excluded.seq > read_markers.seq",
        )
        .bind(room.as_str())
        .bind(user)
        .bind(i64::try_from(seq).unwrap_or(i64::MAX))
        .execute(pool)
        .await?
        .rows_affected(),
        Change::AddMember { room, user, at_ms } => sqlx::query(
            "INSERT INTO room_members (room_id, user_id, added_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (room_id, user_id) DO NOTHING",
        )
        .bind(room.as_str())
        .bind(user)
        .bind(at_ms)
        .execute(pool)
        .await?
        .rows_affected(),
        Change::RemoveMember { room, user } => {
            sqlx::query("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2")
                .bind(room.as_str())
                .bind(user)
                .execute(pool)
                .await?
                .rows_affected()
        }
        Change::OpenDm { room, users, at_ms } => {
            let mut tx = pool.begin().await?;
            let mut created = 0;
            for (user, peer) in [(&users[0], &users[1]), (&users[1], &users[0])] {
                let at_ms = activity_of(&mut tx, user, at_ms).await?;
                created += sqlx::query(
                    "INSERT INTO direct_messages (room_id, user_id, peer_id, last_activity_ms) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (room_id, user_id) DO NOTHING",
                )
                .bind(room.as_str())
                .bind(user.as_str())
                .bind(peer.as_str())
                .bind(at_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query(
                    "INSERT INTO room_members (room_id, user_id, added_at_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (room_id, user_id) DO NOTHING",
                )
                .bind(room.as_str())
                .bind(user.as_str())
                .bind(at_ms)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            created
        }
        Change::Block {
            user,
            blocked,
            at_ms,
        } => sqlx::query(
            "INSERT INTO blocks (user_id, blocked_id, created_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, blocked_id) DO NOTHING",
        )
        .bind(user)
        .bind(blocked)
        .bind(at_ms)
        .execute(pool)
        .await?
        .rows_affected(),
        Change::Unblock { user, blocked } => {
            sqlx::query("DELETE FROM blocks WHERE user_id = $1 AND blocked_id = $2")
                .bind(user)
                .bind(blocked)
                .execute(pool)
                .await?
                .rows_affected()
        }
        Change::LastSeen { user, at_ms } => sqlx::query(
            "INSERT INTO presence (user_id, last_seen_ms) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms",
        )
        .bind(user)
        .bind(at_ms)
        .execute(pool)
        .await?
        .rows_affected(),
        Change::AddFile(file) => return files::add(pool, &file).await,
        Change::SweepFiles { unsent_before_ms } => {
            return files::sweep(pool, unsent_before_ms).await
        }
        Change::ForgetBlob(hash) => return files::forget(pool, &hash).await,
    };
    Ok(done > 0)
}

/// Where a row's `clientId` was used before by the same user in the same
/// room: in a stored message within the window, or earlier in the batch.
enum Earlier {
    Stored(Box<ChatMessage>),
    InBatch(usize),
}

async fn earlier_sends(
    pool: &AnyPool,
    batch: &[NewEvent],
) -> Result<Vec<Option<Earlier>>, StoreError> {
    let mut earlier = Vec::with_capacity(batch.len());
    for (index, event) in batch.iter().enumerate() {
        let (new, client_id) = match event {
            NewEvent::Message(
                new @ NewMessage {
                    client_id: Some(client_id),
                    ..
                },
            ) => (new, client_id),
            _ => {
                earlier.push(None);
                continue;
            }
        };
        let same = |other: &NewEvent| match other {
            NewEvent::Message(other) => {
                other.client_id.as_ref() == Some(client_id)
                    && other.room_id == new.room_id
                    && other.user_id == new.user_id
            }
            _ => false,
        };
        if let Some(first) = batch[..index].iter().position(same) {
            earlier.push(Some(Earlier::InBatch(first)));
            continue;
        }
        let row = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM room_events WHERE room_id = $1 AND user_id = $2 \
             AND client_id = $3 AND created_at_ms >= $4 AND {MESSAGE_KINDS} \
             ORDER BY seq DESC LIMIT 1"
        ))
        .bind(new.room_id.as_str())
        .bind(&*new.user_id)
        .bind(client_id.as_str())
        .bind(new.timestamp_ms - CLIENT_ID_WINDOW_MS)
        .fetch_optional(pool)
        .await?;
        let mut original = row.as_ref().map(message_from_row).transpose()?;
        if let Some(message) = original.as_mut() {
            files::fill_attachments(pool, &mut [message]).await?;
        }
        earlier.push(original.map(|message| Earlier::Stored(Box::new(message))));
    }
    Ok(earlier)
}

/// Stores every row, isolating the ones the database refuses.
async fn store_isolating(
    pool: &AnyPool,
    placeholders: Placeholders,
    batch: &[NewEvent],
) -> Result<Vec<Appended>, StoreError> {
    let mut done: Vec<Appended> = Vec::with_capacity(batch.len());
    // Halves still to commit, in batch order (a stack: the last pushed
    // is the next in order), so each room's `seq`s follow batch order.
    let mut pending: Vec<&[NewEvent]> = vec![batch];
    while let Some(part) = pending.pop() {
        match append(pool, placeholders, part).await {
            Ok(answers) => done.extend(answers),
            Err(StoreError::Database(error)) if refuses_row(&error) => {
                if let [single] = part {
                    tracing::warn!(room = ?single.room_id().as_str(), %error, "database refused an event");
                    done.push(Appended::Refused(Refusal::Rejected(error.to_string())));
                } else {
                    let (first, second) = part.split_at(part.len() / 2);
                    pending.push(second);
                    pending.push(first);
                }
            }
            Err(StoreError::Raced(refusal)) => {
                if let [_] = part {
                    done.push(Appended::Refused(refusal));
                } else {
                    let (first, second) = part.split_at(part.len() / 2);
                    pending.push(second);
                    pending.push(first);
                }
            }
            Err(error) => return Err(error),
        }
    }
    Ok(done)
}

/// Whether the database refused a statement for the data in it (a
/// constraint, a value it cannot hold) rather than for being unavailable.
fn refuses_row(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(error) = error else {
        return false;
    };
    let Some(code) = error.code() else {
        return false;
    };
    if code.len() == 5 {
        // PostgreSQL's SQLSTATE: class 22 data exception, 23 integrity
        // constraint violation.
        code.starts_with("22") || code.starts_with("23")
    } else {
        // SQLite's (extended) result code: the primary code is the low byte.
        // TOOBIG, CONSTRAINT, MISMATCH.
        code.parse::<u32>()
            .is_ok_and(|code| matches!(code & 0xff, 18..=20))
    }
}

/// Decides each row (edits, deletions and reactions against what the
/// database holds, in the transaction), reserves each room's next `seq`s
/// for the rows to store, and stores them, in one transaction.
async fn append(
    pool: &AnyPool,
    placeholders: Placeholders,
    batch: &[NewEvent],
) -> Result<Vec<Appended>, StoreError> {
    let mut tx = pool.begin().await?;
    let mut attached = HashMap::new();
    let decisions = if batch
        .iter()
        .all(|e| matches!(e, NewEvent::Message(new) if new.attachments.is_empty()))
    {
        // The hot path: new messages without files are always stored.
        vec![Decision::Store; batch.len()]
    } else {
        lock_rooms(&mut tx, batch).await?;
        let mut targets = load_targets(&mut tx, batch).await?;
        attached = files::named_by(&mut tx, batch).await?;
        rules::decide(batch, &mut targets, &mut attached)
    };
    // Rooms are reserved in a fixed order so two writers locking the
    // same rooms can never deadlock each other.
    let mut per_room: BTreeMap<&RoomId, u64> = BTreeMap::new();
    for (event, decision) in batch.iter().zip(&decisions) {
        if *decision == Decision::Store {
            *per_room.entry(event.room_id()).or_default() += 1;
        }
    }
    let rooms: Vec<(&RoomId, u64)> = per_room.into_iter().collect();
    let mut next_seq: BTreeMap<&RoomId, u64> = BTreeMap::new();
    // One statement reserves `seq`s for many rooms.
    let mut rest = rooms.as_slice();
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(chunk_rows(rest.len()));
        let mut reserve = sqlx::query(statement(Statement::Reserve, chunk.len(), placeholders));
        for (room, count) in chunk {
            reserve = reserve.bind(room.as_str()).bind(*count as i64);
        }
        for row in reserve.fetch_all(&mut *tx).await? {
            let room: String = row.try_get(0)?;
            let last: i64 = row.try_get(1)?;
            let (room, count) = chunk
                .iter()
                .find(|(id, _)| id.as_str() == room)
                .ok_or_else(|| sqlx::Error::Protocol(format!("unexpected room {room}")))?;
            next_seq.insert(room, last as u64 - count + 1);
        }
        rest = tail;
    }
    let answers: Vec<Appended> = batch
        .iter()
        .zip(decisions)
        .map(|(event, decision)| match decision {
            Decision::Store => {
                let seq = next_seq
                    .get_mut(event.room_id())
                    .expect("every room reserved");
                *seq += 1;
                let mut stored = event.stored(*seq - 1);
                if let (NewEvent::Message(new), RoomEvent::Message(message)) = (event, &mut stored)
                {
                    message.attachments = new
                        .attachments
                        .iter()
                        .filter_map(|id| attached.get(id))
                        .map(|file| file.attachment())
                        .collect();
                }
                Appended::Stored(stored)
            }
            Decision::Unchanged => Appended::Unchanged,
            Decision::Refuse(refusal) => Appended::Refused(refusal),
        })
        .collect();
    let stored_messages: Vec<&ChatMessage> = answers
        .iter()
        .filter_map(|answer| match answer {
            Appended::Stored(RoomEvent::Message(message)) => Some(message),
            _ => None,
        })
        .collect();
    let mut rest = stored_messages.as_slice();
    while !rest.is_empty() {
        let rows = chunk_rows(rest.len());
        let (chunk, tail) = rest.split_at(rows);
        let mut insert = sqlx::query(statement(Statement::Insert, rows, placeholders));
        for m in chunk {
            insert = insert
                .bind(m.room_id.as_str())
                .bind(m.seq as i64)
                .bind(m.id.as_str())
                .bind(&*m.user_id)
                .bind(&*m.username)
                .bind(m.message.as_str())
                .bind(m.timestamp_ms)
                .bind(m.client_id.as_deref())
                .bind(m.kind.as_str());
        }
        insert.execute(&mut *tx).await?;
        rest = tail;
    }
    for (event, answer) in batch.iter().zip(&answers) {
        if let (NewEvent::Message(new), Appended::Stored(stored)) = (event, answer) {
            if !new.attachments.is_empty() {
                let seq = stored.seq().expect("a stored message has a seq");
                files::attach(&mut tx, new, seq).await?;
            }
        }
    }
    // A direct conversation's list position follows its last message.
    let mut dm_activity: BTreeMap<&str, i64> = BTreeMap::new();
    for message in &stored_messages {
        if message.room_id.starts_with(chat_proto::ids::DM_ROOM_PREFIX) {
            dm_activity.insert(&message.room_id, message.timestamp_ms);
        }
    }
    for (room, at_ms) in dm_activity {
        let users: Vec<String> =
            sqlx::query_scalar("SELECT user_id FROM direct_messages WHERE room_id = $1")
                .bind(room)
                .fetch_all(&mut *tx)
                .await?;
        for user in users {
            let at_ms = activity_of(&mut tx, &user, at_ms).await?;
            sqlx::query(
                "UPDATE direct_messages SET last_activity_ms = $1 \
                 WHERE room_id = $2 AND user_id = $3",
            )
            .bind(at_ms)
            .bind(room)
            .bind(&user)
            .execute(&mut *tx)
            .await?;
        }
    }
    // In batch order, after the messages: a change may be about a message
    // of this batch, and changes to one message apply in order.
    for (event, answer) in batch.iter().zip(&answers) {
        if let Appended::Stored(stored) = answer {
            if !matches!(event, NewEvent::Message(_)) {
                store_change(&mut tx, event, stored).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(answers)
}

/// When the user's conversation written to at `at_ms` counts as active: no
/// two of one user's conversations share a time.
async fn activity_of(
    tx: &mut Transaction<'_, Any>,
    user: &str,
    at_ms: i64,
) -> Result<i64, StoreError> {
    let latest: Option<i64> =
        sqlx::query_scalar("SELECT MAX(last_activity_ms) FROM direct_messages WHERE user_id = $1")
            .bind(user)
            .fetch_one(&mut **tx)
            .await?;
    Ok(crate::store::next_activity(latest, at_ms))
}

/// Takes the row lock of the rooms whose messages the batch changes before
/// reading those messages, so a writer in another process cannot change
/// them between our reading and our writing (SQLite has one writer at a
/// time anyway). Creates no row.
async fn lock_rooms(tx: &mut Transaction<'_, Any>, batch: &[NewEvent]) -> Result<(), StoreError> {
    // Messages that attach files read the files' records first.
    let rooms: BTreeSet<&RoomId> = batch
        .iter()
        .filter(|e| !matches!(e, NewEvent::Message(new) if new.attachments.is_empty()))
        .map(NewEvent::room_id)
        .collect();
    for room in rooms {
        sqlx::query("UPDATE room_seq SET last_seq = last_seq WHERE room_id = $1")
            .bind(room.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// What the database holds of each message the batch's changes name: its
/// author, kind and state, its reactions per emoji, and whether the users
/// reacting in the batch have reacted so already.
async fn load_targets(
    tx: &mut Transaction<'_, Any>,
    batch: &[NewEvent],
) -> Result<HashMap<String, Target>, StoreError> {
    let conn: &mut AnyConnection = tx;
    let mut targets: HashMap<String, Target> = HashMap::new();
    for event in batch {
        let Some(id) = event.target() else { continue };
        if !targets.contains_key(id) {
            let row = sqlx::query(&format!(
                "SELECT {EVENT_COLUMNS} FROM room_events WHERE id = $1 AND {MESSAGE_KINDS}"
            ))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(row) = row else { continue };
            let message = message_from_row(&row)?;
            let mut target = Target::fresh(&message.room_id, message.user_id, message.kind);
            target.deleted = message.deleted;
            let counts = sqlx::query(
                "SELECT emoji, COUNT(*) AS n FROM reactions WHERE message_id = $1 GROUP BY emoji",
            )
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
            for count in counts {
                target.emoji_counts.insert(
                    count.try_get("emoji")?,
                    count.try_get::<i64, _>("n")? as u64,
                );
            }
            targets.insert(id.to_owned(), target);
        }
        if let NewEvent::React(reaction) = event {
            let Some(target) = targets.get_mut(id) else {
                continue;
            };
            if target
                .reacted
                .iter()
                .any(|(_, user)| *user == reaction.user_id)
            {
                continue;
            }
            let emojis: Vec<String> = sqlx::query_scalar(
                "SELECT emoji FROM reactions WHERE message_id = $1 AND user_id = $2",
            )
            .bind(id)
            .bind(&*reaction.user_id)
            .fetch_all(&mut *conn)
            .await?;
            target.reacted.extend(
                emojis
                    .into_iter()
                    .map(|emoji| (emoji, reaction.user_id.clone())),
            );
        }
    }
    Ok(targets)
}

/// Stores an edit, deletion or reaction: its row in the log, and what it
/// changes in the message's current state.
async fn store_change(
    tx: &mut Transaction<'_, Any>,
    event: &NewEvent,
    stored: &RoomEvent,
) -> Result<(), StoreError> {
    let conn: &mut AnyConnection = tx;
    let seq = stored.seq().expect("a stored change has a seq") as i64;
    let (id, message_id, user_id, body, at_ms, added) = match event {
        NewEvent::Message(_) => unreachable!("messages are inserted in bulk"),
        NewEvent::CallEnded(call) => return super::calls::store(conn, call, seq).await,
        NewEvent::Edit(edit) => (
            &edit.id,
            &edit.message_id,
            edit.user_id.clone(),
            edit.message.as_str(),
            edit.at_ms,
            None,
        ),
        NewEvent::Delete(deletion) => (
            &deletion.id,
            &deletion.message_id,
            deletion.by.user_id(),
            "",
            deletion.at_ms,
            None,
        ),
        NewEvent::React(reaction) => (
            &reaction.id,
            &reaction.message_id,
            reaction.user_id.clone(),
            reaction.emoji.as_str(),
            reaction.at_ms,
            Some(i64::from(reaction.added)),
        ),
    };
    sqlx::query(
        "INSERT INTO room_events (room_id, seq, id, user_id, username, body, created_at_ms, \
         kind, target_id, added) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(event.room_id().as_str())
    .bind(seq)
    .bind(id.as_str())
    .bind(&*user_id)
    .bind(&*user_id)
    .bind(body)
    .bind(at_ms)
    .bind(LogKind::of(event).as_str())
    .bind(message_id.as_str())
    .bind(added)
    .execute(&mut *conn)
    .await?;
    match event {
        NewEvent::Message(_) | NewEvent::CallEnded(_) => {}
        NewEvent::Edit(edit) => {
            sqlx::query("UPDATE room_events SET body = $1, edited_at_ms = $2 WHERE id = $3")
                .bind(edit.message.as_str())
                .bind(edit.at_ms)
                .bind(message_id.as_str())
                .execute(&mut *conn)
                .await?;
        }
        NewEvent::Delete(_) => {
            // A deleted message's words are gone everywhere: its text, the
            // text of its edits, and its reactions.
            sqlx::query("UPDATE room_events SET body = '', deleted = 1 WHERE id = $1")
                .bind(message_id.as_str())
                .execute(&mut *conn)
                .await?;
            sqlx::query("UPDATE room_events SET body = '' WHERE target_id = $1 AND kind = 'edit'")
                .bind(message_id.as_str())
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM reactions WHERE message_id = $1")
                .bind(message_id.as_str())
                .execute(&mut *conn)
                .await?;
            // Its files go too; their blobs, once unreferenced, are deleted
            // from the file store after this commits.
            files::release_message(tx, message_id).await?;
        }
        NewEvent::React(reaction) if reaction.added => {
            sqlx::query(
                "INSERT INTO reactions (room_id, message_seq, message_id, emoji, user_id, seq) \
                 SELECT room_id, seq, id, $2, $3, $4 FROM room_events WHERE id = $1",
            )
            .bind(message_id.as_str())
            .bind(reaction.emoji.as_str())
            .bind(&*reaction.user_id)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
        }
        NewEvent::React(reaction) => {
            sqlx::query(
                "DELETE FROM reactions WHERE message_id = $1 AND emoji = $2 AND user_id = $3",
            )
            .bind(message_id.as_str())
            .bind(reaction.emoji.as_str())
            .bind(&*reaction.user_id)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}
