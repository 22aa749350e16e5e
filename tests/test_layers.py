"""The architecture is a contract: import-linter's layers (pyproject.toml) hold on the real tree,
cover every subpackage, and a forbidden import in a scratch copy breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = str(Path(sys.executable).with_name("lint-imports"))


def _lint(src: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [LINT, "--config", str(config), "--no-cache"],
        capture_output=True,
        text=True,
        env=env,
        cwd=config.parent,
        timeout=120,
    )


def test_layers_contract_is_kept() -> None:
    r = _lint(ROOT / "src", ROOT / "pyproject.toml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 kept, 0 broken" in r.stdout


def test_contract_covers_every_subpackage_and_module() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = cfg["contracts"]
    named = {m.strip() for layer in contract["layers"] for m in layer.split("|")}
    pkg = ROOT / "src" / "phat"
    present = {
        p.stem if p.is_file() else p.name
        for p in pkg.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    }
    assert present == named
    assert contract.get("exhaustive") is True


def test_a_forbidden_import_breaks_the_contract(tmp_path: Path) -> None:
    # A scratch copy where the data layer reaches up into the CLI.
    shutil.copytree(ROOT / "src" / "phat", tmp_path / "src" / "phat")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    io = tmp_path / "src" / "phat" / "data" / "io.py"
    io.write_text(
        io.read_text() + "\n\ndef _oops():\n    from phat.cli import VERBS\n\n    return VERBS\n"
    )
    r = _lint(tmp_path / "src", tmp_path / "pyproject.toml")
    assert r.returncode != 0
    assert "BROKEN" in r.stdout and "phat.data.io -> phat.cli" in r.stdout
