//! Whether an edit, deletion or reaction may happen, and whether a message
//! may carry its attachments: one set of rules for every backend, applied
//! to what the backend knows of the messages and files a batch names. Rows
//! are decided in batch order and each sees the effect of the ones before
//! it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chat_proto::client::MAX_DISTINCT_REACTIONS;
use chat_proto::MessageKind;

use super::{Actor, FileRecord, NewEvent, NewMessage, Refusal};

/// What a backend knows of a message that rows of a batch name.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) room_id: String,
    pub(super) author: Arc<str>,
    pub(super) kind: MessageKind,
    pub(super) deleted: bool,
    /// Reactions per emoji.
    pub(super) emoji_counts: HashMap<String, u64>,
    /// The (emoji, user) reactions that exist, among those the batch names
    /// (a backend need not load the others).
    pub(super) reacted: HashSet<(String, Arc<str>)>,
}

impl Target {
    /// A message that has just been stored: no reactions yet.
    pub(super) fn fresh(room_id: &str, author: Arc<str>, kind: MessageKind) -> Target {
        Target {
            room_id: room_id.to_owned(),
            author,
            kind,
            deleted: false,
            emoji_counts: HashMap::new(),
            reacted: HashSet::new(),
        }
    }
}

/// What to do with one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    Store,
    /// Nothing would change.
    Unchanged,
    Refuse(Refusal),
}

/// Decides each row of `batch` (given in order) against `targets`, keyed by
/// message id, and `files`, keyed by file id, updating them as stored rows
/// would. A message in the batch becomes a target for the rows after it,
/// and the files it attaches are attached for them.
pub(super) fn decide<'a>(
    batch: impl IntoIterator<Item = &'a NewEvent>,
    targets: &mut HashMap<String, Target>,
    files: &mut HashMap<String, FileRecord>,
) -> Vec<Decision> {
    batch
        .into_iter()
        .map(|event| decide_one(event, targets, files))
        .collect()
}

/// A message may carry only its sender's uploads to its room that no
/// message carries yet; one it may not carry refuses the whole message.
fn attach(new: &NewMessage, files: &mut HashMap<String, FileRecord>) -> Result<(), Refusal> {
    let allowed = |id: &String| {
        files.get(id).is_some_and(|file| {
            file.room_id == new.room_id
                && file.uploader_id == new.user_id
                && file.message_id.is_none()
        })
    };
    if !new.attachments.iter().all(allowed) {
        return Err(Refusal::InvalidAttachment);
    }
    for id in &new.attachments {
        if let Some(file) = files.get_mut(id) {
            file.message_id = Some(new.id.clone());
        }
    }
    Ok(())
}

