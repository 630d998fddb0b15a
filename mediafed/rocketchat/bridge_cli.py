"""``mediafed bridge``: link Rocket.Chat rooms and Matrix rooms to mediafed rooms.

``link`` maps a Rocket.Chat room id and/or a Matrix room id onto one mediafed
(LiveKit) room, so a call started on either side is the same call; ``unlink``
removes a mapping; ``list`` shows them. Matrix room ids of every room version
are taken: ``!opaque:server`` (versions 1 to 11) and ``!`` with the create
event's hash (version 12, the default of Synapse 1.163). A link with a Matrix
room runs its calls in that room's MatrixRTC room, where its Element Call users
and classic callers are. The mappings live in the node's SQLite
database (``<server.data_dir>/mediafed.sqlite3``); a running node sees changes
at once. The same table is served over HTTP at ``/api/v1/bridges``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

from mediafed.matrix.ids import RoomIdError, check_room_id
from mediafed.rocketchat.rooms import RC_ROOM, ROOM_NAME, default_bridge_name
from mediafed.rocketchat.service import DB_FILE
from mediafed.store import Store, StoreError

DataDirOf = Callable[[Path | None], Path]
"""``server.data_dir`` of the configuration file given with ``--config`` (or of none)."""


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], data_dir_of: DataDirOf
) -> None:
    """Add ``bridge link|unlink|list`` to the ``mediafed`` command line; ``data_dir_of``
    reads the data directory from the configuration when ``--data-dir`` is not given."""
    bridge = subparsers.add_parser(
        "bridge", help="link Rocket.Chat and Matrix rooms to mediafed rooms"
    )
    actions = bridge.add_subparsers(dest="bridge_command", metavar="ACTION", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", type=Path, help="TOML configuration file")
        parser.add_argument(
            "--data-dir", type=Path, help="data directory (default: server.data_dir from config)"
        )
        parser.set_defaults(data_dir_of=data_dir_of)

    link = actions.add_parser("link", help="map a Rocket.Chat room and/or a Matrix room")
    link.add_argument("--rocketchat-room", metavar="RID", help="Rocket.Chat room id")
    link.add_argument(
        "--matrix-room",
        metavar="ROOM_ID",
        help="Matrix room id: '!' and 43 characters (room version 12 and later) or '!x:server'",
    )
    link.add_argument("--room", metavar="NAME", help="mediafed room name (default: derived)")
    common(link)
    link.set_defaults(func=_link)

    unlink = actions.add_parser("unlink", help="remove a mapping")
    which = unlink.add_mutually_exclusive_group(required=True)
    which.add_argument("--room", metavar="NAME")
    which.add_argument("--rocketchat-room", metavar="RID")
    which.add_argument("--matrix-room", metavar="ROOM_ID")
    common(unlink)
    unlink.set_defaults(func=_unlink)

    listing = actions.add_parser("list", help="show the mappings")
    listing.add_argument("--json", action="store_true", help="print JSON")
    common(listing)
    listing.set_defaults(func=_list)


def _store(args: argparse.Namespace) -> Store:
    data_dir = args.data_dir
    if data_dir is None:
        data_dir = args.data_dir_of(args.config)
    return Store(Path(data_dir) / DB_FILE)


def _fail(message: str) -> int:
    print(f"mediafed bridge: {message}", file=sys.stderr)
    return 1


def _link(args: argparse.Namespace) -> int:
    rid: str | None = args.rocketchat_room
    matrix: str | None = args.matrix_room
    if rid is None and matrix is None:
        return _fail("give --rocketchat-room, --matrix-room or both")
    if rid is not None and not RC_ROOM.match(f"rocketchat:{rid}"):
        return _fail(f"{rid!r} is not a Rocket.Chat room id (letters, digits, . _ -)")
    if matrix is not None:
        try:
            check_room_id(matrix)
        except RoomIdError as exc:
            return _fail(str(exc))
    room: str = args.room or default_bridge_name(
        f"rocketchat:{rid}" if rid is not None else str(matrix)
    )
    if not ROOM_NAME.match(room):
        return _fail("room names use letters, digits and . _ : - (at most 128)")

    async def run() -> int:
        store = _store(args)
        await store.open()
        try:
            bridge = await store.put_bridge(room, rocketchat_room=rid, matrix_room=matrix)
        except StoreError as exc:
            return _fail(str(exc))
        finally:
            await store.close()
        print(
            f"linked room {bridge.mediafed_room}: rocketchat={bridge.rocketchat_room or '-'} "
            f"matrix={bridge.matrix_room or '-'}"
        )
        return 0

    return asyncio.run(run())


def _unlink(args: argparse.Namespace) -> int:
    async def run() -> int:
        store = _store(args)
        await store.open()
        try:
            room: str | None = args.room
            if room is None:
                bridge = await store.find_bridge(
                    rocketchat_room=args.rocketchat_room, matrix_room=args.matrix_room
                )
                room = bridge.mediafed_room if bridge else None
            if room is None or not await store.delete_bridge(room):
                return _fail("no such bridge; see `mediafed bridge list`")
        finally:
            await store.close()
        print(f"unlinked room {room}")
        return 0

    return asyncio.run(run())


def _list(args: argparse.Namespace) -> int:
    async def run() -> int:
        store = _store(args)
        await store.open()
        try:
            bridges = await store.list_bridges()
        finally:
            await store.close()
        if args.json:
            print(json.dumps([bridge.to_json() for bridge in bridges], indent=2))
            return 0
        if not bridges:
            print("no bridges; add one with `mediafed bridge link`")
            return 0
        width = max(len(bridge.mediafed_room) for bridge in bridges)
        print(f"{'ROOM':<{width}}  ROCKET.CHAT ROOM  MATRIX ROOM")
        for bridge in bridges:
            print(
                f"{bridge.mediafed_room:<{width}}  {bridge.rocketchat_room or '-':<16}  "
                f"{bridge.matrix_room or '-'}"
            )
        return 0

    return asyncio.run(run())
