"""`mediafed bridge link|unlink|list` on the embedded database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from mediafed import cli
from mediafed.rocketchat.service import DB_FILE
from mediafed.store import Store

V12 = "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM"
OTHER_V12 = "!lnTzxuXHixyorMcjgz-_0123456789abcdefghijklm"
FIND = "copy the room id from the room's settings (Element: Settings > Advanced > Internal room ID)"


def run(*argv: str) -> int:
    args = cli.build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


def test_link_list_unlink(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path)
    assert (
        run(
            "bridge",
            "link",
            "--rocketchat-room",
            "GENERAL",
            "--matrix-room",
            "!abc:example.org",
            "--data-dir",
            data,
        )
        == 0
    )
    assert "linked room rc-GENERAL: rocketchat=GENERAL matrix=!abc:example.org" in (
        capsys.readouterr().out
    )
    assert (
        run(
            "bridge",
            "link",
            "--matrix-room",
            "!solo:example.org",
            "--room",
            "solo",
            "--data-dir",
            data,
        )
        == 0
    )
    capsys.readouterr()
    assert run("bridge", "list", "--json", "--data-dir", data) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(b["room"], b["rocketchat_room"], b["matrix_room"]) for b in listed] == [
        ("rc-GENERAL", "GENERAL", "!abc:example.org"),
        ("solo", None, "!solo:example.org"),
    ]
    assert run("bridge", "unlink", "--matrix-room", "!abc:example.org", "--data-dir", data) == 0
    assert run("bridge", "unlink", "--room", "solo", "--data-dir", data) == 0
    capsys.readouterr()
    assert run("bridge", "list", "--data-dir", data) == 0
    assert "no bridges" in capsys.readouterr().out

    async def stored() -> int:
        store = Store(tmp_path / DB_FILE)
        await store.open()
        count = len(await store.list_bridges())
        await store.close()
        return count

    assert asyncio.run(stored()) == 0


def test_room_version_12_ids_are_linked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A room made with Synapse's defaults (room version 12) has no ':server' part.
    data = str(tmp_path)
    assert (
        run(
            "bridge",
            "link",
            "--rocketchat-room",
            "GENERAL",
            "--matrix-room",
            V12,
            "--data-dir",
            data,
        )
        == 0
    )
    assert capsys.readouterr().out == f"linked room rc-GENERAL: rocketchat=GENERAL matrix={V12}\n"
    assert run("bridge", "link", "--matrix-room", OTHER_V12, "--data-dir", data) == 0
    assert (
        capsys.readouterr().out
        == f"linked room mx-{OTHER_V12[1:]}: rocketchat=- matrix={OTHER_V12}\n"
    )
    assert run("bridge", "list", "--json", "--data-dir", data) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(b["room"], b["rocketchat_room"], b["matrix_room"]) for b in listed] == [
        ("mx-" + OTHER_V12[1:], None, OTHER_V12),
        ("rc-GENERAL", "GENERAL", V12),
    ]
    assert run("bridge", "unlink", "--matrix-room", V12, "--data-dir", data) == 0
    assert capsys.readouterr().out == "unlinked room rc-GENERAL\n"


def test_bad_input_is_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path)
    assert run("bridge", "link", "--data-dir", data) == 1
    assert "give --rocketchat-room, --matrix-room or both" in capsys.readouterr().err
    assert run("bridge", "link", "--matrix-room", "#alias:example.org", "--data-dir", data) == 1
    assert capsys.readouterr().err == (
        "mediafed bridge: '#alias:example.org' is a room alias, not a room id; " + FIND + "\n"
    )
    assert run("bridge", "link", "--matrix-room", "!lnTzxuXHixyorMcjgz…", "--data-dir", data) == 1
    assert capsys.readouterr().err == (
        "mediafed bridge: '!lnTzxuXHixyorMcjgz…' is not a Matrix room id: without ':server' it "
        "must be a room version 12 id, '!' and 43 letters, digits, '-' or '_' (this one has 19 "
        "characters after '!'); " + FIND + "\n"
    )
    assert run("bridge", "link", "--matrix-room", "!abc:exa_mple.org", "--data-dir", data) == 1
    assert capsys.readouterr().err == (
        "mediafed bridge: '!abc:exa_mple.org' is not a Matrix room id: 'exa_mple.org' after the "
        "first ':' is not a server name (host, host:port or [IPv6]:port); " + FIND + "\n"
    )
    assert run("bridge", "link", "--rocketchat-room", "R1", "--room", "a", "--data-dir", data) == 0
    assert run("bridge", "link", "--rocketchat-room", "R1", "--room", "b", "--data-dir", data) == 1
    assert "already linked to room 'a'; unlink it first" in capsys.readouterr().err
    assert run("bridge", "unlink", "--room", "nope", "--data-dir", data) == 1
    assert "no such bridge" in capsys.readouterr().err
