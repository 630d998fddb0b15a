"""A node of several media workers: start them, watch them, restart them.

The supervisor is a small process: it owns the public HTTP port
(:mod:`.proxy`), the placement table (:mod:`.placement`) and the worker
processes. Each worker is a whole single-process node (``mediafed.server``)
started as ``python -m mediafed.cluster``, with its own UDP and ICE-TCP ports
(the configured ones plus its index), its own timers, and HTTP on a Unix socket
only the supervisor talks to. Workers start in a session of their own (a Ctrl-C
reaches the supervisor, which stops them in order) and are killed when it dies
(``PR_SET_PDEATHSIG``), as it was.

A worker that exits unexpectedly — killed, crashed — takes only its rooms with
it: they are forgotten, its clients' connections close, and the clients' next
joins place those rooms again on a running worker; the worker itself is
started again (at once after a long run, after a growing pause — 0.5 s to 10 s
— when it keeps dying young).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from mediafed import __version__
from mediafed.cluster.placement import Placement
from mediafed.cluster.proxy import Proxy, WorkerLink
from mediafed.config import Config
from mediafed.errors import DirectoryError
from mediafed.operator.health import WORKER_PATH
from mediafed.runtime import MAX_LINE_SIZE, stop_on_signals, warn_short_secrets

if TYPE_CHECKING:
    from mediafed.cluster.nodes import NodeDirectory

log = logging.getLogger(__name__)

REPORT_EVERY_S = 1.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
RESTART_MIN_S = 0.5
RESTART_MAX_S = 10.0
START_ATTEMPTS = 4
HEALTHY_RUN_S = 30.0
"""A worker that ran this long before dying is restarted at once."""
PR_SET_PDEATHSIG = 1


def load_worker_config(path: Path) -> Config:
    """The configuration the supervisor wrote for its workers."""
    return Config.model_validate_json(path.read_text(encoding="utf-8"))


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class WorkerProcess:
    """One worker process, restarted while the node runs."""

    def __init__(self, link: WorkerLink, config_path: Path) -> None:
        self.link = link
        self.config_path = config_path
        self.process: asyncio.subprocess.Process | None = None
        self.stopping = False
        self.on_exit: list[Callable[[WorkerProcess], None]] = []
        self._watch: asyncio.Task[None] | None = None

    @property
    def index(self) -> int:
        return self.link.index

    async def start(self, *, attempts: int = 1) -> None:
        """Start the process and wait until it answers on its socket; try again
        (``attempts`` in all, a pause between) if it exits while starting — the
        ports of a worker that was just killed may not be free yet."""
        for attempt in range(attempts):
            try:
                await self._start()
                return
            except RuntimeError:
                if attempt + 1 == attempts:
                    raise
                await asyncio.sleep(RESTART_MIN_S)

    async def _start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.link.socket_path)
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mediafed.cluster",
            "--index",
            str(self.index),
            "--socket",
            self.link.socket_path,
            "--config-json",
            str(self.config_path),
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.link.pid = self.process.pid
        await self._wait_ready(self.process)
        self.link.up = True
        log.info(
            "- worker %d running (pid %d, media UDP %d, ICE-TCP %s)",
            self.index,
            self.link.pid,
            self.link.udp_port,
            self.link.tcp_port or "off",
        )

    async def _wait_ready(self, process: asyncio.subprocess.Process) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(
                    f"worker {self.index} exited with status {process.returncode} while starting"
                )
            if os.path.exists(self.link.socket_path):
                try:
                    async with self.link.client().get(
                        self.link.base + WORKER_PATH, timeout=aiohttp.ClientTimeout(total=2)
                    ) as response:
                        if response.status == 200:
                            report = await response.json()
                            self.link.udp_port = int(report["udp_port"])
                            self.link.tcp_port = int(report["tcp_port"])
                            return
                except (TimeoutError, aiohttp.ClientError):
                    pass
            await asyncio.sleep(0.05)
        process.kill()
        raise RuntimeError(f"worker {self.index} did not start in {START_TIMEOUT_S:.0f} s")

    def watch(self) -> None:
        """Restart the process whenever it exits, until :meth:`stop`."""
        self._watch = asyncio.get_running_loop().create_task(
            self._keep_running(), name=f"mediafed-worker-{self.index}"
        )

    async def _keep_running(self) -> None:
        pause = RESTART_MIN_S
        while not self.stopping:
            process = self.process
            assert process is not None
            started = time.monotonic()
            status = await process.wait()
            if self.stopping:
                return
            self.link.up = False
            log.warning(
                "x worker %d (pid %d) exited with status %s; its rooms are gone, restarting",
                self.index,
                process.pid,
                status,
            )
            for callback in self.on_exit:
                callback(self)
            if time.monotonic() - started > HEALTHY_RUN_S:
                pause = RESTART_MIN_S
            else:
                await asyncio.sleep(pause)
                pause = min(pause * 2, RESTART_MAX_S)
            while not self.stopping:
                try:
                    await self.start()
                    self.link.restarts += 1
                    break
                except (RuntimeError, OSError) as exc:
                    log.warning("x worker %d: %s; trying again in %.1f s", self.index, exc, pause)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, RESTART_MAX_S)

    async def stop(self) -> None:
        self.stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning(
                    "x worker %d did not stop in %.0f s; killing it", self.index, STOP_TIMEOUT_S
                )
                process.kill()
                await process.wait()
        self.link.up = False
        await self.link.close()


async def serve_workers(
    config: Config, workers: int, *, ready: asyncio.Event | None = None
) -> None:
    """Run a node of ``workers`` worker processes behind one HTTP port until
    SIGINT/SIGTERM."""
    warn_short_secrets(config)
    runtime = Path(tempfile.mkdtemp(prefix="mediafed-"))
    config_path = runtime / "config.json"
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(config.model_dump_json())
    placement = Placement(workers, pinned=[link.room for link in config.relay.links])
    links = [WorkerLink(i, str(runtime / f"worker{i}.sock")) for i in range(workers)]
    processes = [WorkerProcess(link, config_path) for link in links]
    for process in processes:
        process.on_exit.append(lambda p: _forget(placement, p))
    nodes = _directory(config, workers)
    proxy = Proxy(links, placement, config.keys, nodes=nodes)
    runner: web.AppRunner | None = None
    reports: asyncio.Task[None] | None = None
    try:
        # all at once (only the home worker opens the database): a node killed and
        # started again is back as soon as its slowest worker is
        await asyncio.gather(*(process.start(attempts=START_ATTEMPTS) for process in processes))
        for process in processes:
            process.watch()
        runner = web.AppRunner(proxy.app(), access_log=None, max_line_size=MAX_LINE_SIZE)
        await runner.setup()
        if nodes is not None:
            # listed once its workers run (a slow start must not outlive the first
            # announcement); renewed from here on by the report loop
            await nodes.start()
            log.info("- node %s in Redis %s as %s", nodes.id, config.redis.url, nodes.node.url)
        site = web.TCPSite(runner, config.server.bind, config.server.http_port)
        await site.start()
        log.info(
            "- mediafed %s listening on http://%s:%d with %d workers (media UDP %s, "
            "ICE-TCP %s, advertised %s)",
            __version__,
            config.server.bind,
            config.server.http_port,
            workers,
            ", ".join(str(link.udp_port) for link in links),
            ", ".join(str(link.tcp_port) for link in links) if links[0].tcp_port else "off",
            config.advertised_ips(),
        )
        reports = asyncio.get_running_loop().create_task(_report_loop(proxy, config.redis.ttl_s))
        stop = stop_on_signals()
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        log.info("- shutting down")
        if reports is not None:
            reports.cancel()
        if runner is not None:
            await runner.cleanup()
        await asyncio.gather(*(process.stop() for process in processes))
        if nodes is not None:
            await nodes.close()
        shutil.rmtree(runtime, ignore_errors=True)


def _forget(placement: Placement, process: WorkerProcess) -> None:
    gone = placement.worker_down(process.index)
    if gone:
        log.warning("x rooms lost with worker %d: %s", process.index, ", ".join(gone))


def _directory(config: Config, workers: int) -> NodeDirectory | None:
    """This node in Redis, with ``[redis] url``."""
    section = config.redis
    if not section.url:
        return None
    from mediafed.cluster.nodes import NodeDirectory, NodeInfo

    url = section.node_url or config.server.public_url or config.server.local_url()
    node_id = section.node_id or f"{socket.gethostname()}:{config.server.http_port}"
    node = NodeInfo(node_id, url, workers=workers, version=__version__)
    return NodeDirectory(section.url, node, prefix=section.key_prefix, ttl_s=section.ttl_s)


async def _report_loop(proxy: Proxy, ttl_s: float) -> None:
    """Each second: what every worker holds; with Redis, every ``ttl_s / 3`` this
    node's load and rooms."""
    heartbeat_every = max(1, round(ttl_s / 3 / REPORT_EVERY_S))
    ticks = 0
    while True:
        if ticks:
            await asyncio.sleep(REPORT_EVERY_S)
        ticks += 1
        try:
            await proxy.refresh()
            if proxy.nodes is not None and ticks % heartbeat_every == 0:
                await heartbeat(proxy, proxy.nodes)
        except Exception:  # never let placement go stale for one bad answer
            log.exception("x reporting failed; trying again in %.0f s", REPORT_EVERY_S)


async def heartbeat(proxy: Proxy, nodes: NodeDirectory) -> None:
    placement = proxy.placement
    node = dataclasses.replace(
        nodes.node,
        participants=sum(load.participants for load in placement.loads),
        rooms=sum(len(load.rooms) for load in placement.loads),
    )
    try:
        await nodes.heartbeat(node, placement.rooms())
    except DirectoryError as exc:
        log.warning("x %s", exc)
