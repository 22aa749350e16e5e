"""Two OS processes promote (or roll back) the same model at once, many times; count double
successes: two commands that both exited 0 having decided against the same production.

    python scripts/bench_races.py [--races 100] [--kind promote|rollback|both]

Prints per race kind: races, single successes, sequential pairs (both succeeded one after the
other, each on the state the other left: legitimate), double successes (must be 0), and
whether alias, `previous`, stages and history agree at the end. tests/test_races.py runs the same
harness with fewer races.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = "data.synthetic.periods=3000"
RELAXED = (
    # a month of synthetic bars has no room for a walk-forward record: the window's gates
    "promotion.evidence=single_split",
    "promotion.min_history_days=10",
    "promotion.max_regression.churn=100.0",
    "promotion.max_regression.slippage=100.0",
    "promotion.max_regression.drawdown=100.0",
    "promotion.brier_tolerance=0.05",
    "promotion.ece_tolerance=0.1",
    "promotion.max_ece=0.2",
    "promotion.min_samples=50",
)


@dataclass
class Tally:
    races: int = 0
    single: int = 0
    sequential: int = 0
    double: int = 0
    neither: int = 0
    errors: list[str] = field(default_factory=list)


def local_uri(store: Path) -> str:
    return f"sqlite:///{store}/mlflow.db"


def train_versions(store: Path, n: int, uri: str | None = None) -> list[str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_cfg
    from phat.lifecycle.training import run

    uri = uri or local_uri(store)
    out = []
    for i in range(n):
        cfg = make_cfg(store / f"t{i}", DATA, "metrics.bootstrap_n=5", f"seed={i + 1}", uri=uri)
        out.append(str(run(cfg)["model_version"]))
    return out


def _phat(store: Path, uri: str, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.Popen(
        [sys.executable, "-m", "phat", *args, f"tracking.uri={uri}", DATA],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=store,
        env=env,
    )


def state(uri: str, name: str) -> dict:
    from mlflow.tracking import MlflowClient

    from phat.lifecycle.production import alias_version, read_history

    client = MlflowClient(uri)
    h = read_history(client, name)
    stages = {
        str(mv.version): mv.current_stage for mv in client.search_model_versions(f"name='{name}'")
    }
    return {
        "production": alias_version(client, name, "production"),
        "previous": alias_version(client, name, "previous"),
        "stack": h.stack,
        "events": [e for _, e in h.events],
        "stages": stages,
    }


def consistent(s: dict) -> bool:
    """Alias, previous, stages and history tell one story."""
    stack = s["stack"]
    if s["production"] != (stack[-1] if stack else None):
        return False
    if s["previous"] != (stack[-2] if len(stack) >= 2 else None):
        return False
    in_production = [v for v, st in s["stages"].items() if st == "Production"]
    return in_production == ([s["production"]] if s["production"] else [])


def race(store: Path, uri: str, name: str, commands: list[list[str]], tally: Tally) -> None:
    before = len(state(uri, name)["events"])
    procs = [_phat(store, uri, *c) for c in commands]
    codes = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        codes.append(p.returncode)
        if p.returncode not in (0, 2):
            tally.errors.append(
                err.strip().splitlines()[-1] if err.strip() else f"rc {p.returncode}"
            )
        elif p.returncode == 2 and len([x for x in err.splitlines() if x.strip()]) != 1:
            tally.errors.append(f"not one line: {err!r}")
    new = state(uri, name)["events"][before:]
    tally.races += 1
    wins = codes.count(0)
    if wins != len(new):
        tally.errors.append(f"{wins} successes but {len(new)} history events")
    if wins == 2:
        if new[0].get("previous") == new[1].get("previous"):
            tally.double += 1
        else:
            tally.sequential += 1
    elif wins == 1:
        tally.single += 1
    else:
        tally.neither += 1


def run_races(
    store: Path, versions: list[str], n: int, kind: str, uri: str | None = None
) -> tuple[Tally, bool]:
    """`kind` promote: two processes promote two different candidates over the same production;
    rollback: two processes roll back the same production."""
    name = "phat-synth-15m"
    uri = uri or local_uri(store)
    tally = Tally()
    base, a, b = versions[0], versions[1], versions[2]
    for _ in range(n):
        if kind == "promote":
            _settle(uri, name, base, below=None)
            cmds = [["promote", f"version={a}", *RELAXED], ["promote", f"version={b}", *RELAXED]]
        else:
            _settle(uri, name, a, below=base)
            cmds = [["rollback", "reason=race"], ["rollback", "reason=race"]]
        race(store, uri, name, cmds, tally)
    return tally, consistent(state(uri, name))


def _verb(uri: str, verb: str, *overrides: str) -> dict:
    from phat.cli.config import compose, validate

    cfg = compose(verb, [f"tracking.uri={uri}", DATA, *overrides])
    return validate(verb, cfg)


def _settle(uri: str, name: str, production: str, below: str | None) -> None:
    """Through phat itself: roll back until `production` is live (promoting it if it never
    was), then promote on top when `below` is asked for."""
    import contextlib
    import io

    from mlflow.tracking import MlflowClient

    from phat.errors import PhatError
    from phat.lifecycle.production import current_production
    from phat.lifecycle.promotion import promote, rollback

    client = MlflowClient(uri)
    target = below or production
    for _ in range(8):
        cur = current_production(client, name)
        if cur == target:
            break
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                rollback(_verb(uri, "rollback", "reason=settle"))
        except PhatError:  # nothing below: put the target up directly
            with contextlib.redirect_stdout(io.StringIO()):
                promote(_verb(uri, "promote", f"version={target}", *RELAXED))
    if below is not None and current_production(client, name) != production:
        with contextlib.redirect_stdout(io.StringIO()):
            promote(_verb(uri, "promote", f"version={production}", *RELAXED))
    assert current_production(client, name) == production


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--races", type=int, default=100)
    ap.add_argument("--kind", default="both", choices=["promote", "rollback", "both"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        store = Path(d)
        t0 = time.perf_counter()
        versions = train_versions(store, 3)
        kinds = ["promote", "rollback"] if args.kind == "both" else [args.kind]
        for kind in kinds:
            tally, ok = run_races(store, versions, args.races, kind)
            print(
                f"{kind}: races={tally.races} single_success={tally.single} "
                f"sequential_pairs={tally.sequential} double_successes={tally.double} "
                f"neither={tally.neither} state_consistent={ok} errors={len(tally.errors)}"
            )
            for e in tally.errors[:5]:
                print("   ", e)
        print(f"seconds={time.perf_counter() - t0:.0f}")


if __name__ == "__main__":
    main()
