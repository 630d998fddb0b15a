"""What every fuzz target shares: the sanitized native module, the error trap, the runner.

- :func:`load_native` puts the ASan/UBSan build of mediafed's C extensions
  (``fuzz/build_native.py``, listed in the file ``MEDIAFED_FUZZ_NATIVE`` names) in place
  of the normal ones before mediafed imports them (their edge counters reach the
  preloaded libFuzzer by themselves);
- :class:`Trap` turns an exception that mediafed caught and logged (``log.exception``:
  "one bad packet must not end the worker") into a crash, so the fuzzer sees it;
- :func:`run` starts libFuzzer with Python coverage of ``mediafed`` only.

A target is ``fuzz/<name>.py`` with ``test_one_input(data)`` (which tests also call
directly to replay regression inputs) and ``main()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
NATIVE_ENV = "MEDIAFED_FUZZ_NATIVE"


class SwallowedError(AssertionError):
    """An exception mediafed caught and logged instead of handling: a bug the fuzzer found."""


class Trap(logging.Handler):
    """Records every log record that carries an exception (``log.exception``)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.caught: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[0] is not None:
            self.caught.append(record)

    def check(self) -> None:
        """Raise :class:`SwallowedError` for what was caught since the last check."""
        if not self.caught:
            return
        record = self.caught[0]
        self.caught.clear()
        assert record.exc_info is not None
        trace = "".join(traceback.format_exception(*record.exc_info))  # type: ignore[misc]
        raise SwallowedError(f"{record.name}: {record.getMessage()}\n{trace}")


TRAP = Trap()


def install_trap() -> None:
    """Catch logged exceptions from now on (the fuzz runs; tests use :func:`replay`)."""
    root = logging.getLogger()
    if TRAP not in root.handlers:
        root.addHandler(TRAP)
    root.setLevel(logging.WARNING)  # info/debug lines cost nothing while fuzzing


def replay(test_one_input: Callable[[bytes], None], data: bytes) -> None:
    """Run one input as the fuzzer would, with the trap on only for its duration."""
    root = logging.getLogger()
    root.addHandler(TRAP)
    TRAP.caught.clear()
    try:
        test_one_input(data)
        TRAP.check()
    finally:
        root.removeHandler(TRAP)
        TRAP.caught.clear()


_native_loaded = False


def load_native() -> list[Any]:
    """Load the sanitized extensions when ``MEDIAFED_FUZZ_NATIVE`` names their list
    (``build/fuzz-asan/modules.txt``: module name and path per line, in build order).

    Each goes into ``sys.modules`` under its own name, so that mediafed's
    ``from mediafed.transport import _transport`` (and the C API import between the
    extensions) finds it there. Must run before anything imports them.
    """
    global _native_loaded
    manifest = os.environ.get(NATIVE_ENV)
    if not manifest:
        return []
    entries = [line.split(" ", 1) for line in Path(manifest).read_text().splitlines() if line]
    if _native_loaded:
        return [sys.modules[name] for name, _ in entries]
    loaded = [name for name, _ in entries if name in sys.modules]
    if loaded:
        raise RuntimeError(f"load_native() must run before {loaded} are imported")
    modules = []
    for name, path in entries:
        parent_name, _, attribute = name.rpartition(".")
        parent = _light_package(parent_name)
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise RuntimeError(f"{path} is not a loadable extension module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        if parent is not None:
            # PyCapsule_Import (the C API one extension takes from another) walks
            # attributes from the top package down.
            setattr(parent, attribute, module)
        modules.append(module)
    _native_loaded = True
    return modules


def _light_package(name: str) -> Any:
    """The package ``name``, imported only when its ``__init__`` imports nothing (the
    room core's imports its extension: that one is found in ``sys.modules`` later)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    init = Path(spec.origin) if spec is not None and spec.origin else None
    if init is None or "import " in init.read_text():
        return None
    return importlib.import_module(name)


def state_dir(name: str) -> Path:
    """An empty directory for a target's files (SQLite): ``build/fuzz/state/<name>``,
    emptied when a run starts (libFuzzer ends the process without Python's clean-up)."""
    path = ROOT / "build" / "fuzz" / "state" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


_loop: asyncio.AbstractEventLoop | None = None


def loop() -> asyncio.AbstractEventLoop:
    """One event loop for the whole run (created on first use, never running between inputs)."""
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
        asyncio.set_event_loop(_loop)
    return _loop


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return loop().run_until_complete(coro)


def settle(rounds: int = 3) -> None:
    """Let callbacks and tasks scheduled by the last input run (a few loop iterations)."""
    for _ in range(rounds):
        run_async(asyncio.sleep(0))


def run(test_one_input: Callable[[bytes], None]) -> None:
    """Start libFuzzer on ``test_one_input`` with the command line's libFuzzer flags."""
    import atheris

    install_trap()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def instrumented(fuzzing: bool) -> Any:
    """``with instrumented(__name__ == "__main__"): import mediafed...``: Python coverage
    for mediafed only, and only in a fuzz run (tests import targets uninstrumented)."""
    if not fuzzing:
        return contextlib.nullcontext()
    import atheris

    return atheris.instrument_imports(include=["mediafed"])


class Cursor:
    """Reads a structured input front to back; past the end everything reads as zero.

    The multi-part targets (datagram sequences, request sequences) use this simple
    framing so that their seed corpora can be written by hand (``fuzz/make_corpus.py``).
    """

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def __len__(self) -> int:
        return max(len(self.data) - self.pos, 0)

    def take(self, size: int) -> bytes:
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u8(self) -> int:
        chunk = self.take(1)
        return chunk[0] if chunk else 0

    def u16(self) -> int:
        return int.from_bytes(self.take(2).ljust(2, b"\0"), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4).ljust(4, b"\0"), "big")

    def blob(self) -> bytes:
        """A 2-byte big-endian length, then that many bytes."""
        return self.take(self.u16())


async def start_app(app: Any) -> Any:
    """Run an aiohttp app's startup (no socket): its requests go through :func:`http`."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    return runner


class BadRequestLine(Exception):
    """The input cannot be an HTTP request aiohttp would hand to a handler."""


async def http(
    app: Any, method: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, bytes]:
    """One request through the app's router, middlewares and handler, as aiohttp's
    server would run it; returns ``(status, body)``. An exception other than an
    ``HTTPException`` would be a 500 from the real server: it propagates (a crash)."""
    from unittest import mock

    from aiohttp import web
    from aiohttp.streams import StreamReader
    from aiohttp.test_utils import make_mocked_request

    protocol = mock.Mock(_reading_paused=False)
    payload = StreamReader(protocol, 2**16, loop=asyncio.get_running_loop())
    if body:
        payload.feed_data(body)
    payload.feed_eof()
    try:
        request = make_mocked_request(
            method,
            path,
            headers={"Content-Length": str(len(body)), **headers},
            app=app,
            payload=payload,
            protocol=protocol,
        )
        request.rel_url  # noqa: B018  (yarl refuses some paths only when asked)
    except ValueError as exc:
        raise BadRequestLine(str(exc)) from None
    try:
        response = await app._handle(request)
    except web.HTTPException as exc:
        return exc.status, exc.text.encode() if exc.text else b""
    text = getattr(response, "body", b"") or b""
    return response.status, bytes(text) if isinstance(text, (bytes, bytearray)) else b""
