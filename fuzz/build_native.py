"""Build the fuzz runs' native parts with clang: ASan + UBSan, and libFuzzer in one runtime.

- ``build/fuzz-asan/<package path>/<module><EXT_SUFFIX>``: every C extension ``setup.py``
  declares (read from it, so a new or renamed one is picked up), compiled with
  ``-fsanitize=address,undefined`` and libFuzzer's edge counters and comparison hooks
  (``-fsanitize-coverage=inline-8bit-counters,pc-table,trace-cmp``), so coverage of the C
  code guides the fuzzer too; ``build/fuzz-asan/modules.txt`` lists them (module name and
  path, in ``setup.py`` order). The fuzz targets load them in place of the normal build
  (``fuzz/_common.py``, ``MEDIAFED_FUZZ_NATIVE`` names that list); the normal build is
  never touched.
- ``build/fuzz-asan/asan_with_fuzzer.so``: clang's static ASan/UBSan runtime and libFuzzer
  merged into one library, preloaded into the (unsanitized) Python. atheris finds the
  preloaded libFuzzer and uses it; with the plain ASan runtime preloaded instead, its
  no-op coverage hooks would shadow atheris's and blind the fuzzer to Python coverage.

Needs clang and its runtimes (Debian: ``clang``, ``libclang-rt-14-dev``).

    python -m fuzz.build_native          # build, print the modules built
    python -m fuzz.build_native --env    # build, print KEY=VALUE lines to run targets with
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "fuzz-asan"
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"]
COVERAGE = ["-fsanitize-coverage=inline-8bit-counters,pc-table,trace-cmp"]
ENV = {
    # CPython leaks by design; libFuzzer's leak check would need LeakSanitizer on.
    # A small quarantine and short malloc stacks keep a Python process fast and lean.
    "ASAN_OPTIONS": (
        "detect_leaks=0:quarantine_size_mb=16:malloc_context_size=8:allocator_may_return_null=1"
    ),
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}


class BuildError(RuntimeError):
    """The sanitized build cannot be made here (no clang or no runtimes)."""


def clang() -> str:
    cc = os.environ.get("MEDIAFED_FUZZ_CC") or shutil.which("clang")
    if cc is None:
        raise BuildError(
            "clang is not installed (Debian: apt-get install clang libclang-rt-14-dev)"
        )
    return cc


def runtime_dir(cc: str) -> Path:
    asan = subprocess.run(
        [cc, "-print-file-name=libclang_rt.asan-x86_64.a"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not os.path.isabs(asan):
        found = subprocess.run(
            [cc, "-print-runtime-dir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        asan = str(Path(found) / "libclang_rt.asan-x86_64.a")
    if not os.path.exists(asan):
        raise BuildError(f"{cc} has no ASan runtime (Debian: apt-get install libclang-rt-14-dev)")
    return Path(asan).parent


def extensions() -> list[tuple[str, list[Path], list[Path]]]:
    """(module name, sources, depends) of each ``Extension(...)`` in ``setup.py``."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Extension"):
            continue
        name = ast.literal_eval(node.args[0])
        sources = ast.literal_eval(node.args[1])
        depends: list[str] = []
        for keyword in node.keywords:
            if keyword.arg == "depends":
                depends = ast.literal_eval(keyword.value)
        found.append((name, [ROOT / s for s in sources], [ROOT / d for d in depends]))
    if not found:
        raise BuildError("setup.py declares no C extension")
    return found


def module_path(name: str) -> Path:
    *package, module = name.split(".")
    return BUILD.joinpath(*package) / (module + sysconfig.get_config_var("EXT_SUFFIX"))


def manifest_path() -> Path:
    return BUILD / "modules.txt"


def runtime_path() -> Path:
    return BUILD / "asan_with_fuzzer.so"


def _newer(out: Path, *inputs: Path) -> bool:
    return out.exists() and all(out.stat().st_mtime >= i.stat().st_mtime for i in inputs)


def build_runtime(cc: str) -> Path:
    """ASan (+UBSan) and libFuzzer in one shared library, as atheris documents."""
    out = runtime_path()
    rt = runtime_dir(cc)
    asan, asan_cxx, fuzzer = (
        rt / "libclang_rt.asan-x86_64.a",
        rt / "libclang_rt.asan_cxx-x86_64.a",
        rt / "libclang_rt.fuzzer_no_main-x86_64.a",
    )
    if _newer(out, asan, fuzzer):
        return out
    cxx = shutil.which(cc + "++") or shutil.which("clang++") or cc
    with tempfile.TemporaryDirectory() as tmp:
        sanitizer = Path(tmp) / "asan.a"
        shutil.copy(asan, sanitizer)
        # The preinit hook only works in an executable; a preloaded library inits itself.
        subprocess.run(["ar", "d", str(sanitizer), "asan_preinit.cpp.o"], check=True)
        subprocess.run(
            [
                cxx,
                "-shared",
                "-Wl,--whole-archive",
                str(fuzzer),
                str(sanitizer),
                str(asan_cxx),
                "-Wl,--no-whole-archive",
                "-lpthread",
                "-ldl",
                "-lrt",
                "-o",
                str(out),
            ],
            check=True,
        )
    return out


def build_module(cc: str, name: str, sources: list[Path], depends: list[Path]) -> Path:
    """One sanitized, coverage-instrumented extension; its runtime comes from the preload."""
    out = module_path(name)
    if _newer(out, *sources, *depends, Path(__file__)):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    include = sysconfig.get_paths()["include"]
    objects = []
    for source in sources:
        obj = out.parent / (source.stem + ".o")
        subprocess.run(
            [
                cc,
                *SANITIZE,
                *COVERAGE,
                "-fPIC",
                "-Wall",
                f"-I{include}",
                "-c",
                str(source),
                "-o",
                str(obj),
            ],
            check=True,
        )
        objects.append(str(obj))
    # Linked without the sanitizer runtime: its symbols resolve to the preloaded one.
    subprocess.run([cc, "-shared", *objects, "-o", str(out)], check=True)
    return out


def build() -> dict[str, str]:
    """Build both parts (when out of date); the environment a fuzz run needs."""
    cc = clang()
    BUILD.mkdir(parents=True, exist_ok=True)
    runtime = build_runtime(cc)
    lines = [
        f"{name} {build_module(cc, name, sources, depends)}"
        for name, sources, depends in extensions()
    ]
    manifest = manifest_path()
    manifest.write_text("\n".join(lines) + "\n")
    return {"MEDIAFED_FUZZ_NATIVE": str(manifest), "LD_PRELOAD": str(runtime), **ENV}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", action="store_true", help="print the run environment")
    args = parser.parse_args()
    try:
        env = build()
    except BuildError as exc:
        print(f"x {exc}", file=sys.stderr)
        return 1
    if args.env:
        print("\n".join(f"{key}={value}" for key, value in env.items()))
    else:
        print(Path(env["MEDIAFED_FUZZ_NATIVE"]).read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
