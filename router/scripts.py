"""The Lua scripts the router runs in Redis, each atomic: what presence.py cannot do with
plain commands without a race between routers.

Each runs with ``EVAL`` inside a batch's pipeline (presence.py). Keys are described in
docs/architecture.md ("Presence in Redis") and proto/names.py.

Every script touches the keys of one uid, one room, one group or of the group rebuild only,
which share a hash tag (proto/names.py): on a Redis Cluster a script runs on the one node that
serves their slot. What spans several of them is split into steps that stay right whatever the
order they land in, queued in the same pipeline:

* a connection opened or removed: the uid's presence and its ``offline-due`` key here (the
  debounce decision is atomic per uid); its gateway's hash apart (``HSET`` or ``HDEL`` of one
  field, idempotent); the uid's entry in ``<ns>:going-offline``, where routers look for due
  uids, apart and after: written once Redis answered the removal (``MARK_GOING_OFFLINE``), and
  dropped only if no write came after it was read and the uid was claimed (``DROP_DUE``), so
  that no set ``offline-due`` key is ever left without an entry (debounce.py);
* a join or a leave: the room's count and member set here, the gateway's list of memberships
  (one ``<room>:<conn_id>`` each, ``SADD``/``SREM``: no count to keep in step) apart;
* a group change: the group's members and versions here, each member's reverse set apart,
  under versions of its own, by the same script (``APPLY_MEMBERS``), so that both sides end
  as the highest version says whatever the order.

On one server (or the Sentinels' master) a removal, a join and a leave are still one command
each: presence.py gives their scripts the gateway's key (and the going-offline set) as
optional last keys, and the script writes them too, in the same step.
"""

# Register a connection and tell, atomically, whether it is the uid's first one and,
# if so, whether the uid was only going offline (its offline-due key was set: a flap, no event
# either way). A uid holding ARGV[3] connections already (across all gateways) gets no more:
# nothing is written and the third value is 1 (ARGV[3] = 0: no limit, for re-announcements).
# KEYS: presence(uid), offline-due(uid). ARGV: conn_id, gateway_id, max_connections.
OPEN_CONNECTION = """
local limit = tonumber(ARGV[3])
if limit > 0 and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
    and redis.call('HLEN', KEYS[1]) >= limit then
  return {0, 0, 1}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HLEN', KEYS[1]) ~= 1 then
  return {0, 0, 0}
end
return {1, redis.call('DEL', KEYS[2]), 0}
"""

# The going-offline entry of a uid, written to at least `due`: to `due`, or, if the entry is
# there already at that time or later, 1 ms past it. So every write moves the entry (DROP_DUE
# drops only one that did not move since it was read) and an entry is never earlier than the
# offline-due key it stands for.
_MOVE_ENTRY = """
local function move_entry(key, uid, due)
  local current = redis.call('ZSCORE', key, uid)
  if current and tonumber(current) >= due then
    due = tonumber(current) + 1
  end
  redis.call('ZADD', key, due, uid)
end
"""

# Remove a connection: HDEL presence(uid) conn_id, but only while that field still names
# this gateway (a conn_id is made by one gateway, so it should never name another; the
# check keeps a sweep from removing anything a later writer put there all the same).
# When it was the uid's last connection, the uid is going offline: its offline-due key is
# set to ARGV[3]. With KEYS[3] and KEYS[4] (one server), the conn_id leaves the gateway's hash
# and, if the offline-due key is set, the uid's going-offline entry is written here; then it
# returns false. Else (a Redis Cluster) it returns the key's due time if it is set (by this
# removal or an earlier one: a removal redelivered after a failure must still write the entry),
# for MARK_GOING_OFFLINE once Redis answered, else false.
# KEYS: presence(uid), offline-due(uid), [gateway(gateway_id), going-offline].
# ARGV: conn_id, gateway_id, due_ms, uid.
REMOVE_CONNECTION = (
    _MOVE_ENTRY
    + """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if redis.call('HLEN', KEYS[1]) == 0 then
    redis.call('SET', KEYS[2], ARGV[3])
  end
end
local due = redis.call('GET', KEYS[2])
if not KEYS[3] then
  return due
end
redis.call('HDEL', KEYS[3], ARGV[1])
if due then
  move_entry(KEYS[4], ARGV[4], tonumber(due))
end
return false
"""
)

# Write the going-offline entry of each uid whose offline-due key a removal found set (a Redis
# Cluster), once Redis answered that removal. KEYS: going-offline. ARGV: uid, due_ms, ...
MARK_GOING_OFFLINE = (
    _MOVE_ENTRY
    + """
for at = 1, #ARGV, 2 do
  move_entry(KEYS[1], ARGV[at], tonumber(ARGV[at + 1]))
end
return 0
"""
)

# Announce a due uid offline, or not: the router whose script deletes the uid's offline-due
# key, due by ARGV[1], is the one that publishes user.offline (exactly one); returns that, the
# connections the uid holds now, and whether the key is there but due later (the uid came back
# and left again since its entry was read: that entry stays for then).
# KEYS: offline-due(uid), presence(uid). ARGV: now_ms.
CLAIM_OFFLINE = """
local due = redis.call('GET', KEYS[1])
local claimed, pending = 0, 0
if due then
  if tonumber(due) <= tonumber(ARGV[1]) then
    claimed = redis.call('DEL', KEYS[1])
  else
    pending = 1
  end
end
return {claimed, redis.call('HLEN', KEYS[2]), pending}
"""

