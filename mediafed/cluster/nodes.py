"""Nodes on Redis: which nodes run, and which node hosts each room.

With ``[redis] url`` set, every node's supervisor keeps two kinds of keys in a
Redis server (nothing else decides; no consensus of our own):

- ``<prefix>node:<id>``: the node's URL (where other nodes reach its HTTP
  port), workers and load, written at every heartbeat with a time to live of a
  few heartbeats: a node that stops or disappears is gone when it expires;
- ``<prefix>room:<name>``: the id of the node hosting the room, set only if
  absent (``SET NX``), so two nodes placing one room at once agree on one; its
  owner renews it at every heartbeat while it hosts the room and deletes it
  when the room ends. A room whose owner is gone (its node key expired) is
  taken over by the next node that places it, atomically.

A node places a new room on the live node with the fewest participants per
worker (then the fewest rooms), itself included.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mediafed.errors import DirectoryError

log = logging.getLogger(__name__)

# KEYS[1] = the room's key; ARGV = (node, ttl_ms, dead owner or "")
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner == false or (ARGV[3] ~= '' and owner == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return owner
"""
# KEYS = the rooms' keys; ARGV = (node, ttl_ms): renew what is ours, take what is free
_RENEW = """
for _, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner == false then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  elseif owner == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
  end
end
return 0
"""
# KEYS = the rooms' keys; ARGV[1] = node: delete the ones that are ours
_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
  end
end
return 0
"""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    id: str
    url: str
    workers: int = 1
    participants: int = 0
    rooms: int = 0
    version: str = ""

    def load(self) -> tuple[float, int, str]:
        """Sort key: least loaded first."""
        return (self.participants / max(1, self.workers), self.rooms, self.id)


class NodeDirectory:
    """This node's view of the others, and its claims on rooms, in Redis."""

    def __init__(self, url: str, node: NodeInfo, *, prefix: str = "mediafed:", ttl_s: float = 6.0):
        self.node = node
        self.prefix = prefix
        self.ttl_ms = int(ttl_s * 1000)
        self.redis = aioredis.from_url(url, decode_responses=True, socket_timeout=2.0)
        self._claim = self.redis.register_script(_CLAIM)
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._held: set[str] = set()

    @property
    def id(self) -> str:
        return self.node.id

    def _room_key(self, room: str) -> str:
        return f"{self.prefix}room:{room}"

    def _node_key(self, node: str) -> str:
        return f"{self.prefix}node:{node}"

    async def start(self) -> None:
        """Check that Redis answers, and announce this node."""
        try:
            await self.redis.ping()
        except (RedisError, OSError) as exc:
            raise DirectoryError(f"Redis does not answer: {exc}") from exc
        await self.heartbeat(self.node, [])

    async def close(self) -> None:
        """Leave: release this node's rooms and its key (others place them again)."""
        try:
            await self._release_rooms(self._held)
            await self.redis.delete(self._node_key(self.id))
        except (RedisError, OSError) as exc:
            log.info("x leaving Redis: %s", exc)
        await self.redis.aclose()

    async def heartbeat(self, node: NodeInfo, rooms: Iterable[str]) -> None:
        """Write this node's load; renew the rooms it hosts, release the others it held."""
        self.node = node
        hosted = set(rooms)
        body = json.dumps(
            {
                "url": node.url,
                "workers": node.workers,
                "participants": node.participants,
                "rooms": node.rooms,
                "version": node.version,
                "at": time.time(),
            }
        )
        try:
            await self.redis.set(self._node_key(self.id), body, px=self.ttl_ms)
            if hosted:
                keys = [self._room_key(room) for room in sorted(hosted)]
                await self._renew(keys=keys, args=[self.id, self.ttl_ms])
            await self._release_rooms(self._held - hosted)
        except (RedisError, OSError) as exc:
            raise DirectoryError(f"Redis heartbeat failed: {exc}") from exc
        self._held = hosted

    async def _release_rooms(self, rooms: Iterable[str]) -> None:
        keys = [self._room_key(room) for room in sorted(rooms)]
        if keys:
            await self._release(keys=keys, args=[self.id])

    async def nodes(self) -> dict[str, NodeInfo]:
        """The live nodes (their keys have not expired), this one included."""
        found: dict[str, NodeInfo] = {}
        try:
            keys = [key async for key in self.redis.scan_iter(match=self._node_key("*"))]
            values = await self.redis.mget(keys) if keys else []
        except (RedisError, OSError) as exc:
            raise DirectoryError(f"Redis: {exc}") from exc
        start = len(self._node_key(""))
        for key, value in zip(keys, values, strict=True):
            if value is None:
                continue
            try:
                data = json.loads(value)
                info = NodeInfo(
                    id=key[start:],
                    url=str(data["url"]),
                    workers=int(data.get("workers", 1)),
                    participants=int(data.get("participants", 0)),
                    rooms=int(data.get("rooms", 0)),
                    version=str(data.get("version", "")),
                )
            except (ValueError, KeyError, TypeError):
                log.warning("x node key %s holds no node: %r", key, value[:200])
                continue
            found[info.id] = info
        found[self.id] = self.node
        return found

    async def owner(self, room: str) -> str | None:
        try:
            owner = await self.redis.get(self._room_key(room))
        except (RedisError, OSError) as exc:
            raise DirectoryError(f"Redis: {exc}") from exc
        return None if owner is None else str(owner)

    async def place(self, room: str, *, here: bool = False) -> NodeInfo:
        """The node hosting ``room``: its live owner, or the least loaded live node
        (this one if ``here``), which then owns it."""
        nodes = await self.nodes()
        owner = await self.owner(room)
        if owner is not None and owner in nodes:
            return nodes[owner]
        chosen = self.node if here else min(nodes.values(), key=NodeInfo.load)
        try:
            winner = await self._claim(
                keys=[self._room_key(room)], args=[chosen.id, self.ttl_ms, owner or ""]
            )
        except (RedisError, OSError) as exc:
            raise DirectoryError(f"Redis: {exc}") from exc
        if winner == self.id:
            self._held.add(room)
        if owner is not None:
            log.info("- room %s: its node %s is gone; placed on %s", room, owner, winner)
        # another node may have won the race; it is live (it just wrote)
        return nodes.get(str(winner)) or (await self.nodes()).get(str(winner), chosen)
