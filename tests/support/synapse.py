"""A real Synapse homeserver on loopback for tests (one per test session).

Synapse comes from PyPI into ``.venv-synapse`` (``scripts/install-synapse``);
this module writes a minimal SQLite configuration, starts
``python -m synapse.app.homeserver`` inside the test network namespace, waits
until ``/_matrix/client/versions`` answers and offers the few client-API calls
tests need: users through the shared-secret admin API
(``/_synapse/admin/v1/register``), OpenID tokens
(``POST /_matrix/client/v3/user/{userId}/openid/request_token``), rooms and
state events. Rooms get Synapse's default room version (12 in Synapse 1.163:
ids ``!`` and a hash, no server part) unless a test asks for another one
(``create_room(user, room_version="11")``).

Use it from a conftest::

    from tests.support.synapse import synapse_session  # noqa: F401  (the fixture)

or build one yourself with :func:`start_synapse` (other test directories:
federation tests need two instances with their own server names).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from mediafed.matrix.cli import synapse_matrix_rtc
from mediafed.matrix.registration import Registration, make_registration
from tests.support.tls import write_localhost_certificate

ROOT = Path(__file__).resolve().parents[2]
SYNAPSE_PYTHON = ROOT / ".venv-synapse" / "bin" / "python"
INSTALL_HINT = "run scripts/install-synapse (installs matrix-synapse into .venv-synapse)"
STARTUP_TIMEOUT_S = 90.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (inside the test namespace)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class MatrixUser:
    user_id: str
    access_token: str
    device_id: str


@dataclass
class SynapseServer:
    """A running Synapse; ``base_url`` is its plain-HTTP client+federation listener."""

    server_name: str
    port: int
    directory: Path
    shared_secret: str
    process: subprocess.Popen[bytes]
    appservice: Registration | None = None
    appservice_port: int = 0
    _users: dict[str, MatrixUser] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        return self.directory / "homeserver.db"

    def log_tail(self, lines: int = 40) -> str:
        path = self.directory / "synapse.out"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- plain client-API calls (blocking; tests call them with asyncio.to_thread
    #    or from sync code: they are a few milliseconds each on loopback) --

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        token: str | None = None,
        expect: int = 200,
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, text = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read()
        if status != expect:
            raise AssertionError(f"{method} {path} -> {status} (wanted {expect}): {text!r}")
        result: dict[str, Any] = json.loads(text or b"{}")
        return result

    def register_user(self, localpart: str, *, admin: bool = False) -> MatrixUser:
        """A user created through the shared-secret admin API (what
        ``register_new_matrix_user -k`` does), cached per localpart."""
        if localpart in self._users:
            return self._users[localpart]
        nonce = self.request("GET", "/_synapse/admin/v1/register")["nonce"]
        password = secrets.token_urlsafe(12)
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(
            b"\x00".join(
                [
                    nonce.encode(),
                    localpart.encode(),
                    password.encode(),
                    b"admin" if admin else b"notadmin",
                ]
            )
        )
        answer = self.request(
            "POST",
            "/_synapse/admin/v1/register",
            {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            },
        )
        user = MatrixUser(answer["user_id"], answer["access_token"], answer["device_id"])
        self._users[localpart] = user
        return user

    def openid_token(self, user: MatrixUser) -> dict[str, Any]:
        """``{access_token, token_type, matrix_server_name, expires_in}`` minted by Synapse."""
        user_path = urllib.parse.quote(user.user_id)
        return self.request(
            "POST",
            f"/_matrix/client/v3/user/{user_path}/openid/request_token",
            {},
            token=user.access_token,
        )

    def expire_openid_token(self, access_token: str) -> None:
        """Make an OpenID token Synapse issued expire now (it lasts an hour and the
        lifetime is not configurable): the row lives in Synapse's own database."""
        with contextlib.closing(sqlite3.connect(self.database, timeout=30)) as db:
            db.execute(
                "UPDATE open_id_tokens SET ts_valid_until_ms = ? WHERE token = ?",
                (int(time.time() * 1000) - 60_000, access_token),
            )
            db.commit()
            changed = db.total_changes
        if changed != 1:
            raise AssertionError(f"OpenID token {access_token[:6]}… not in Synapse's database")

    def create_room(self, user: MatrixUser, **body: Any) -> str:
        room_id: str = self.request(
            "POST", "/_matrix/client/v3/createRoom", body, token=user.access_token
        )["room_id"]
        return room_id

    def room_version(self, user: MatrixUser, room_id: str) -> str:
        """The room version of ``room_id`` (its ``m.room.create`` event), as ``user`` sees it."""
        room = urllib.parse.quote(room_id)
        create = self.request(
            "GET", f"/_matrix/client/v3/rooms/{room}/state/m.room.create/", token=user.access_token
        )
        # A missing room_version means version 1 (spec: m.room.create).
        return str(create.get("room_version", "1"))

    def invite(self, user: MatrixUser, room_id: str, invitee: str) -> None:
        room = urllib.parse.quote(room_id)
        self.request(
            "POST",
            f"/_matrix/client/v3/rooms/{room}/invite",
            {"user_id": invitee},
            token=user.access_token,
        )

    def send_state(
        self,
        user: MatrixUser,
        room_id: str,
        event_type: str,
        state_key: str,
        content: Mapping[str, Any],
    ) -> str:
        room = urllib.parse.quote(room_id)
        path = (
            f"/_matrix/client/v3/rooms/{room}/state/{urllib.parse.quote(event_type)}/"
            f"{urllib.parse.quote(state_key, safe='')}"
        )
        event_id: str = self.request("PUT", path, content, token=user.access_token)["event_id"]
        return event_id

    def send_event(
        self, user: MatrixUser, room_id: str, event_type: str, content: Mapping[str, Any]
    ) -> str:
        room = urllib.parse.quote(room_id)
        txn = secrets.token_hex(8)
        path = f"/_matrix/client/v3/rooms/{room}/send/{urllib.parse.quote(event_type)}/{txn}"
        event_id: str = self.request("PUT", path, content, token=user.access_token)["event_id"]
        return event_id

    def join(self, user: MatrixUser, room_id: str, via: str) -> None:
        """``user`` joins ``room_id`` (over federation when it lives on ``via``)."""
        room = urllib.parse.quote(room_id)
        query = urllib.parse.urlencode({"server_name": via})
        self.request("POST", f"/_matrix/client/v3/join/{room}?{query}", {}, token=user.access_token)

    def joined_members(self, user: MatrixUser, room_id: str) -> set[str]:
        room = urllib.parse.quote(room_id)
        answer = self.request(
            "GET", f"/_matrix/client/v3/rooms/{room}/joined_members", token=user.access_token
        )
        return set(answer["joined"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _signing_key() -> str:
    # Synapse's key file format: "<algorithm> <version> <unpadded base64 seed>".
    seed = base64.b64encode(os.urandom(32)).decode().rstrip("=")
    return f"ed25519 a_{secrets.token_hex(2)} {seed}\n"


def _federation(directory: Path, tls_port: int) -> dict[str, Any]:
    """What two homeservers on one machine need to federate (REFERENCES.md,
    "Synapse on loopback"): a TLS federation listener on the server name's port,
    unverified certificates, and loopback allowed as a federation destination."""
    cert, key = write_localhost_certificate(directory)
    return {
        "listeners+": [
            {
                "port": tls_port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": True,
                "x_forwarded": False,
                "resources": [{"names": ["federation"], "compress": False}],
            }
        ],
        "tls_certificate_path": str(cert),
        "tls_private_key_path": str(key),
        "federation_verify_certificates": False,
        "federation_domain_whitelist": None,
        "ip_range_whitelist": ["127.0.0.0/8"],
    }


def write_config(
    directory: Path,
    *,
    port: int,
    server_name: str,
    shared_secret: str,
    appservice_files: list[Path],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "signing.key").write_text(_signing_key())
    generous = {"per_second": 1000, "burst_count": 1000}
    config: dict[str, Any] = {
        "server_name": server_name,
        "pid_file": str(directory / "homeserver.pid"),
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client", "federation"], "compress": False}],
            }
        ],
        "database": {"name": "sqlite3", "args": {"database": str(directory / "homeserver.db")}},
        "media_store_path": str(directory / "media"),
        "signing_key_path": str(directory / "signing.key"),
        "registration_shared_secret": shared_secret,
        "macaroon_secret_key": secrets.token_hex(16),
        "form_secret": secrets.token_hex(16),
        "report_stats": False,
        "enable_metrics": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        "app_service_config_files": [str(path) for path in appservice_files],
        "experimental_features": {"msc2409_to_device_messages_enabled": True},
        "rc_message": generous,
        "rc_registration": generous,
        "rc_joins": {"local": generous, "remote": generous},
        "rc_login": {"address": generous, "account": generous, "failed_attempts": generous},
        "rc_admin_redaction": generous,
        "rc_invites": {"per_room": generous, "per_user": generous, "per_issuer": generous},
        "rc_3pid_validation": generous,
    }
    for key, value in (extra or {}).items():
        if key.endswith("+"):
            config[key[:-1]] = [*config[key[:-1]], *value]
        elif value is None:
            config.pop(key, None)
        elif isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = directory / "homeserver.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _wait_ready(server: SynapseServer, deadline_s: float) -> None:
    url = server.base_url + "/_matrix/client/versions"
    deadline = time.monotonic() + deadline_s
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"Synapse exited with {server.process.returncode} at startup:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f"Synapse did not answer within {deadline_s:.0f} s:\n{server.log_tail()}"
            )
        # No event to await from another process: poll its health endpoint.
        time.sleep(0.1)