# Drop a uid from the going-offline set if its entry is still at ARGV[2], as it was read
# before the uid was claimed: an entry written since (MARK_GOING_OFFLINE always moves it)
# stands for a removal the claim may not have seen, and stays.
# KEYS: going-offline. ARGV: uid, due_ms.
DROP_DUE = """
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if due and tonumber(due) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""

# A connection joined a room: one more for its gateway. The count in the room's hash is the
# size of the members' set, so a join or a leave handled twice changes nothing. With KEYS[3]
# (one server), the connection's entry joins the gateway's list too (else the caller adds it).
# KEYS: room-members(room, gateway_id), room(room), [gateway-rooms(gateway_id)].
# ARGV: conn_id, gateway_id, the entry <room>:<conn_id>.
JOIN_ROOM = """
redis.call('SADD', KEYS[1], ARGV[1])
local count = redis.call('SCARD', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[2], count)
if KEYS[3] then
  redis.call('SADD', KEYS[3], ARGV[3])
end
return count
"""

# A connection left a room: one fewer for its gateway; a gateway with none left is no
# longer in the room. KEYS and ARGV as above.
LEAVE_ROOM = """
redis.call('SREM', KEYS[1], ARGV[1])
local count = redis.call('SCARD', KEYS[1])
if count == 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
else
  redis.call('HSET', KEYS[2], ARGV[2], count)
end
if KEYS[3] then
  redis.call('SREM', KEYS[3], ARGV[3])
end
return count
"""

# Claim a client id for a mid, or tell the mid that claimed it first. Ids are remembered per
# uid (per backend sender for api.send) in one hash per dedup window of SWITCHBOARD_DEDUP_TTL_S:
# the hash of the current window and of the one before are read, the current one written, and
# each expires when the window after it ends. So a uid holds at most two dedup keys whatever its
# rate (a key per id cost ~600,000 keys per uid at full rate), and a retry is recognised when it
# comes within one TTL of the first frame (at most two TTLs; later it counts as new).
# Then read the presence hashes of KEYS[3..] (a 1:1 message's recipient, and its sender with
# history on), so that a message costs the router one command, not one per uid it reads. (On a
# Redis Cluster those are other uids' slots: presence.py reads them with HGETALL beside it.)
# KEYS: this window's hash, the previous window's, then presence(uid) for each uid to read.
# ARGV: client_id, mid, expire_at_ms.
# Returns {the first mid or false, the flat HGETALL of each presence key, in order}.
CLAIM_CLIENT_ID = """
local first = redis.call('HGET', KEYS[1], ARGV[1]) or redis.call('HGET', KEYS[2], ARGV[1])
if not first then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
end
local replies = {first or false}
for i = 3, #KEYS do
  replies[i - 1] = redis.call('HGETALL', KEYS[i])
end
return replies
"""

# Apply members with their versions, on either side of a group's membership: the group's
# members (a GroupChanged, or a rebuild page), or one uid's groups (the reverse set; the router
# writes that side with APPLY_MEMBERSHIPS, below, which applies this to many uids). Each
# member whose version in the version hash is lower (or missing) gets the new one, and is added
# to or removed from the set. A version as high or higher is a later change applied already: the
# member is left alone. So changes and pages commute: applied in any order, by any router, each
# member ends as its highest version says, and both sides end alike. Removed members keep their
# version in the hash (a change with a lower one must not bring them back).
# KEYS: the set, its version hash: group(group), group-version(group); or member-of(uid),
# member-of-version(uid). ARGV: member, version, is_member ("1" or "0") for each member.
# Returns how many members changed.
APPLY_MEMBERS = """
local changed = 0
for at = 1, #ARGV, 3 do
  local member, version = ARGV[at], tonumber(ARGV[at + 1])
  local current = tonumber(redis.call('HGET', KEYS[2], member) or '0')
  if version > current then
    redis.call('HSET', KEYS[2], member, version)
    if ARGV[at + 2] == '1' then
      redis.call('SADD', KEYS[1], member)
    else
      redis.call('SREM', KEYS[1], member)
    end
    changed = changed + 1
  end
end
return changed
"""

# APPLY_MEMBERS for the member side of many uids at once, on one server: each uid's groups
# (the reverse set) under its own versions, the same test and writes as APPLY_MEMBERS with
# member-of(uid), member-of-version(uid) and the group. One command for many uids, where a Redis
# Cluster needs one per uid (each uid's keys are in its own slot).
# KEYS: member-of(uid), member-of-version(uid) for each uid. ARGV: the group, then version and
# is_member ("1" or "0") for each uid, in the order of KEYS. Returns how many uids changed.
APPLY_MEMBERSHIPS = """
local group, changed = ARGV[1], 0
for at = 1, #KEYS, 2 do
  local version = tonumber(ARGV[at + 1])
  local current = tonumber(redis.call('HGET', KEYS[at + 1], group) or '0')
  if version > current then
    redis.call('HSET', KEYS[at + 1], group, version)
    if ARGV[at + 2] == '1' then
      redis.call('SADD', KEYS[at], group)
    else
      redis.call('SREM', KEYS[at], group)
    end
    changed = changed + 1
  end
end
return changed
"""

# Count a rebuild page applied (a page applied twice counts once). When every page of the
# rebuild is applied, Redis holds every member again: mark the groups loaded and release the
# rebuild's lock. On one server, in the same transaction as the page's writes: should Redis
# restart empty in between, the count restarts too, and the groups are never marked loaded over
# an empty copy. On a Redis Cluster (no transaction across slots), once the page's writes are
# answered. KEYS: groups-pages(rebuild_id), groups-loaded, groups-rebuild.
# ARGV: index, count, expire_ms. Returns how many pages are applied.
COUNT_PAGE = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local applied = redis.call('SCARD', KEYS[1])
if applied >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], '1')
  redis.call('DEL', KEYS[3])
end
return applied
"""
