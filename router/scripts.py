"""The Lua scripts the router runs in Redis, each atomic: what presence.py cannot do with
plain commands without a race between routers.

Each runs with ``EVAL`` inside a batch's pipeline (presence.py). Keys are described in
docs/architecture.md ("Presence in Redis") and proto/names.py.
"""

# Register a connection and tell, atomically, whether it is the uid's first one and,
# if so, whether the uid was only going offline (a flap: no event either way). A uid
# holding ARGV[4] connections already (across all gateways) gets no more: nothing is
# written and the third value is 1 (ARGV[4] = 0: no limit, for re-announcements).
# KEYS: presence(uid), going-offline. ARGV: conn_id, gateway_id, uid, max_connections.
OPEN_CONNECTION = """
local limit = tonumber(ARGV[4])
if limit > 0 and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
    and redis.call('HLEN', KEYS[1]) >= limit then
  return {0, 0, 1}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HLEN', KEYS[1]) ~= 1 then
  return {0, 0, 0}
end
return {1, redis.call('ZREM', KEYS[2], ARGV[3]), 0}
"""

# Remove a connection: HDEL presence(uid) conn_id, but only while that field still names
# this gateway (a conn_id is made by one gateway, so it should never name another; the
# check keeps a sweep from removing anything a later writer put there all the same).
# When it was the uid's last connection, the uid is going offline, due at ARGV[4].
# KEYS: presence(uid), gateway(gateway_id), going-offline.
# ARGV: conn_id, gateway_id, uid, due_ms.
REMOVE_CONNECTION = """
local removed = 0
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  removed = redis.call('HDEL', KEYS[1], ARGV[1])
  if redis.call('HLEN', KEYS[1]) == 0 then
    redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
  end
end
redis.call('HDEL', KEYS[2], ARGV[1])
return removed
"""

# A connection joined a room: one more for its gateway (and the room in the gateway's list).
# The count in the room's hash is the size of the members' set, so a join or a leave handled
# twice changes nothing.
# KEYS: room-members(room, gateway_id), room(room), gateway-rooms(gateway_id).
# ARGV: conn_id, gateway_id, room.
JOIN_ROOM = """
redis.call('SADD', KEYS[1], ARGV[1])
local count = redis.call('SCARD', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[2], count)
redis.call('SADD', KEYS[3], ARGV[3])
return count
"""

# A connection left a room: one fewer for its gateway; a gateway with none left is no
# longer in the room (and the room no longer in the gateway's list). KEYS and ARGV as above.
LEAVE_ROOM = """
redis.call('SREM', KEYS[1], ARGV[1])
local count = redis.call('SCARD', KEYS[1])
if count == 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('SREM', KEYS[3], ARGV[3])
else
  redis.call('HSET', KEYS[2], ARGV[2], count)
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
# history on), so that a message costs the router one command, not one per uid it reads.
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

# Apply members of one group with their versions (a GroupChanged, or a rebuild page): each uid
# whose version in the group's version hash is lower (or missing) gets the new one, and is
# added to or removed from the group's set and the group to or from its reverse set. A version
# as high or higher is a later change applied already: the member is left alone. So changes
# and pages commute: applied in any order, each member ends as its highest version says.
# Removed members keep their version in the hash (a change with a lower one must not bring
# them back). KEYS: group(group), group-version(group), member-of(uid) for each uid, in order.
# ARGV: group, then uid, version, is_member ("1" or "0") for each uid, in the same order.
APPLY_MEMBERS = """
local changed = 0
for i = 3, #KEYS do
  local at = (i - 3) * 3 + 2
  local uid, version = ARGV[at], tonumber(ARGV[at + 1])
  local current = tonumber(redis.call('HGET', KEYS[2], uid) or '0')
  if version > current then
    redis.call('HSET', KEYS[2], uid, version)
    if ARGV[at + 2] == '1' then
      redis.call('SADD', KEYS[1], uid)
      redis.call('SADD', KEYS[i], ARGV[1])
    else
      redis.call('SREM', KEYS[1], uid)
      redis.call('SREM', KEYS[i], ARGV[1])
    end
    changed = changed + 1
  end
end
return changed
"""

# Count a rebuild page applied (a page applied twice counts once). When every page of the
# rebuild is applied, Redis holds every member again: mark the groups loaded and release the
# rebuild's lock. In the same transaction as the page's APPLY_MEMBERS: should Redis restart
# empty in between, the count restarts too, and the groups are never marked loaded over an
# empty copy. KEYS: groups-pages(rebuild_id), groups-loaded, groups-rebuild.
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
