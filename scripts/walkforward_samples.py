"""Walk-forward on the real exchange samples (and the synthetic year, planted and no-signal);
prints one row per case, whatever it shows (docs/results.md).

    .venv/bin/python scripts/walkforward_samples.py [--data-dir ../shared/data]
    .venv/bin/python scripts/walkforward_samples.py --features default,scaled --universe \
        --models logistic          # the two feature sets side by side, 10 more real pairs

Windows are set from each sample's span (train 40%, calibration 15%, step 15% of it, rounded
to whole minutes/days), since the samples are days to months long, not years.

    .venv/bin/python scripts/walkforward_samples.py --hourly DIR [--calibration 30d,90d,180d] \
        [--features default,scaled] [--models logistic] [--start 2025-06-16T00:00:00Z]

`--hourly DIR`: every *.feather/*.parquet/*.csv file of DIR as one real hourly pair, walked
forward as a user would run it (`phat walkforward horizon=1h`: the default monthly windows,
train 180d, calibration 90d, refit every 30d), once per calibration window given (none: the
default's) and feature set;
then per setting how many pairs beat climatology and how many are significantly worse (DM at
5%). The synthetic rows are skipped.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CASES = [
    ("BTC-1m-sample.feather", "1m", []),
    ("ETH_BTC-5m-sample.feather", "5m", []),
    ("GOOG-1d-sample.csv", "1d", ["split.min_samples=20", "metrics.bootstrap_block=20"]),
]


def duration(td: Any) -> str:
    minutes = int(td.total_seconds() // 60)
    return f"{minutes // 1440}d" if minutes >= 2880 else f"{max(minutes, 1)}m"


def row(name: str, overrides: list[str], tmp: str) -> tuple[str, dict[str, float]]:
    from phat.cli.config import compose, validate
    from phat.evidence.walkforward import run_folds, summarize

    cfg = validate("walkforward", compose("walkforward", [f"out_dir={tmp}/o", *overrides]))
    rec = run_folds(cfg)
    m = summarize(rec, 15, int(cfg["metrics"]["bootstrap_block"]), 200, 0)
    return _text(name, rec, m), m


def _text(name: str, rec: Any, m: dict[str, float]) -> str:
    return (
        f"| {name} | {len(rec.folds)} | {int(m['oos_n'])} | {m['oos_brier']:.5f} | "
        f"{m['oos_brier_climatology']:.5f} | {m['oos_brier_proxy']:.5f} | "
        f"{m['oos_brier_last_sign']:.5f} | {m['oos_brier_last_return']:.5f} | "
        f"{m['oos_mcb']:.5f} / {m['oos_dsc']:.5f} / {m['oos_unc']:.5f} | {m['oos_auc']:.3f} | "
        f"{m['dm_pvalue_vs_climatology']:.3g} | {m['dm_pvalue_vs_last_return']:.3g} |"
    )


def hourly(
    folder: Path,
    windows: list[str | None],
    features: list[str],
    models: list[str],
    start: str | None,
) -> None:
    files = sorted(f for f in folder.iterdir() if f.suffix in (".feather", ".parquet", ".csv"))
    print(HEADER)
    tally = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            for feats in features:
                for cal in windows:
                    setting = f"{model}, {feats}, calibration {cal or 'default'}"
                    beats = worse = 0
                    for f in files:
                        ov = [f"data.path={f}", "horizon=1h", f"model={model}",
                              f"features={feats}",
                              *([f"walkforward.calibration={cal}"] if cal else []),
                              *([f"walkforward.start={start}"] if start else [])]  # fmt: skip
                        text, m = row(f"{f.stem} ({setting})", ov, tmp)
                        print(text, flush=True)
                        beats += m["oos_brier"] < m["oos_brier_climatology"]
                        worse += 1 - m["dm_pvalue_vs_climatology"] < 0.05
                    tally.append(f"{setting}: beats climatology on {beats} of {len(files)}, "
                                 f"significantly worse (DM 5%) on {worse}")  # fmt: skip
    print("\n".join(tally))


HEADER = (
    "| case | folds | oos bars | Brier | climatology | proxy | last sign | last return | "
    "MCB / DSC / UNC | AUC | DM p vs clim. | DM p vs last return |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--features", default="default", help="feature sets, comma-separated")
    ap.add_argument("--models", default="logistic,tree")
    ap.add_argument("--universe", action="store_true", help="also universe-5m/*.feather")
    ap.add_argument("--hourly", help="a directory of real hourly pairs (default windows)")
    ap.add_argument("--calibration", help="with --hourly: calibration windows (default: conf's)")
    ap.add_argument("--start", help="with --hourly: the first test window's start for every run "
                    "(the same test months whatever the windows and features)")  # fmt: skip
    a = ap.parse_args()
    if a.hourly:
        windows = a.calibration.split(",") if a.calibration else [None]
        hourly(Path(a.hourly), windows, a.features.split(","),
               a.models.split(","), a.start)  # fmt: skip
        return
    cases = list(CASES)
    if a.universe:
        cases += [(f"universe-5m/{f.name}", "5m", [])
                  for f in sorted((Path(a.data_dir) / "universe-5m").glob("*.feather"))]  # fmt: skip
    print(HEADER)
    with tempfile.TemporaryDirectory() as tmp:
        for feats in a.features.split(","):
            fs = [f"features={feats}"]
            print(row(f"synthetic year, planted ({feats})", ["walkforward.step=30d", *fs], tmp)[0])
            print(row(f"synthetic year, no signal ({feats})", ["walkforward.step=30d", *fs,
                      "data.synthetic.planted_strength=0", "data.synthetic.trend_bias=0",
                      "data.synthetic.revert_strength=0"], tmp)[0])  # fmt: skip
        for file, tf, extra in cases:
            path = Path(a.data_dir) / file
            if not path.exists():
                print(f"| {file} | (not found) |")
                continue
            from phat.data.io import normalize_layout, read_table

            ts = normalize_layout(read_table(path)).index  # phat's own reading of the file
            span = ts.max() - ts.min()
            wf = [f"walkforward.train={duration(span * 0.4)}",
                  f"walkforward.calibration={duration(span * 0.15)}",
                  f"walkforward.step={duration(span * 0.15)}"]  # fmt: skip
            ov = [f"data.path={path}", f"horizon={tf}", *wf, *extra]
            for model in a.models.split(","):
                for feats in a.features.split(","):
                    name = f"{file} {tf} {model} ({feats})"
                    try:
                        print(row(name, [*ov, f"model={model}", f"features={feats}"], tmp)[0],
                              flush=True)  # fmt: skip
                    except Exception as e:  # reported, not hidden
                        print(f"| {name} | failed: {type(e).__name__}: {str(e)[:150]} |")


if __name__ == "__main__":
    main()