fn decide_one(
    event: &NewEvent,
    targets: &mut HashMap<String, Target>,
    files: &mut HashMap<String, FileRecord>,
) -> Decision {
    let room = event.room_id().as_str();
    let target = match event {
        // A call's record changes no message.
        NewEvent::CallEnded(_) => return Decision::Store,
        NewEvent::Message(new) => {
            if let Err(refusal) = attach(new, files) {
                return Decision::Refuse(refusal);
            }
            targets.insert(
                new.id.clone(),
                Target::fresh(room, new.user_id.clone(), new.kind),
            );
            return Decision::Store;
        }
        NewEvent::Edit(edit) => targets.get_mut(&edit.message_id),
        NewEvent::Delete(deletion) => targets.get_mut(&deletion.message_id),
        NewEvent::React(reaction) => targets.get_mut(&reaction.message_id),
    };
    // A message of another room is as unknown as one that never was.
    let Some(target) = target.filter(|t| t.room_id == room && !t.deleted) else {
        return Decision::Refuse(Refusal::NotFound);
    };
    match event {
        NewEvent::Message(_) | NewEvent::CallEnded(_) => unreachable!("decided above"),
        NewEvent::Edit(edit) => {
            if target.kind != MessageKind::User || target.author != edit.user_id {
                return Decision::Refuse(Refusal::Forbidden);
            }
            Decision::Store
        }
        NewEvent::Delete(deletion) => {
            let allowed = match &deletion.by {
                Actor::Moderator => true,
                Actor::User(user) => target.kind == MessageKind::User && target.author == *user,
            };
            if !allowed {
                return Decision::Refuse(Refusal::Forbidden);
            }
            target.deleted = true;
            target.emoji_counts.clear();
            target.reacted.clear();
            Decision::Store
        }
        NewEvent::React(reaction) => {
            let key = (reaction.emoji.clone(), reaction.user_id.clone());
            if reaction.added {
                if target.reacted.contains(&key) {
                    return Decision::Unchanged;
                }
                if !target.emoji_counts.contains_key(&reaction.emoji)
                    && target.emoji_counts.len() >= MAX_DISTINCT_REACTIONS
                {
                    return Decision::Refuse(Refusal::TooManyReactions);
                }
                *target
                    .emoji_counts
                    .entry(reaction.emoji.clone())
                    .or_default() += 1;
                target.reacted.insert(key);
            } else {
                if !target.reacted.remove(&key) {
                    return Decision::Unchanged;
                }
                if let Some(count) = target.emoji_counts.get_mut(&reaction.emoji) {
                    *count -= 1;
                    if *count == 0 {
                        target.emoji_counts.remove(&reaction.emoji);
                    }
                }
            }
            Decision::Store
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewDeletion, NewEdit, NewMessage, NewReaction};
    use chat_proto::{ProtoLimits, RoomId};

    fn room(name: &str) -> RoomId {
        RoomId::parse(name, &ProtoLimits::default()).unwrap()
    }

    fn message(id: &str, user: &str, kind: MessageKind) -> NewEvent {
        NewEvent::Message(NewMessage {
            id: id.into(),
            room_id: room("r"),
            user_id: user.into(),
            username: user.into(),
            message: "hi".into(),
            timestamp_ms: 0,
            client_id: None,
            kind,
            attachments: Vec::new(),
        })
    }

    fn edit(message_id: &str, user: &str) -> NewEvent {
        NewEvent::Edit(NewEdit {
            id: "e".into(),
            room_id: room("r"),
            message_id: message_id.into(),
            user_id: user.into(),
            message: "new".into(),
            at_ms: 0,
        })
    }

    fn delete(message_id: &str, by: Actor) -> NewEvent {
        NewEvent::Delete(NewDeletion {
            id: "d".into(),
            room_id: room("r"),
            message_id: message_id.into(),
            by,
            at_ms: 0,
        })
    }

    fn react(message_id: &str, user: &str, emoji: &str, added: bool) -> NewEvent {
        NewEvent::React(NewReaction {
            id: "x".into(),
            room_id: room("r"),
            message_id: message_id.into(),
            user_id: user.into(),
            emoji: emoji.into(),
            added,
            at_ms: 0,
        })
    }

    use Decision::{Refuse, Store, Unchanged};

    #[test]
    fn authors_edit_and_delete_their_own_messages_only() {
        let mut targets = HashMap::new();
        let batch = [
            message("m", "ann", MessageKind::User),
            message("s", "system", MessageKind::System),
            edit("m", "bob"),
            edit("m", "ann"),
            edit("s", "system"),
            delete("m", Actor::User("bob".into())),
            edit("nope", "ann"),
            delete("m", Actor::User("ann".into())),
            edit("m", "ann"),
            delete("m", Actor::User("ann".into())),
            delete("s", Actor::User("system".into())),
            delete("s", Actor::Moderator),
        ];
        assert_eq!(
            decide(&batch, &mut targets, &mut HashMap::new()),
            [
                Store,
                Store,
                Refuse(Refusal::Forbidden),
                Store,
                Refuse(Refusal::Forbidden),
                Refuse(Refusal::Forbidden),
                Refuse(Refusal::NotFound),
                Store,
                Refuse(Refusal::NotFound),
                Refuse(Refusal::NotFound),
                Refuse(Refusal::Forbidden),
                Store,
            ]
        );
    }

    #[test]
    fn reactions_are_idempotent_and_bounded() {
        let mut targets = HashMap::new();
        let mut batch = vec![
            message("m", "ann", MessageKind::User),
            react("m", "bob", "👍", true),
            react("m", "bob", "👍", true),
            react("m", "ann", "👍", true),
            react("m", "ann", "🎉", false),
            react("m", "ann", "👍", false),
            react("m", "ann", "👍", false),
        ];
        for n in 0..MAX_DISTINCT_REACTIONS - 1 {
            batch.push(react("m", "bob", &format!("e{n}"), true));
        }
        batch.push(react("m", "ann", "one-too-many", true));
        // An emoji already there is not a new one.
        batch.push(react("m", "carl", "👍", true));
        // Removing the last of one frees a place.
        batch.push(react("m", "bob", "e0", false));
        batch.push(react("m", "ann", "one-too-many", true));
        let decisions = decide(&batch, &mut targets, &mut HashMap::new());
        assert_eq!(
            decisions[..7],
            [Store, Store, Unchanged, Store, Unchanged, Store, Unchanged]
        );
        let tail = &decisions[7 + MAX_DISTINCT_REACTIONS - 1..];
        assert_eq!(
            tail,
            [Refuse(Refusal::TooManyReactions), Store, Store, Store]
        );
    }

    fn file(id: &str, room_name: &str, uploader: &str) -> (String, FileRecord) {
        let record = FileRecord {
            id: id.into(),
            room_id: room(room_name),
            uploader_id: uploader.into(),
            name: "a.txt".into(),
            content_type: "text/plain".into(),
            size: 1,
            sha256: chat_files::ContentHash::of(id.as_bytes()),
            width: None,
            height: None,
            thumbnail_size: None,
            created_at_ms: 0,
            message_id: None,
        };
        (id.to_owned(), record)
    }

    fn with_files(id: &str, user: &str, attachments: &[&str]) -> NewEvent {
        let NewEvent::Message(mut new) = message(id, user, MessageKind::User) else {
            unreachable!()
        };
        new.attachments = attachments.iter().map(|a| a.to_string()).collect();
        NewEvent::Message(new)
    }

    #[test]
    fn messages_carry_their_senders_unsent_uploads_to_the_room_once() {
        let mut files: HashMap<String, FileRecord> = [
            file("mine", "r", "ann"),
            file("also-mine", "r", "ann"),
            file("bobs", "r", "bob"),
            file("elsewhere", "other", "ann"),
        ]
        .into_iter()
        .collect();
        let batch = [
            with_files("m1", "ann", &["bobs"]),
            with_files("m2", "ann", &["elsewhere"]),
            with_files("m3", "ann", &["unknown"]),
            // All or nothing: a bad one refuses the good one with it.
            with_files("m4", "ann", &["mine", "bobs"]),
            with_files("m5", "ann", &["mine", "also-mine"]),
            // Sent already, earlier in the batch.
            with_files("m6", "ann", &["mine"]),
            with_files("m7", "bob", &["bobs"]),
        ];
        let decisions = decide(&batch, &mut HashMap::new(), &mut files);
        let refused = Refuse(Refusal::InvalidAttachment);
        assert_eq!(
            decisions,
            [
                refused.clone(),
                refused.clone(),
                refused.clone(),
                refused.clone(),
                Store,
                refused,
                Store
            ]
        );
        assert_eq!(files["mine"].message_id.as_deref(), Some("m5"));
        assert_eq!(files["also-mine"].message_id.as_deref(), Some("m5"));
        assert_eq!(files["bobs"].message_id.as_deref(), Some("m7"));
        assert_eq!(files["elsewhere"].message_id, None);
    }

    #[test]
    fn targets_belong_to_their_room() {
        let mut targets = HashMap::from([(
            "m".to_owned(),
            Target::fresh("elsewhere", "ann".into(), MessageKind::User),
        )]);
        assert_eq!(
            decide(
                &[edit("m", "ann"), react("m", "ann", "x", true)],
                &mut targets,
                &mut HashMap::new()
            ),
            [Refuse(Refusal::NotFound), Refuse(Refusal::NotFound)]
        );
    }
}
