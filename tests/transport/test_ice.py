"""ICE-lite responder: bytes in, bytes out (RFC 8445 §7.3, RFC 8489 §9.2)."""

from __future__ import annotations

from aioice import stun

from mediafed.transport.ice import IceLiteAgent, parse_username

ADDR = ("127.0.0.2", 50000)


def _request(
    agent: IceLiteAgent,
    *,
    password: str | None = None,
    username: str | None = None,
    use_candidate: bool = False,
    controlled: bool = False,
) -> bytes:
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    message.attributes["USERNAME"] = username or f"{agent.local_ufrag}:remote"
    message.attributes["PRIORITY"] = 12345
    if controlled:
        message.attributes["ICE-CONTROLLED"] = 1
    else:
        message.attributes["ICE-CONTROLLING"] = 1
    if use_candidate:
        message.attributes["USE-CANDIDATE"] = None
    message.add_message_integrity((password or agent.local_pwd).encode())
    return bytes(message)


def test_valid_check_is_answered_with_integrity_and_mapped_address() -> None:
    agent = IceLiteAgent()
    result = agent.handle(_request(agent, use_candidate=True), ADDR, now=5.0)
    assert result.valid and result.nominated and not result.error
    assert result.response is not None
    response = stun.parse_message(result.response)
    assert response.message_class == stun.Class.RESPONSE
    assert response.attributes["XOR-MAPPED-ADDRESS"] == ADDR
    assert response.check_message_integrity(agent.local_pwd.encode())
    assert agent.last_consent == 5.0


def test_wrong_password_gets_401_and_binds_nothing() -> None:
    agent = IceLiteAgent()
    result = agent.handle(_request(agent, password="x" * 24), ADDR, now=1.0)
    assert not result.valid
    assert result.error == "MESSAGE-INTEGRITY does not verify"
    assert result.response is not None
    response = stun.parse_message(result.response)
    assert response.message_class == stun.Class.ERROR
    assert response.attributes["ERROR-CODE"] == (401, "Unauthorized")
    assert agent.last_consent == 0.0


def test_wrong_ufrag_is_refused() -> None:
    agent = IceLiteAgent()
    result = agent.handle(_request(agent, username="nobody:remote"), ADDR, now=1.0)
    assert not result.valid and result.error == "wrong USERNAME"


def test_controlled_peer_gets_role_conflict() -> None:
    agent = IceLiteAgent()
    result = agent.handle(_request(agent, controlled=True), ADDR, now=1.0)
    assert not result.valid and result.error == "role conflict"
    assert result.response is not None
    assert stun.parse_message(result.response).attributes["ERROR-CODE"][0] == 487


def test_garbage_and_non_requests_are_dropped_quietly() -> None:
    agent = IceLiteAgent()
    assert agent.handle(b"\x00\x01\x00", ADDR, now=1.0).response is None
    indication = stun.Message(
        message_method=stun.Method.BINDING, message_class=stun.Class.INDICATION
    )
    result = agent.handle(bytes(indication), ADDR, now=1.0)
    assert result.response is None and not result.valid
    assert parse_username(b"\x01\x01garbage") is None


def test_restart_changes_credentials() -> None:
    agent = IceLiteAgent()
    before = (agent.local_ufrag, agent.local_pwd)
    agent.restart()
    assert (agent.local_ufrag, agent.local_pwd) != before
    assert len(agent.local_ufrag) >= 4 and len(agent.local_pwd) >= 22