def start_synapse(
    directory: Path,
    *,
    server_name: str | None = None,
    with_appservice: bool = True,
    federating: bool = False,
) -> SynapseServer:
    """Start one Synapse in ``directory``; with an appservice registration written
    by :func:`mediafed.matrix.registration.make_registration` whose URL points at
    ``http://127.0.0.1:<appservice_port>`` (start mediafed there to receive it).
    That same URL is configured as the MatrixRTC focus the way ``mediafed matrix
    recipe`` tells admins to (``matrix_rtc.transports``, ``msc4143_enabled``).

    ``federating``: it federates with other federating instances; its server name is
    ``localhost:<TLS federation port>``."""
    if not SYNAPSE_PYTHON.exists():
        raise RuntimeError(f"Synapse is not installed; {INSTALL_HINT}")
    port = free_port()
    tls_port = free_port() if federating else 0
    name = server_name or f"localhost:{tls_port or port}"
    shared_secret = secrets.token_hex(16)
    appservice_files: list[Path] = []
    registration: Registration | None = None
    appservice_port = 0
    if with_appservice:
        appservice_port = free_port()
        registration = make_registration(url=f"http://127.0.0.1:{appservice_port}", domain=name)
        reg_path = directory / "registration.yaml"
        directory.mkdir(parents=True, exist_ok=True)
        reg_path.write_text(registration.to_yaml())
        appservice_files.append(reg_path)
    extra = dict(synapse_matrix_rtc(registration.url)) if registration else {}
    if federating:
        directory.mkdir(parents=True, exist_ok=True)
        extra |= _federation(directory, tls_port)
    config_path = write_config(
        directory,
        port=port,
        server_name=name,
        shared_secret=shared_secret,
        appservice_files=appservice_files,
        extra=extra,
    )
    out = (directory / "synapse.out").open("wb")
    process = subprocess.Popen(
        [str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "-c", str(config_path)],
        cwd=directory,
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SYNAPSE_CACHE_FACTOR": "0.5"},
    )
    out.close()
    server = SynapseServer(
        server_name=name,
        port=port,
        directory=directory,
        shared_secret=shared_secret,
        process=process,
        appservice=registration,
        appservice_port=appservice_port,
    )
    _wait_ready(server, STARTUP_TIMEOUT_S)
    return server


@pytest.fixture(scope="session")
def synapse_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseServer]:
    """One Synapse for the whole test session (with the mediafed appservice registered)."""
    if not SYNAPSE_PYTHON.exists():
        pytest.fail(f"Synapse is not installed; {INSTALL_HINT}")
    directory = tmp_path_factory.mktemp("synapse")
    server = start_synapse(directory)
    try:
        yield server
    finally:
        server.stop()
        if os.environ.get("MEDIAFED_KEEP_SYNAPSE") != "1":
            shutil.rmtree(directory, ignore_errors=True)
