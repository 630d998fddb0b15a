"""The embedded SQLite store: schema upgrades, bridges, calls, webhook deliveries."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mediafed.store import CallRecord, Store, StoreError


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    db = Store(tmp_path / "data" / "mediafed.sqlite3")
    await db.open()
    yield db
    await db.close()


def _call(call_id: str, room: str = "rc-abc", external: str = "rocketchat:abc") -> CallRecord:
    return CallRecord(
        call_id=call_id,
        room=room,
        external_room=external,
        external_call_id="rc-call-1",
        title="standup",
        webhook_url="http://127.0.0.1:1/hook",
        api_key="devkey",
        invite_code="code",
        status="active",
        created_at=1000.0,
        ended_at=None,
    )


async def test_schema_is_created_once_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    db = Store(path)
    await db.open()
    assert await db.schema_version() == 1
    await db.put_bridge("room1", rocketchat_room="R1", matrix_room="!m:example.org")
    await db.close()
    again = Store(path)
    await again.open()
    assert await again.schema_version() == 1
    bridges = await again.list_bridges()
    assert [(b.mediafed_room, b.rocketchat_room, b.matrix_room) for b in bridges] == [
        ("room1", "R1", "!m:example.org")
    ]
    await again.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO version VALUES (99)")
    conn.commit()
    conn.close()
    db = Store(path)
    with pytest.raises(StoreError, match="upgrade mediafed"):
        await db.open()
    await db.close()


async def test_bridge_lookup_and_conflicts(store: Store) -> None:
    await store.put_bridge("room1", rocketchat_room="R1", matrix_room="!m:example.org")
    found = await store.find_bridge(matrix_room="!m:example.org")
    assert found is not None and found.mediafed_room == "room1"
    assert (await store.find_bridge(rocketchat_room="R1")) == found
    assert await store.find_bridge(rocketchat_room="R2") is None
    with pytest.raises(StoreError, match="already linked to room 'room1'; unlink it first"):
        await store.put_bridge("room2", rocketchat_room="R1", matrix_room=None)
    # Re-linking the same room replaces its mapping but keeps its creation time.
    updated = await store.put_bridge("room1", rocketchat_room="R9", matrix_room=None)
    assert updated.created_at == found.created_at
    assert await store.find_bridge(rocketchat_room="R1") is None
    assert await store.delete_bridge("room1")
    assert not await store.delete_bridge("room1")
    assert await store.list_bridges() == []


async def test_one_active_call_per_room(store: Store) -> None:
    first = await store.insert_call(_call("CL_1"))
    second = await store.insert_call(_call("CL_2"))
    assert second == first  # the room's active call is answered, no second one made
    assert await store.get_call("CL_2") is None
    assert await store.end_call("CL_1", now=2000.0)
    assert not await store.end_call("CL_1")
    ended = await store.get_call("CL_1")
    assert ended is not None and ended.status == "ended" and ended.ended_at == 2000.0
    third = await store.insert_call(_call("CL_3"))
    assert third.call_id == "CL_3"
    assert [c.call_id for c in await store.list_calls(status="active")] == ["CL_3"]
    assert {c.call_id for c in await store.list_calls()} == {"CL_1", "CL_3"}
    with pytest.raises(StoreError, match="already exists"):
        await store.insert_call(_call("CL_1", room="other"))


async def test_webhook_deliveries_are_recorded(store: Store) -> None:
    await store.record_delivery("id-1", call_id="CL_1", event="call_ended", url="http://x/")
    await store.update_delivery("id-1", status="failed", attempts=3, last_error="HTTP 500")
    [delivery] = await store.deliveries("CL_1")
    assert (delivery.id, delivery.status, delivery.attempts, delivery.last_error) == (
        "id-1",
        "failed",
        3,
        "HTTP 500",
    )
    assert await store.deliveries("other") == []


async def test_closed_store_says_how_to_fix() -> None:
    db = Store(":memory:")
    with pytest.raises(StoreError, match=r"call Store.open\(\) first"):
        await db.list_bridges()
