"""Forwarding-path benchmark: mediafed against a minimal baseline, same process, same run.

``python -m loadtest.forwarding`` (inside ``scripts/in-netns``). One publisher
sends 1100-byte SRTP video packets over loopback to the server's UDP port; the
server forwards each to 1, 10 and 50 subscribers (real SRTP, real sockets).

The baseline is the least a Python SFU can do per packet: receive, unprotect
once, then per subscriber copy, rewrite sequence/timestamp/SSRC, protect with
pylibsrtp and ``sendto``. mediafed runs its real room core: ICE-authenticated
demultiplexing, stream lookup, retransmission cache, keyframe gating, per
subscriber DownTrack rewrite and protect. Both are fed the same packets by a
separate sender process; CPU is this process's ``process_time`` (the server
alone), so the ratio compares like with like.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any

import pylibsrtp

from mediafed.config import load_config
from mediafed.media import events
from mediafed.media.session import Session
from mediafed.transport.dtls import SrtpKeys
from mediafed.transport.ice import binding_request
from mediafed.transport.srtp import SrtpContext
from mediafed.worker import Worker

KEY = bytes(range(30))  # key + salt for AES_CM_128_HMAC_SHA1_80
PROFILE = b"SRTP_AES128_CM_SHA1_80"
PAYLOAD_SIZE = 1100
PUB_SSRC = 0x1234ABCD
VP8_PT = 96
HOST = "127.0.0.2"
_RTP = struct.Struct("!BBHII")


def _protector(key: bytes) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    return pylibsrtp.Session(policy)


def _unprotector(key: bytes) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND)
    policy.window_size = 1024
    return pylibsrtp.Session(policy)


def make_packets(count: int, start_seq: int = 1) -> list[bytes]:
    """SRTP packets as a publisher sends them: VP8, the first one a keyframe."""
    tx = _protector(KEY)
    packets = []
    for index in range(count):
        seq = (start_seq + index) & 0xFFFF
        ts = (index // 10) * 3000
        header = _RTP.pack(0x80, (0x80 if index % 10 == 9 else 0) | VP8_PT, seq, ts, PUB_SSRC)
        # VP8 payload descriptor: S=1, PID 0; then a keyframe header (P bit 0) every 10th.
        start = index % 10 == 0
        descriptor = bytes([0x10 if start else 0x00])
        body = bytes([0x00 if start else 0x01]) + bytes(PAYLOAD_SIZE - len(descriptor) - 1)
        packets.append(tx.protect(header + descriptor + body))
    return packets


def sender(port: int, packets: list[bytes], rate_pps: float, ready: Any, go: Any) -> None:
    """Child process: send the prepared packets at ``rate_pps`` to the server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    ready.put(sock.getsockname())
    go.wait()
    interval = 1.0 / rate_pps
    start = time.perf_counter()
    for index, packet in enumerate(packets):
        target = start + index * interval
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sock.sendto(packet, (HOST, port))
    sock.close()


@dataclass
class Result:
    name: str
    subscribers: int
    forwarded: int
    cpu_s: float

    @property
    def us_per_packet(self) -> float:
        return self.cpu_s / self.forwarded * 1e6 if self.forwarded else float("inf")

    @property
    def packets_per_core_s(self) -> float:
        return self.forwarded / self.cpu_s if self.cpu_s else 0.0


class _Sink:
    """Subscriber sockets: bound so sends are real, never read (the kernel drops)."""

    def __init__(self, count: int) -> None:
        self.socks = []
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((HOST, 0))
            self.socks.append(sock)
        self.addrs = [s.getsockname() for s in self.socks]

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


async def _measure(
    loop_sock_port: int,
    packets: list[bytes],
    rate: float,
    count_forwarded: Any,
    settle_s: float = 0.3,
) -> tuple[int, float]:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Queue()
    go = ctx.Event()
    proc = ctx.Process(target=sender, args=(loop_sock_port, packets, rate, ready, go))
    proc.start()
    sender_addr = ready.get()
    before_fwd = count_forwarded()
    cpu0 = time.process_time()
    go.set()
    while proc.is_alive():
        await asyncio.sleep(0.05)
    await asyncio.sleep(settle_s)
    cpu = time.process_time() - cpu0
    proc.join()
    del sender_addr
    return count_forwarded() - before_fwd, cpu


async def run_baseline(subscribers: int, packets: list[bytes], rate: float) -> Result:
    sink = _Sink(subscribers)
    rx = _unprotector(KEY)
    txs = [_protector(KEY) for _ in range(subscribers)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    pack = struct.Struct("!HII").pack_into
    forwarded = 0
    addrs = sink.addrs
    ssrcs = [0x1000 + i for i in range(subscribers)]
    offsets = [i * 7 for i in range(subscribers)]

    def on_readable() -> None:
        nonlocal forwarded
        while True:
            try:
                data, _addr = sock.recvfrom(2048)
            except BlockingIOError:
                return
            plain = rx.unprotect(data)
            _b0, _b1, seq, ts, _ssrc = _RTP.unpack_from(plain, 0)
            for index in range(subscribers):
                out = bytearray(plain)
                pack(out, 2, (seq + offsets[index]) & 0xFFFF, ts, ssrcs[index])
                sock.sendto(txs[index].protect(bytes(out)), addrs[index])
                forwarded += 1

    loop = asyncio.get_running_loop()
    loop.add_reader(sock.fileno(), on_readable)
    try:
        count, cpu = await _measure(sock.getsockname()[1], packets, rate, lambda: forwarded)
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()
        sink.close()
    return Result("baseline", subscribers, count, cpu)


class _QuietListener:
    def on_room_event(self, event: events.RoomEvent) -> None:
        pass

    def on_subscriber_offer(self, sdp: str, offer_id: int) -> None:
        pass

    def on_local_candidate(self, target: str, candidate: str, sdp_mid: str, index: int) -> None:
        pass


PUBLISHER_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "a=msid-semantic: WMS *\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n"
    "a=ice-ufrag:benchufrag\r\na=ice-pwd:benchpasswordbenchpassword\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
    "a=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n"
    f"a=msid:stream video\r\na=ssrc:{PUB_SSRC} cname:bench\r\n"
)


