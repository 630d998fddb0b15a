"""What users install is what is tested: mediafed installed the way a user
installs it — a fresh venv, ``pip install .`` with no extras — serves a call.

The runtime venv is built once per test session under ``.venv-runtime/venv``
and built again whenever a file that goes into the package changes. Tests run
in a network namespace without PyPI, so pip installs from the wheels of the
runtime dependencies that ``scripts/install-test-deps`` keeps in
``.venv-runtime/wheels`` (made by ``pip wheel .``: resolved as a plain
``pip install .`` resolves them).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mediafed import __version__
from tests.support.netns_hosts import TestHost

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / ".venv-runtime"
WHEELS = RUNTIME / "wheels"
VENV = RUNTIME / "venv"
SOURCE_STAMP = VENV / "mediafed-source.sha256"
SDK_CLIENT = ROOT / "tests" / "signal" / "lk_sdk_client.py"
# What each participant of lk_sdk_client.py sends: camera RGB and microphone tone.
SENDS = {"alice": ((220, 40, 40), 440), "bob": ((40, 60, 220), 880)}
# Test extras: none of them may be importable in the runtime venv.
TEST_ONLY = ["pytest", "livekit.rtc", "playwright", "hypothesis", "mypy"]
# Run in the runtime venv: every other package's module that an import statement
# of the installed mediafed names, at module level or inside a function, and
# that cannot be found there.
UNRESOLVED_IMPORTS = """
import ast, importlib.util, json, pathlib, mediafed
root = pathlib.Path(mediafed.__file__).parent
missing = set()
for path in sorted(root.rglob('*.py')):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name.split('.')[0] == 'mediafed':
                continue  # the image check imports every module of mediafed
            try:
                found = importlib.util.find_spec(name) is not None
            except ImportError:  # a parent package is missing
                found = False
            if not found:
                missing.add(f'{path.relative_to(root.parent)}: {name}')
print(json.dumps(sorted(missing)))
"""


def _package_files() -> list[str]:
    """What ``pip install .`` reads in a clone: the top-level files and the packages."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted(
        name
        for name in listed.split("\0")
        if name
        and ("/" not in name or name.startswith(("mediafed/", "loadtest/")))
        and (ROOT / name).is_file()
    )


def _source_stamp(files: list[str], base_python: str) -> str:
    digest = hashlib.sha256(base_python.encode() + b"\0")
    digest.update((WHEELS / "STAMP").read_bytes())
    for name in files:
        digest.update(name.encode() + b"\0" + (ROOT / name).read_bytes() + b"\0")
    return digest.hexdigest()


