"""Impaired links for test hosts: loss, blocked UDP, blackholes (nftables) and
rate limits (``tc tbf``), on the veth pair between a client namespace and ours.

This kernel has no ``netem`` (REFERENCES.md, "Impairing test links"): loss is
an nftables ``numgen random`` rule in the client's namespace, a rate limit a
token bucket on the sending end of the veth (the client's end shapes its
uplink, ours its downlink). Every rule lives in one nftables table of the
client namespace, so :meth:`LinkImpairment.clear` (or the namespace going
away) removes all of it.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

TABLE = "mediafed_impair"


class ImpairmentError(Exception):
    """A rule could not be applied; the message says which and why."""


def _run(argv: Sequence[str], stdin: str | None = None) -> None:
    try:
        subprocess.run(list(argv), input=stdin, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise ImpairmentError(
            f"{argv[0]} is not installed (apt install nftables iproute2)"
        ) from exc
    except subprocess.CalledProcessError as exc:
        raise ImpairmentError(f"{' '.join(argv)}: {exc.stderr.strip()}") from None


@dataclass(frozen=True, slots=True)
class Conditions:
    """What to do to a link: loss in percent each way, rates in kbit/s (0: none)."""

    loss_up: float = 0.0
    loss_down: float = 0.0
    rate_up_kbit: int = 0
    rate_down_kbit: int = 0
    block_udp: bool = False

    @classmethod
    def parse(cls, text: str) -> Conditions:
        """``loss=5,rate=300`` (both ways), or ``loss_down=5,rate_up=500``, ``udp=off``."""
        values: dict[str, float] = {}
        block = False
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, _, value = item.partition("=")
            key = key.strip().lower()
            if key == "udp":
                if value.strip().lower() not in ("off", "blocked"):
                    raise ValueError("udp=off is the only udp condition")
                block = True
                continue
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{item!r}: expected name=number") from None
            if number < 0:
                raise ValueError(f"{item!r}: must not be negative")
            names = {"loss": ("loss_up", "loss_down"), "rate": ("rate_up", "rate_down")}
            for name in names.get(key, (key,)):
                if name not in ("loss_up", "loss_down", "rate_up", "rate_down"):
                    raise ValueError(
                        f"unknown condition {key!r}: use loss, loss_up, loss_down, rate, "
                        "rate_up, rate_down (kbit/s) or udp=off"
                    )
                values[name] = number
        if values.get("loss_up", 0) > 100 or values.get("loss_down", 0) > 100:
            raise ValueError("loss is a percentage (0-100)")
        return cls(
            loss_up=values.get("loss_up", 0.0),
            loss_down=values.get("loss_down", 0.0),
            rate_up_kbit=int(values.get("rate_up", 0)),
            rate_down_kbit=int(values.get("rate_down", 0)),
            block_udp=block,
        )

    def __str__(self) -> str:
        parts = []
        if self.loss_up or self.loss_down:
            parts.append(f"loss {self.loss_up:g}%/{self.loss_down:g}% up/down")
        if self.rate_up_kbit or self.rate_down_kbit:
            parts.append(f"rate {self.rate_up_kbit or '-'}/{self.rate_down_kbit or '-'} kbit/s")
        if self.block_udp:
            parts.append("UDP blocked")
        return ", ".join(parts) or "clean"


class LinkImpairment:
    """The impairments of one test host's link.

    ``pid`` holds the client namespace; ``client_if`` is the veth end inside it,
    ``server_if`` the end in the namespace this runs in.
    """

    def __init__(self, pid: int, client_if: str, server_if: str) -> None:
        self.pid = pid
        self.client_if = client_if
        self.server_if = server_if
        self._inside = ("nsenter", "-t", str(pid), "-n")
        self._table = False

    def apply(self, conditions: Conditions) -> None:
        self.clear()
        if conditions.block_udp:
            self.block_udp()
        if conditions.loss_up or conditions.loss_down:
            self.loss(up=conditions.loss_up, down=conditions.loss_down)
        if conditions.rate_up_kbit or conditions.rate_down_kbit:
            self.rate(up_kbit=conditions.rate_up_kbit, down_kbit=conditions.rate_down_kbit)

    def _nft(self, rules: str) -> None:
        if not self._table:
            _run(
                [*self._inside, "nft", "-f", "-"],
                f"table inet {TABLE} {{\n"
                "  chain in { type filter hook input priority 0; policy accept; }\n"
                "  chain out { type filter hook output priority 0; policy accept; }\n"
                "}\n",
            )
            self._table = True
        _run([*self._inside, "nft", "-f", "-"], rules)

    def block_udp(self) -> None:
        """No UDP in or out of the host (a firewall that lets TCP through)."""
        self._nft(
            f"add rule inet {TABLE} in meta l4proto udp drop\n"
            f"add rule inet {TABLE} out meta l4proto udp drop\n"
        )

    def loss(self, *, up: float = 0.0, down: float = 0.0) -> None:
        """Drop this percentage of the host's UDP, randomly, each way (whole percents)."""
        rules = []
        for chain, percent in (("out", up), ("in", down)):
            if percent > 0:
                rules.append(
                    f"add rule inet {TABLE} {chain} meta l4proto udp "
                    f"numgen random mod 100 < {round(percent)} drop\n"
                )
        self._nft("".join(rules))

    def blackhole(self, on: bool = True) -> None:
        """Every packet of the host dropped both ways (Wi-Fi gone), or back."""
        if on:
            self._nft(
                f'add rule inet {TABLE} in drop comment "blackhole"\n'
                f'add rule inet {TABLE} out drop comment "blackhole"\n'
            )
        else:
            self.clear()

    def rate(self, *, up_kbit: int = 0, down_kbit: int = 0) -> None:
        """Token-bucket rate limits: the client's uplink and downlink in kbit/s."""
        for argv_prefix, device, kbit in (
            (self._inside, self.client_if, up_kbit),
            ((), self.server_if, down_kbit),
        ):
            if kbit > 0:
                # a burst of a few packets and a queue of about a quarter second, as a
                # home router's: sending faster than the link queues, then drops
                burst = max(4_000, kbit * 1000 // 8 // 50)
                limit = max(burst + 3_000, kbit * 1000 // 8 // 4)
                _run(
                    [
                        *argv_prefix,
                        "tc",
                        "qdisc",
                        "replace",
                        "dev",
                        device,
                        "root",
                        "tbf",
                        "rate",
                        f"{kbit}kbit",
                        "burst",
                        str(burst),
                        "limit",
                        str(limit),
                    ]
                )

    def downlink_counts(self) -> tuple[int, int]:
        """(packets sent, packets dropped) by the downlink's rate limit so far."""
        out = subprocess.run(
            ["tc", "-s", "qdisc", "show", "dev", self.server_if],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        match = re.search(r"Sent \d+ bytes (\d+) pkt \(dropped (\d+)", out)
        if match is None:
            return 0, 0
        return int(match.group(1)), int(match.group(2))

    def clear(self) -> None:
        """Every rule and rate limit removed: a clean link again."""
        if self._table:
            _run([*self._inside, "nft", "delete", "table", "inet", TABLE])
            self._table = False
        for argv_prefix, device in ((self._inside, self.client_if), ((), self.server_if)):
            subprocess.run(
                [*argv_prefix, "tc", "qdisc", "del", "dev", device, "root"],
                capture_output=True,
            )