async def run_mediafed(subscribers: int, packets: list[bytes], rate: float) -> Result:
    config = load_config(
        environ={
            "MEDIAFED_SERVER_BIND": HOST,
            "MEDIAFED_RTC_UDP_PORT": "0",
            "MEDIAFED_RTC_TCP_PORT": "0",
            "MEDIAFED_RTC_NODE_IP": HOST,
        }
    )
    worker = Worker.from_config(config)
    manager = worker.rooms
    await worker.start()
    sink = _Sink(subscribers)
    try:
        room = manager.get_or_create("bench")
        publisher = await room.join("publisher", listener=_QuietListener())
        await publisher.answer_publisher_offer(PUBLISHER_OFFER)
        keys = SrtpKeys(PROFILE, local_key=KEY, remote_key=KEY)
        _connect(publisher, "publisher", keys, ("127.0.0.9", 1))  # replaced below
        subs: list[Session] = []
        for index in range(subscribers):
            session = await room.join(f"sub{index}", listener=_QuietListener())
            _connect(session, "subscriber", keys, sink.addrs[index])
            for downtrack in session.downtracks.values():
                downtrack.attach(manager.clock())
            subs.append(session)
        downtracks = [dt for s in subs for dt in s.downtracks.values()]

        def forwarded() -> int:
            return sum(dt.packets_sent for dt in downtracks)

        # The sender proves itself with a real ICE check first, as a browser would:
        # the endpoint is found by the checked address, never by SSRC.
        ice = publisher.publisher.endpoint.ice
        check = binding_request(f"{ice.local_ufrag}:bench", ice.local_pwd)
        count, cpu = await _measure(worker.udp_port, [check, *packets], rate, forwarded)
        verified = _verify_sink(sink.socks[0], downtracks[0].ssrc)
        if not verified:
            raise RuntimeError("subscriber 0 received nothing it could decrypt")
    finally:
        await worker.stop()
        sink.close()
    return Result("mediafed", subscribers, count, cpu)


def _verify_sink(sock: socket.socket, ssrc: int) -> int:
    """Decrypt what subscriber 0 received: real SRTP with its SSRC and the payload intact."""
    rx = _unprotector(KEY)
    sock.setblocking(False)
    good = 0
    for _ in range(200):
        try:
            data = sock.recv(2048)
        except BlockingIOError:
            break
        try:
            plain = rx.unprotect(data)
        except pylibsrtp.Error:
            continue
        if _RTP.unpack_from(plain, 0)[4] == ssrc and len(plain) == 12 + PAYLOAD_SIZE:
            good += 1
    return good


def _connect(session: Session, role: str, keys: SrtpKeys, addr: tuple[str, int]) -> None:
    peer = session.publisher if role == "publisher" else session.subscriber
    endpoint = peer.endpoint
    endpoint.srtp = SrtpContext(keys)
    endpoint.mux.bind_address(endpoint, addr)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for subscribers in args.subscribers:
        rate = min(args.max_in_rate, args.target_out_rate / subscribers)
        count = max(200, int(rate * args.seconds))
        packets = make_packets(count)
        base_runs: list[Result] = []
        mf_runs: list[Result] = []
        for _ in range(args.repeat):
            base_runs.append(await run_baseline(subscribers, packets, rate))
            mf_runs.append(await run_mediafed(subscribers, packets, rate))
        base = statistics.median(r.us_per_packet for r in base_runs)
        mine = statistics.median(r.us_per_packet for r in mf_runs)
        row = {
            "subscribers": subscribers,
            "in_rate_pps": round(rate),
            "baseline_us_per_packet": round(base, 2),
            "mediafed_us_per_packet": round(mine, 2),
            "ratio": round(mine / base, 2),
            "mediafed_packets_per_core_s": round(1e6 / mine),
            "baseline_packets_per_core_s": round(1e6 / base),
            "forwarded_mediafed": mf_runs[-1].forwarded,
            "forwarded_baseline": base_runs[-1].forwarded,
        }
        rows.append(row)
        print(
            f"{subscribers:>3} subs  in {row['in_rate_pps']:>5} pps  baseline "
            f"{base:6.2f} us/pkt  mediafed {mine:6.2f} us/pkt  ratio {row['ratio']:.2f}  "
            f"mediafed {row['mediafed_packets_per_core_s']:>7} pkt/s/core",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.forwarding", description=__doc__)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-in-rate", type=float, default=3000.0)
    parser.add_argument("--target-out-rate", type=float, default=40000.0)
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    if os.environ.get("MEDIAFED_IN_NETNS") != "1":
        print("run me inside scripts/in-netns (loopback-only namespace)", file=sys.stderr)
        return 2
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    rows = asyncio.run(main_async(args))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
