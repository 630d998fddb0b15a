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


def _linked() -> tuple[IceLiteAgent, IceLiteAgent]:
    """A relay link's agent (controlling) facing another lite SFU's agent."""
    link, remote = IceLiteAgent(), IceLiteAgent()
    link.controlling = True
    link.set_remote(remote.local_ufrag, remote.local_pwd)
    remote.set_remote(link.local_ufrag, link.local_pwd)
    return link, remote


def test_a_controlling_check_nominates_at_a_lite_peer_and_its_answer_verifies() -> None:
    link, remote = _linked()
    check = link.check(now=1.0)
    message = stun.parse_message(check)
    assert message.attributes["USERNAME"] == f"{remote.local_ufrag}:{link.local_ufrag}"
    assert "ICE-CONTROLLING" in message.attributes and "USE-CANDIDATE" in message.attributes
    answered = remote.handle(check, ADDR, now=1.0)
    assert answered.valid and answered.nominated and answered.response is not None
    assert not link.nominated
    result = link.handle(answered.response, ADDR, now=1.2)
    assert result.valid and result.nominated and result.response is None
    assert link.nominated and link.last_consent == 1.2
    # each answer counts once: a replay is no longer the answer to a check of ours
    replay = link.handle(answered.response, ADDR, now=1.3)
    assert not replay.valid and replay.error == "STUN response to no check of ours"


def test_answers_that_do_not_verify_select_nothing() -> None:
    link, remote = _linked()
    # forged: the right transaction, the wrong password
    check = stun.parse_message(link.check(now=1.0))
    forged = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.RESPONSE,
        transaction_id=check.transaction_id,
    )
    forged.attributes["XOR-MAPPED-ADDRESS"] = ADDR
    forged.add_message_integrity(b"y" * 24)
    result = link.handle(bytes(forged), ADDR, now=1.1)
    assert not result.valid and result.error == "check answered without valid integrity"
    # an answer to a check never sent
    stray = remote.handle(_request(remote, use_candidate=True), ADDR, now=1.0)
    assert stray.response is not None
    result = link.handle(stray.response, ADDR, now=1.1)
    assert not result.valid and not link.nominated


def test_pending_checks_are_bounded_and_forgotten_on_restart() -> None:
    link, _remote = _linked()
    for step in range(100):
        link.check(now=float(step))
    assert len(link.pending_checks) == 32
    link.restart()
    assert not link.pending_checks
