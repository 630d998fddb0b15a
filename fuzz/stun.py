"""STUN as mediafed uses it: the demultiplexer's USERNAME lookup and the ICE-lite agent.

Input: one control byte and a datagram. The datagram goes through ``parse_username``
and ``IceLiteAgent.handle`` (which must answer or refuse, never raise); when aioice
can parse it, it is also re-signed with the agent's password (and, per the control
byte, given the agent's ufrag), so the checks after MESSAGE-INTEGRITY run too.
"""

from __future__ import annotations

from fuzz import _common

with _common.instrumented(__name__ == "__main__"):
    _common.load_native()
    from aioice import stun

    from mediafed.transport import ice

UFRAG = "fuzzufrg"
PWD = "fuzzpasswordfuzzpassword"
ADDRS = (("127.0.0.2", 50000), ("::1", 50001, 0, 0))

agent = ice.IceLiteAgent(label="fuzz")
agent.local_ufrag = UFRAG
agent.local_pwd = PWD
agent.set_remote("peer", "peerpasswordpeerpassword")


def _check(result: ice.StunResult, data: bytes) -> None:
    if result.response is not None:
        response = stun.parse_message(result.response)  # what we send must parse
        assert response.transaction_id == stun.parse_message(data).transaction_id


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    control, datagram = data[0], data[1:]
    addr = ADDRS[control & 1]
    ice.parse_username(datagram)
    result = agent.handle(datagram, addr, 1.0)  # type: ignore[arg-type]
    _check(result, datagram)
    try:
        message = stun.parse_message(datagram)
    except ice._MALFORMED:
        return
    message.attributes.pop("MESSAGE-INTEGRITY", None)
    message.attributes.pop("FINGERPRINT", None)
    if control & 2:
        message.attributes["USERNAME"] = f"{UFRAG}:peer"
    try:
        message.add_message_integrity(PWD.encode())
        if control & 4:
            message.add_fingerprint()
        signed = bytes(message)
    except (ValueError, TypeError, KeyError, OverflowError):
        return  # aioice cannot write what it parsed: not mediafed's input
    assert ice.parse_username(signed) is not None or "USERNAME" not in message.attributes
    result = agent.handle(signed, addr, 2.0)  # type: ignore[arg-type]
    _check(result, signed)


def main() -> None:
    _common.run(test_one_input)


if __name__ == "__main__":
    main()
