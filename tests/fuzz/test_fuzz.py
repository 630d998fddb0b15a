"""Every fuzz target (``fuzz/``) runs a few seconds from its seed corpus without a crash.

Each target runs as ``scripts/fuzz`` runs it: a libFuzzer process (atheris), the
targets that run native code with the ASan + UBSan build of mediafed's C extensions
when clang can make it (else with the normal extension), inside this test run's
loopback-only network namespace. The long runs and their figures are in README.md,
"Fuzzing".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TARGETS = sorted(
    path.stem
    for path in (ROOT / "fuzz").glob("*.py")
    if not path.stem.startswith("_") and path.stem not in ("build_native", "make_corpus")
)
NATIVE = {"rtp", "read_loop", "livekit_signal", "matrix_appservice", "twirp"}
"""The targets that run C code (as in ``scripts/fuzz``): these load the sanitized build."""
SECONDS = 4
SANITIZER_REPORTS = (
    "ERROR: AddressSanitizer",
    "runtime error:",
    "ERROR: UndefinedBehaviorSanitizer",
)


def plain_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MEDIAFED_FUZZ_NATIVE")}


def run_target(
    target: str, env: dict[str, str], args: list[str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            f"fuzz.{target}",
            "-timeout=30",
            "-rss_limit_mb=4096",
            f"-artifact_prefix={tmp_path}/",
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_target_is_here() -> None:
    assert set(TARGETS) >= NATIVE
    assert set(TARGETS) >= {
        "rtp",
        "rtcp",
        "sdp",
        "stun",
        "livekit_signal",
        "matrix_appservice",
        "matrix_focus",
        "call_api",
        "webhooks",
        "twirp",
        "read_loop",
    }
    for target in TARGETS:
        assert any((ROOT / "fuzz" / "corpus" / target).iterdir()), f"{target} has no seeds"


@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_without_a_crash(target: str, fuzz_env: dict[str, str], tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    args = [f"-max_total_time={SECONDS}", str(corpus), str(ROOT / "fuzz" / "corpus" / target)]
    dictionary = ROOT / "fuzz" / "dicts" / f"{target}.dict"
    if dictionary.exists():
        args.insert(0, f"-dict={dictionary}")
    env = fuzz_env if target in NATIVE else plain_env()
    result = run_target(target, env, args, tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert not any(report in log for report in SANITIZER_REPORTS), log[-6000:]
    assert "Done " in log, log[-3000:]
