"""The Rocket.Chat App's own checks: its node unit tests and the installable zip.

node and npm come from scripts/install-test-deps (which also runs `npm ci` in
rocketchat-app/); a missing toolchain is a failure here, not a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "rocketchat-app"


def _npm(*args: str, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    npm = shutil.which("npm")
    assert npm is not None, "npm is not installed; run scripts/install-test-deps"
    assert (APP / "node_modules").is_dir(), (
        "rocketchat-app/node_modules is missing; run `npm ci` in rocketchat-app "
        "(scripts/install-test-deps does)"
    )
    return subprocess.run(
        [npm, *args],
        cwd=APP,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "NO_UPDATE_NOTIFIER": "1", "npm_config_update_notifier": "false"},
    )


def test_app_unit_tests_pass() -> None:
    result = _npm("test")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "# fail 0" in output
    passed = [line for line in output.splitlines() if line.startswith("# pass ")]
    assert passed and int(passed[-1].split()[-1]) >= 30, output[-2000:]


def test_app_packages_into_an_installable_zip() -> None:
    result = _npm("run", "package")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    [package] = sorted((APP / "dist").glob("mediafed_*.zip"))
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
        manifest = archive.read("app.json").decode()
    assert {"app.json", "icon.png", "src/MediafedApp.js", "src/videoConfProvider.js"} <= names
    assert {"src/endpoint.js", "src/settings.js", "src/mediafedClient.js"} <= names
    assert not any(name.startswith("test/") for name in names)
    assert '"classFile":"src/MediafedApp.ts"' in manifest.replace(" ", "")
