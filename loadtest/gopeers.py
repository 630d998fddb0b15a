"""The Go programs the load test compares with: livekit-server and LiveKit's load tester.

Both are built from their Go modules by ``scripts/install-test-deps`` (which
asks this module what to build: ``python -m loadtest.gopeers``) into a cache
outside the repository, one directory per pinned version, so a new pin
builds anew and an existing binary is never rebuilt. Nothing of LiveKit's
source is kept here.

Why not a plain ``go install module/cmd@version``: livekit-server's root
package is no command (``cmd/server`` is), and its releases after v1.13.5
replace pion's WebRTC, DTLS and ICE with LiveKit forks the module proxy does
not serve. So each is built as a dependency of a throwaway module in the
cache (``go get`` the package at its pin plus any ``upgrades``, then ``go
build``), which ignores replace directives exactly as ``go install`` would.

``lk`` itself (``livekit-cli/v2/cmd/lk``) does not build from the proxy at
all: v2.18.2 pins ``livekit/protocol`` v1.49.1-0.2026..., which is not served
(the proxy serves v1.51.0 and later); server-sdk-go v2.18.1, which lk pins,
does not compile against those, and server-sdk-go v2.19.0, which does,
changed ``CreateAgent``, which ``cmd/lk/agent.go`` calls. Its load tester
(``pkg/loadtester``, the code behind ``lk load-test``) does build, so
``loadtest/lk-load-test/main.go`` (ours, 80 lines: flags as ``lk load-test``
has them, then ``loadtester.NewLoadTest(params).Run``) is built against it.

The load tester's media (``pkg/provider/resources``: H.264, VP8 and Opus
clips from Pixabay) are stored with Git LFS, so the module zip holds
130-byte pointers and its publishers would send nothing. The build copies the
module into the throwaway directory, encodes clips of the same names, sizes,
frame rates and bitrates from ffmpeg's test sources (``regenerate_media``,
as the resources' README encodes its own), and builds with a ``replace``
pointing at the copy. The copy is deleted after the build.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class GoPeer:
    name: str
    module: str
    package: str
    """The command's import path."""
    version: str
    upgrades: tuple[str, ...] = ()
    """``module@version`` raised above what the command's go.mod asks (served versions)."""
    main: str = ""
    """A ``main`` package of ours (a directory of this repository) built against ``package``;
    empty: ``package`` is the command."""
    media: str = ""
    """A directory of the module whose files are Git LFS pointers, regenerated before the build."""

    @property
    def binary(self) -> Path:
        return cache_dir() / f"{self.name}-{self.version}" / self.name


LIVEKIT_SERVER = GoPeer(
    name="livekit-server",
    module="github.com/livekit/livekit-server",
    package="github.com/livekit/livekit-server/cmd/server",
    # v1.13.6 and later replace pion/webrtc, dtls and ice by LiveKit forks
    # ("-warp" versions) that the module proxy does not serve.
    version="v1.13.5",
)
LK = GoPeer(
    name="lk-load-test",
    module="github.com/livekit/livekit-cli/v2",
    package="github.com/livekit/livekit-cli/v2/pkg/loadtester",
    version="v2.18.2",
    upgrades=("github.com/livekit/server-sdk-go/v2@v2.19.0", "github.com/livekit/protocol@v1.52.0"),
    main="loadtest/lk-load-test",
    media="pkg/provider/resources",
)
PEERS = (LIVEKIT_SERVER, LK)


def cache_dir() -> Path:
    """``$MEDIAFED_GO_CACHE``, else ``~/.cache/mediafed-go`` (never inside the repository)."""
    configured = os.environ.get("MEDIAFED_GO_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "mediafed-go"


def missing_message(peer: GoPeer) -> str:
    return (
        f"{peer.name} {peer.version} is not built ({peer.binary} is missing): "
        "run scripts/install-test-deps, which builds it from its Go module"
    )


# pkg/provider names clips <prefix>_<size>_<kbps>.<ext>: size is the height of a
# 16:9 picture, or p<width> of a 3:4 portrait one; the three sizes of a prefix
# run at 15, 20 and 30 frames per second.
_CLIP = re.compile(r"^(?P<prefix>[a-z]+)_(?P<size>p?\d+)_(?P<kbps>\d+)\.(?P<ext>h264|ivf)$")
_FPS = (15, 20, 30)
CLIP_SECONDS = 6


def _video_args(name: str, sizes: dict[str, list[str]]) -> list[str] | None:
    match = _CLIP.match(name)
    if match is None:
        return None
    size, kbps, ext = match["size"], int(match["kbps"]), match["ext"]
    if size.startswith("p"):
        width = int(size[1:])
        height = width * 4 // 3
    else:
        height = int(size)
        width = height * 16 // 9
    order = sorted(sizes[match["prefix"]], key=lambda s: int(s.lstrip("p")))
    fps = _FPS[min(order.index(size), len(_FPS) - 1)]
    source = f"testsrc2=size={width}x{height}:rate={fps}:duration={CLIP_SECONDS}"
    rate = [
        *("-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{kbps // 2}k"),
        *("-g", str(4 * fps), "-pix_fmt", "yuv420p"),
    ]
    if ext == "ivf":
        return ["-f", "lavfi", "-i", source, "-c:v", "libvpx", *rate, "-f", "ivf"]
    h264 = ["-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-bsf:v", "h264_mp4toannexb"]
    return ["-f", "lavfi", "-i", source, *h264, *rate, "-f", "h264"]


def regenerate_media(directory: Path) -> list[str]:
    """Encode every clip of ``directory`` anew with ffmpeg; return the names written."""
    names = sorted(p.name for p in directory.iterdir() if p.suffix in (".h264", ".ivf", ".ogg"))
    sizes: dict[str, list[str]] = {}
    for name in names:
        if match := _CLIP.match(name):
            sizes.setdefault(match["prefix"], []).append(match["size"])
    written = []
    for index, name in enumerate(names):
        if name.endswith(".ogg"):
            tone = f"sine=frequency={220 + 55 * index}:sample_rate=48000:duration={CLIP_SECONDS}"
            # One 20 ms Opus packet per Ogg page: the tester sends a page as one RTP payload.
            opus = ["-c:a", "libopus", "-b:a", "32k", "-frame_duration", "20"]
            args = ["-f", "lavfi", "-i", tone, *opus, "-page_duration", "20000", "-f", "ogg"]
        else:
            video = _video_args(name, sizes)
            if video is None:
                raise ValueError(f"{name}: not a clip name this build knows how to encode")
            args = video
        target = directory / name
        target.unlink()
        cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args, str(target)]
        subprocess.run(cmd, check=True)
        written.append(name)
    return written


def main(argv: list[str] | None = None) -> int:
    """Without arguments: one line per peer for the install script (name, version,
    module, package, binary, main, media, upgrades). ``media DIR``: regenerate the clips."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["media"] and len(args) == 2:
        for name in regenerate_media(Path(args[1])):
            print(f"   {name}")
        return 0
    if args:
        print("usage: python -m loadtest.gopeers [media DIR]", file=sys.stderr)
        return 2
    for peer in PEERS:
        fields = (peer.name, peer.version, peer.module, peer.package, peer.binary, peer.main or "-")
        print(*fields, peer.media or "-", " ".join(peer.upgrades), sep="\t")
    return 0


if __name__ == "__main__":
    sys.exit(main())