def _build_runtime_venv(files: list[str], base_python: str, scratch: Path) -> None:
    """A fresh venv, then ``pip install .`` of a copy of the work tree (offline)."""
    source = scratch / "mediafed"
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    shutil.rmtree(VENV, ignore_errors=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    for argv in (
        [base_python, "-m", "venv", str(VENV)],
        [*pip, "install", "-q", "--no-index", "--find-links", str(WHEELS), str(source)],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, cwd=scratch)
        if done.returncode != 0:
            shutil.rmtree(VENV, ignore_errors=True)
            pytest.fail(f"{' '.join(argv)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


@pytest.fixture(scope="session")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``.venv-runtime/venv``: mediafed and its runtime dependencies, nothing else."""
    wanted = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + (ROOT / "setup.py").read_bytes()
    ).hexdigest()
    stamp_file = WHEELS / "STAMP"
    if not stamp_file.exists() or stamp_file.read_text().strip() != wanted:
        pytest.fail(
            f"{WHEELS} is missing or older than pyproject.toml; run scripts/install-test-deps "
            "(tests cannot download the runtime wheels inside their network namespace)"
        )
    base_python = getattr(sys, "_base_executable", sys.executable)
    files = _package_files()
    with (RUNTIME / "lock").open("w") as lock:
        # build under an exclusive lock, use under a shared one: another pytest
        # session may be building or using the same venv
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = _source_stamp(files, base_python)
        if not SOURCE_STAMP.exists() or SOURCE_STAMP.read_text() != stamp:
            _build_runtime_venv(files, base_python, tmp_path_factory.mktemp("runtime-install"))
            SOURCE_STAMP.write_text(stamp)
        fcntl.flock(lock, fcntl.LOCK_SH)
        yield VENV


def _user_env(venv: Path, home: Path, **settings: str) -> dict[str, str]:
    """A user's plain shell environment with the runtime venv on PATH (nothing of ours)."""
    path = f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    return {"PATH": path, "HOME": str(home), "LANG": "C.UTF-8", **settings}


def _image_check() -> str:
    """The ``python -c`` import check of the Dockerfile's runtime stage."""
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", "")
    match = re.search(r'python -c "([^"]+)"', dockerfile)
    assert match is not None, "the Dockerfile's runtime stage has no python -c check"
    return match.group(1)


def _run_in(venv: Path, home: Path, *argv: str | Path) -> subprocess.CompletedProcess[str]:
    """``argv`` as a user runs it: plain environment, in ``home``, not in the work tree."""
    return subprocess.run(
        argv, cwd=home, env=_user_env(venv, home), capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
@pytest.mark.timeout(900)  # the first run builds the venv (compiles the native module)
def test_runtime_install_passes_the_image_check(runtime_venv: Path, tmp_path: Path) -> None:
    python = runtime_venv / "bin" / "python"
    check = _run_in(runtime_venv, tmp_path, python, "-c", _image_check())
    assert check.returncode == 0, check.stderr[-3000:]
    probe = _run_in(
        runtime_venv,
        tmp_path,
        python,
        "-c",
        "import importlib.util, json, sys, mediafed; print(json.dumps({'file': "
        "mediafed.__file__, 'test_only': [m for m in sys.argv[1:] "
        "if importlib.util.find_spec(m) is not None]}))",
        *TEST_ONLY,
    )
    found = json.loads(probe.stdout)
    assert found["file"].startswith(str(runtime_venv)), found
    assert found["test_only"] == [], "the runtime venv has test packages; it proves nothing"
    unresolved = _run_in(runtime_venv, tmp_path, python, "-c", UNRESOLVED_IMPORTS)
    assert unresolved.returncode == 0, unresolved.stderr[-3000:]
    assert json.loads(unresolved.stdout) == []
    version = _run_in(runtime_venv, tmp_path, runtime_venv / "bin" / "mediafed", "--version")
    assert version.stdout == f"mediafed {__version__}\n"


def _free_port(ip: str, kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((ip, 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def _mediafed_serve(venv: Path, ip: str, workdir: Path) -> AsyncIterator[str]:
    """``mediafed serve --dev`` of the runtime venv, on ``ip``; yields its HTTP URL."""
    http_port = _free_port(ip, socket.SOCK_STREAM)
    env = _user_env(
        venv,
        workdir,
        MEDIAFED_SERVER_BIND=ip,
        MEDIAFED_SERVER_HTTP_PORT=str(http_port),
        MEDIAFED_SERVER_DATA_DIR=str(workdir / "data"),
        MEDIAFED_RTC_UDP_PORT=str(_free_port(ip, socket.SOCK_DGRAM)),
        MEDIAFED_RTC_TCP_PORT=str(_free_port(ip, socket.SOCK_STREAM)),
        MEDIAFED_RTC_NODE_IP=ip,
    )
    log_path = workdir / "mediafed.log"
    url = f"http://{ip}:{http_port}"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            venv / "bin" / "mediafed",
            "serve",
            "--dev",
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while True:
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise AssertionError(f"mediafed serve did not start:\n{log_path.read_text()}")
                try:
                    async with http.get(f"{url}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.2)
        yield url
        assert proc.returncode is None, f"mediafed serve exited:\n{log_path.read_text()}"
    finally:
        print(f"== {log_path}\n{log_path.read_text()[-5000:]}")  # shown if the test fails
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    log_text = log_path.read_text()
    assert proc.returncode == 0, log_text
    assert "Traceback" not in log_text, log_text


def _token(venv: Path, home: Path, identity: str) -> str:
    """The way a user gets a token: the installed CLI."""
    mediafed = venv / "bin" / "mediafed"
    argv = ["token", "--dev", "--room", "call", "--identity", identity, "--name", identity.title()]
    done = _run_in(venv, home, mediafed, *argv)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def _sdk_participant(host: TestHost, ws_url: str, token: str, role: str) -> list[Any]:
    """lk_sdk_client.py (the ``livekit`` SDK, libwebrtc) in the test host; its events."""
    proc = await host.spawn(
        [sys.executable, SDK_CLIENT, ws_url, token, role],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert any(e["event"] == "done" for e in events), (role, events[-5:], err.decode()[-2000:])
    return events


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_runtime_install_serves_a_call(runtime_venv: Path, tmp_path: Path) -> None:
    """Two libwebrtc clients see, hear and message each other through the runtime install."""
    with TestHost(11) as host:
        async with _mediafed_serve(runtime_venv, host.server_ip, tmp_path) as url:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{url}/healthz") as response:
                    assert (await response.json())["version"] == __version__
                async with http.get(f"{url}/") as response:  # the web-demo is in the wheel
                    assert response.status == 200
                    assert "<html" in (await response.text()).lower()
            ws_url = url.replace("http://", "ws://")
            async with asyncio.TaskGroup() as both:
                runs = {
                    role: both.create_task(
                        _sdk_participant(host, ws_url, _token(runtime_venv, tmp_path, role), role)
                    )
                    for role in SENDS
                }
    for me, other in (("alice", "bob"), ("bob", "alice")):
        seen = runs[me].result()
        camera_rgb, tone_hz = SENDS[other]
        sources = {e["source"] for e in seen if e["event"] == "subscribed" and e["sender"] == other}
        assert {"SOURCE_CAMERA", "SOURCE_MICROPHONE"} <= sources, (me, sources)
        camera = [
            e
            for e in seen
            if e["event"] == "video" and e["source"] == "SOURCE_CAMERA" and e["sender"] == other
        ]
        assert camera, f"{me} decoded no camera frames of {other}"
        assert (camera[-1]["width"], camera[-1]["height"]) == (320, 240)
        assert camera[-1]["frames"] >= 30, (me, camera[-1])
        assert all(abs(a - b) <= 40 for a, b in zip(camera[-1]["rgb"], camera_rgb, strict=True)), (
            camera[-1]
        )
        tones = [e["peak_hz"] for e in seen if e["event"] == "audio" and e["sender"] == other]
        assert tones and abs(tones[0] - tone_hz) <= 10, (me, tones)
        # data packets cross the SCTP data channels (aiortc, a runtime dependency)
        data = [(e["sender"], e["payload"]) for e in seen if e["event"] == "data"]
        assert data == [(other, f"hello from {other}")], (me, data)
