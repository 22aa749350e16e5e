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
    assert "2 kept, 0 broken" in r.stdout


def test_contract_covers_every_subpackage_and_module() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in cfg["contracts"] if c["type"] == "layers"]
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


# Strongly connected groups of modules (Tarjan) in grimp's import graph of the tree on
# PYTHONPATH: every import counts, lazy ones inside functions and TYPE_CHECKING ones included.
_CYCLES = """
import json, sys
import grimp
sys.setrecursionlimit(10_000)
g = grimp.build_graph("phat", include_external_packages=False, cache_dir=None)
adj = {m: sorted(g.find_modules_directly_imported_by(m)) for m in sorted(g.modules)}
index, low, stack, on, out = {}, {}, [], set(), []
def visit(v):
    index[v] = low[v] = len(index); stack.append(v); on.add(v)
    for w in adj[v]:
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        group = []
        while True:
            w = stack.pop(); on.discard(w); group.append(w)
            if w == v:
                break
        if len(group) > 1:
            out.append(sorted(group))
for m in adj:
    if m not in index:
        visit(m)
print(json.dumps(out))
"""


def _cycles(src: Path) -> list[list[str]]:
    import json

    r = subprocess.run([sys.executable, "-c", _CYCLES], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(src)}, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_import_graph_has_no_cycle() -> None:
    """import-linter orders the layers; inside a layer (and through lazy imports) only a cycle
    search sees two modules that import each other."""
    assert _cycles(ROOT / "src") == []


def test_a_cycle_is_found(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "src" / "phat", tmp_path / "src" / "phat")
    for mod, other in (("labels", "splits"), ("splits", "labels")):  # each imports the other
        f = tmp_path / "src" / "phat" / "contract" / f"{mod}.py"
        f.write_text(f.read_text() + f"\n\ndef _oops():\n    from phat.contract import {other}\n")
    found = _cycles(tmp_path / "src")
    assert ["phat.contract.labels", "phat.contract.splits"] in found


def test_scoring_imports_without_the_config_stack() -> None:
    """A logged model's environment has MLflow, numpy, pandas, pyarrow, scipy, safetensors and
    pyyaml, not omegaconf or Hydra: loading and scoring must not import them (found when the
    model kinds' schemas imported omegaconf's MISSING)."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('omegaconf', 'hydra'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import phat.registry.pyfunc_loader, phat.registry.artifact, phat.scoring.stream\n"
        "from phat.models.kinds import model_class\n"
        "for k in ('logistic', 'tree', 'per_asset'):\n"
        "    model_class(k)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_a_scoring_verb_that_reaches_the_training_orchestration_breaks_the_contract(
    tmp_path: Path,
) -> None:
    # Scoring reads data through phat.data.load; a copy where backtest takes load_bars from
    # the training orchestration again (as it once did) is refused, even through another module.
    shutil.copytree(ROOT / "src" / "phat", tmp_path / "src" / "phat")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    sig = tmp_path / "src" / "phat" / "trading" / "signals.py"
    sig.write_text(sig.read_text() + "\n\ndef _oops():\n    from phat.lifecycle import training\n")
    r = _lint(tmp_path / "src", tmp_path / "pyproject.toml")
    assert r.returncode != 0
    assert "phat.trading is not allowed to import phat.lifecycle.training" in r.stdout
