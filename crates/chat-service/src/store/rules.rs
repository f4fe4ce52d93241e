//! Whether an edit, deletion or reaction may happen: one set of rules for
//! every backend, applied to what the backend knows of the messages a
//! batch names. Rows are decided in batch order and each sees the effect
//! of the ones before it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chat_proto::client::MAX_DISTINCT_REACTIONS;
use chat_proto::MessageKind;

use super::{Actor, NewEvent, Refusal};

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
/// message id, updating them as stored rows would. A message in the batch
/// becomes a target for the rows after it.
pub(super) fn decide<'a>(
    batch: impl IntoIterator<Item = &'a NewEvent>,
    targets: &mut HashMap<String, Target>,
) -> Vec<Decision> {
    batch
        .into_iter()
        .map(|event| decide_one(event, targets))
        .collect()
}

fn decide_one(event: &NewEvent, targets: &mut HashMap<String, Target>) -> Decision {
    let room = event.room_id().as_str();
    let target = match event {
        // A call's record changes no message.
        NewEvent::CallEnded(_) => return Decision::Store,
        NewEvent::Message(new) => {
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
            decide(&batch, &mut targets),
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
        let decisions = decide(&batch, &mut targets);
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

    #[test]
    fn targets_belong_to_their_room() {
        let mut targets = HashMap::from([(
            "m".to_owned(),
            Target::fresh("elsewhere", "ann".into(), MessageKind::User),
        )]);
        assert_eq!(
            decide(
                &[edit("m", "ann"), react("m", "ann", "x", true)],
                &mut targets
            ),
            [Refuse(Refusal::NotFound), Refuse(Refusal::NotFound)]
        );
    }
}
