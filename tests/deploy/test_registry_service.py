"""deploy/registry.service: `systemd-analyze verify` accepts it (pointed at a real install: this venv's
`registry`), and `systemd-analyze security` rates its sandbox as exposing little."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.deploy import DEPLOY
from tests.support.services import require_service

UNIT = DEPLOY / "registry.service"
INSTALLED = "/opt/registry/.venv/bin/registry"


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The unit, its ExecStart pointed at this venv's `registry` (verify checks the binary exists)."""
    require_service(shutil.which("systemd-analyze") is not None, "systemd-analyze (systemd)")
    registry = Path(sys.executable).with_name("registry")
    assert registry.exists()
    text = UNIT.read_text()
    assert INSTALLED in text
    path = tmp_path / "registry.service"
    path.write_text(text.replace(INSTALLED, str(registry)))
    return path


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False)


def test_unit_verifies(unit: Path) -> None:
    result = analyze("verify", unit.name, cwd=unit.parent)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_unit_is_sandboxed(unit: Path) -> None:
    text = UNIT.read_text()
    for setting in ("DynamicUser=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/registry"):
        assert f"\n{setting}\n" in text, setting
    assert "\nNoNewPrivileges=yes\n" in text
    result = analyze("security", "--offline=true", unit.name, cwd=unit.parent)
    assert result.returncode == 0, result.stderr
    exposure = re.search(r"Overall exposure level for registry\.service: ([\d.]+)", result.stdout)
    assert exposure is not None, result.stdout
    assert float(exposure[1]) < 2.0  # systemd's scale: 0 (sandboxed) to 10 (exposed); under 2 is "OK"
