//! The shared state of the cluster, changed by scripts so that a change
//! and the announcement it causes are one step, in one order for every
//! node. Keys (ids never hold control characters, so `\0` separates):
//!
//! - `chat:nodes`: live node ids; `chat:n:{node}`: a hash of the node's
//!   counts, expiring unless the node renews it (its heartbeat).
//! - `chat:n:{node}:users`, `:rooms`, `:members` (`room\0user`): what the
//!   node hosts, so the others can clean up after it if it dies.
//! - `chat:m:{room}\0{user}`: the nodes where the user is in the room;
//!   `chat:ru:{room}`: the users in the room on any node.
//! - `chat:p:{user}`: per node `n:{node}` = `connections:away`, and the
//!   user's `status`, `seen` and `name`.
//!
//! - `chat:calls:{room}`: the node holding the room's calls.
//!
//! Channels: `chat:room:{room}`, `chat:user:{user}`, `chat:watch:{user}`,
//! `chat:node:{node}`.

pub(super) fn node_key(node: u64) -> String {
    format!("chat:n:{node}")
}

pub(super) fn node_users_key(node: u64) -> String {
    format!("chat:n:{node}:users")
}

pub(super) fn node_rooms_key(node: u64) -> String {
    format!("chat:n:{node}:rooms")
}

pub(super) fn node_members_key(node: u64) -> String {
    format!("chat:n:{node}:members")
}

pub(super) fn member_entry(room: &str, user: &str) -> String {
    format!("{room}\0{user}")
}

pub(super) fn membership_key(room: &str, user: &str) -> String {
    format!("chat:m:{room}\0{user}")
}

pub(super) fn room_users_key(room: &str) -> String {
    format!("chat:ru:{room}")
}

pub(super) fn presence_key(user: &str) -> String {
    format!("chat:p:{user}")
}

pub(super) fn room_channel(room: &str) -> String {
    format!("chat:room:{room}")
}

pub(super) fn user_channel(user: &str) -> String {
    format!("chat:user:{user}")
}

pub(super) fn watch_channel(user: &str) -> String {
    format!("chat:watch:{user}")
}

pub(super) fn node_channel(node: u64) -> String {
    format!("chat:node:{node}")
}

/// Which node holds the room's calls.
pub(super) fn calls_key(room: &str) -> String {
    format!("chat:calls:{room}")
}

pub(super) const NODES: &str = "chat:nodes";

/// The node holding the room's calls: the one that does if it is alive,
/// else the asking one (ARGV[1]), for ARGV[2] ms. Node ids go as text (a
/// Lua number cannot hold every u64).
///
/// KEYS: calls.
pub(super) const CLAIM_CALLS: &str = r"
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] and redis.call('EXISTS', 'chat:n:' .. owner) == 1 then
  return owner
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
";

/// Lets go of the room's calls if this node (ARGV[1]) holds them.
pub(super) const RELEASE_CALLS: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// A user's first connection on a node entered a room (ARGV[2] = 1) or
/// their last one there left it (0). Publishes ARGV[4] (unless empty) when
/// that makes the user arrive in or leave the room altogether. Returns 1
/// when it did.
///
/// KEYS: membership, node members, room users, room channel.
/// ARGV: node, arrived, `room\0user`, envelope, user.
pub(super) const MEMBERSHIP: &str = r"
if ARGV[2] == '1' then
  local added = redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[3])
  if added == 1 and redis.call('SCARD', KEYS[1]) == 1 then
    redis.call('SADD', KEYS[3], ARGV[5])
    if ARGV[4] ~= '' then redis.call('PUBLISH', KEYS[4], ARGV[4]) end
    return 1
  end
else
  local removed = redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[3])
  if removed == 1 and redis.call('SCARD', KEYS[1]) == 0 then
    redis.call('SREM', KEYS[3], ARGV[5])
    if ARGV[4] ~= '' then redis.call('PUBLISH', KEYS[4], ARGV[4]) end
    return 1
  end
end
return 0
";

/// A node's count of a user's connections (and away ones) changed:
/// records it, works out the user's status over every node and, when it
/// changed, publishes the matching envelope (unless they are empty).
/// Returns the status.
///
/// KEYS: presence, node users, watch channel.
/// ARGV: node, connections, away, user, seen (ms), name, then the
/// envelopes for online, away and offline.
pub(super) const PRESENCE: &str = r"
local field = 'n:' .. ARGV[1]
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], field, ARGV[2] .. ':' .. ARGV[3], 'name', ARGV[6])
  redis.call('SADD', KEYS[2], ARGV[4])
else
  redis.call('HDEL', KEYS[1], field)
  redis.call('SREM', KEYS[2], ARGV[4])
end
local all = redis.call('HGETALL', KEYS[1])
local open, away = 0, 0
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'n:' then
    local c, a = string.match(all[i + 1], '(%d+):(%d+)')
    open = open + tonumber(c)
    away = away + tonumber(a)
  end
end
local status = 'offline'
if open > 0 then
  if away >= open then status = 'away' else status = 'online' end
end
if status == 'offline' then redis.call('HSET', KEYS[1], 'seen', ARGV[5]) end
local before = redis.call('HGET', KEYS[1], 'status') or 'offline'
if status ~= before then
  redis.call('HSET', KEYS[1], 'status', status)
  local envelope = ARGV[7]
  if status == 'away' then envelope = ARGV[8] elseif status == 'offline' then envelope = ARGV[9] end
  if envelope ~= '' then redis.call('PUBLISH', KEYS[3], envelope) end
end
return status
";

/// Renews a node: its counts, its expiry, its place among the nodes.
///
/// KEYS: node, nodes. ARGV: node id, connections, ttl (ms).
pub(super) const HEARTBEAT: &str = r"
redis.call('HSET', KEYS[1], 'connections', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
";

/// Counts over the live nodes: distinct users, connections, distinct rooms.
pub(super) const STATS: &str = r"
local nodes = redis.call('SMEMBERS', 'chat:nodes')
local users, rooms = {}, {}
local connections = 0
for _, node in ipairs(nodes) do
  local counted = redis.call('HGET', 'chat:n:' .. node, 'connections')
  if counted then
    connections = connections + tonumber(counted)
    table.insert(users, 'chat:n:' .. node .. ':users')
    table.insert(rooms, 'chat:n:' .. node .. ':rooms')
  end
end
local distinct_users, distinct_rooms = 0, 0
if #users > 0 then
  distinct_users = #redis.call('SUNION', unpack(users))
  distinct_rooms = #redis.call('SUNION', unpack(rooms))
end
return {distinct_users, connections, distinct_rooms}
";

/// Holds (renews) or takes the lease KEYS[1] for node ARGV[1], ARGV[2] ms;
/// 1 if this node has it.
pub(super) const LEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";
