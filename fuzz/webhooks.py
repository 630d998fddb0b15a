"""Webhook signatures (``rocketchat/webhooks.py``): what a receiver checks on each delivery.

Input: the ``X-Mediafed-Signature`` header text, a NUL byte, then the body. ``verify``
must return the timestamp or raise :class:`AuthError`; a header that ``sign`` wrote
must verify.
"""

from __future__ import annotations

from fuzz import _common

with _common.instrumented(__name__ == "__main__"):
    _common.load_native()
    from mediafed.errors import AuthError
    from mediafed.rocketchat import webhooks

SECRET = "a-long-enough-api-secret-for-tests-0123456789"
NOW = 1_700_000_000


def test_one_input(data: bytes) -> None:
    raw_header, _, body = data.partition(b"\0")
    # An HTTP header value reaches aiohttp as text (latin-1 or UTF-8, surrogates escaped).
    header = raw_header.decode("utf-8", "surrogateescape")
    try:
        stamp = webhooks.verify(header, body, SECRET, now=NOW)
        assert abs(stamp - NOW) <= webhooks.TOLERANCE_S
    except AuthError:
        pass
    signed = webhooks.sign(SECRET, body, NOW)
    assert webhooks.verify(signed, body, SECRET, now=NOW) == NOW


def main() -> None:
    _common.run(test_one_input)


if __name__ == "__main__":
    main()
