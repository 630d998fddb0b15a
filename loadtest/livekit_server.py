"""The livekit-server target: LiveKit's own SFU on loopback, joined by the same LiveKit clients.

``LiveKitServerTarget`` writes a config for one node in a temporary
directory and starts the pinned livekit-server (``loadtest.gopeers``, built
by ``scripts/install-test-deps``) in its own process group, pinned to the
server core; the Go runtime then sizes GOMAXPROCS to that one core. Clients
join through ``loadtest.livekit_target.LiveKitSession``, the code that joins
mediafed: one protocol (LiveKit v0, ``/rtc``), one client.

The config (field names from livekit-server's ``config-sample.yaml`` and
mediatransportutil's ``rtcconfig.RTCConfig``):

- ``rtc.udp_port``: one UDP port for every participant (a UDP mux), as
  mediafed has; ``rtc.tcp_port: 0``: no ICE over TCP (mediafed has none);
- ``rtc.use_external_ip: false`` and ``rtc.node_ip: 127.0.0.1``: no STUN
  lookup of a public address; host candidates are advertised as the node IP;
  ``rtc.ips.includes``: the node IP alone, so the UDP mux has one socket;
  ``rtc.enable_loopback_candidate``: gather on lo at all (when the node IP is
  a loopback address);
- ``rtc.stun_servers``: a loopback address nothing listens on. With none
  set, livekit-server hands its clients Google's and Twilio's public STUN
  servers as ICE servers (``iceServersForParticipant``); the light clients
  ignore ICE servers, but ``lk`` would try them;
- no ``redis`` (one node, rooms in memory), no ``turn``;
- ``keys``: one pair with a 40-character secret (the server warns about
  short ones), tokens minted as for mediafed.

Everything else is livekit-server's default: congestion control on, send-side
BWE off, 500/200-packet buffers, log level ``info``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import secrets
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from loadtest.gopeers import LIVEKIT_SERVER, GoPeer, missing_message
from loadtest.janus import free_tcp_port, kill_group_at_exit
from loadtest.livekit_target import LiveKitEndpoint, free_udp_port
from loadtest.target import RoomPlan, ServerProcess, TargetError

log = logging.getLogger(__name__)

API_KEY = "loadtest"
NODE_IP = "127.0.0.1"
# Where livekit-server tells clients to find STUN: loopback, a port nothing serves.
STUN_PLACEHOLDER = "127.0.0.1:9"


def server_config(
    http_port: int,
    udp_port: int,
    api_secret: str,
    log_level: str = "info",
    node_ip: str = NODE_IP,
) -> dict[str, Any]:
    """livekit-server's YAML config as a dict (written as JSON, which YAML reads)."""
    return {
        "port": http_port,
        "bind_addresses": [node_ip],
        "rtc": {
            "udp_port": udp_port,
            "tcp_port": 0,
            "use_external_ip": False,
            "node_ip": node_ip,
            # One media socket, on the node IP: with one per local address, each
            # candidate rewritten to node_ip, ICE may pair a socket that cannot
            # reach the client (127.0.0.1 towards a veth test host).
            "ips": {"includes": [f"{node_ip}/32"]},
            "enable_loopback_candidate": ipaddress.ip_address(node_ip).is_loopback,
            "stun_servers": [STUN_PLACEHOLDER],
        },
        "keys": {API_KEY: api_secret},
        "logging": {"level": log_level, "pion_level": "debug" if log_level == "debug" else "error"},
        "room": {"auto_create": True, "empty_timeout": 60},
    }


class LiveKitServerTarget(ServerProcess):
    """livekit-server started from a generated config in a temporary directory."""

    name = "livekit"

    def __init__(
        self,
        server_cpus: set[int] | None = None,
        peer: GoPeer = LIVEKIT_SERVER,
        log_level: str = "info",
        host: str = NODE_IP,
    ) -> None:
        self.server_cpus = server_cpus
        self.peer = peer
        self.log_level = log_level
        self.host = host
        """Where signaling listens and what ICE advertises (a test host's server
        address for clients that skip loopback, such as ``lk``)."""
        self.url = ""
        self.room = ""
        self.api_secret = ""
        super().__init__()
        self._log_path: Path | None = None

    async def start(self, plan: RoomPlan) -> None:
        binary = self.peer.binary
        if not os.access(binary, os.X_OK):
            raise TargetError(missing_message(self.peer))
        self._dir = tempfile.TemporaryDirectory(prefix="loadtest-livekit-")
        directory = Path(self._dir.name)
        http_port = free_tcp_port()
        self.api_secret = secrets.token_hex(20)
        config_path = directory / "livekit.yaml"
        config = server_config(
            http_port, free_udp_port(), self.api_secret, self.log_level, self.host
        )
        config_path.write_text(json.dumps(config, indent=2) + "\n")
        self._log_path = directory / "livekit.log"
        cpus = self.server_cpus

        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        with self._log_path.open("wb") as logfile:
            self._proc = await asyncio.create_subprocess_exec(
                str(binary),
                "--config",
                str(config_path),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=pin,
            )
        kill_group_at_exit(self._proc.pid)
        self.url = f"ws://{self.host}:{http_port}"
        self.room = plan.name
        await self.wait_http_ok(self.host, http_port, "/", "livekit-server", self.log_tail, 30.0)
        log.info("- livekit-server pid %s up at %s", self._proc.pid, self.url)

    def log_tail(self, lines: int = 30) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "(no livekit-server log)"
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])

    def endpoint(self) -> LiveKitEndpoint:
        return LiveKitEndpoint(self.url, self.room, API_KEY, self.api_secret, "livekit-server")
