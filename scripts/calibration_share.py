"""The train split's calibration share, measured: `phat train` (the default recipe) on each
real pair of a directory, the test span fixed at the last 20%, the calibration span taking 10%,
20% (the default) or 30% before it. Per run: the test Brier, climatology's, the CORP
decomposition's miscalibration (MCB) and discrimination (DSC), and the ECE; then per share the
mean MCB and how many pairs beat climatology (docs/results.md).

    .venv/bin/python scripts/calibration_share.py DIR [--horizon 1h] [--shares 0.1,0.2,0.3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--horizon", default="1h")
    ap.add_argument("--shares", default="0.1,0.2,0.3")
    a = ap.parse_args()

    from conftest import make_cfg
    from phat.evaluation.decomposition import corp_brier
    from phat.pipeline import train

    files = sorted(f for f in Path(a.folder).iterdir() if f.suffix in (".feather", ".parquet"))
    print("| pair | calibration share | test Brier | climatology | MCB | DSC | ECE | kept |")
    print("|---|---|---|---|---|---|---|---|")
    summary = []
    for share in (float(s) for s in a.shares.split(",")):
        mcb, beats = [], 0
        for f in files:
            with tempfile.TemporaryDirectory() as d:
                cfg = make_cfg(Path(d), f"data.path={f}", f"horizon={a.horizon}",
                               f"split.train={0.8 - share:.2f}", f"split.calibration={share}",
                               "split.test=0.2", "metrics.bootstrap_n=20")  # fmt: skip
                r = train(cfg, d)
            te = r.predictions["test"]
            c = corp_brier(te.y, te.p_hat)
            m = r.metrics
            mcb.append(c["mcb"])
            beats += m["test_brier"] < m["test_brier_climatology"]
            print(f"| {f.stem} | {share:.0%} | {m['test_brier']:.5f} | "
                  f"{m['test_brier_climatology']:.5f} | {c['mcb']:.5f} | {c['dsc']:.5f} | "
                  f"{m['test_ece']:.4f} | {r.tags['phat.selected_rung']} |", flush=True)  # fmt: skip
        summary.append(f"share {share:.0%}: mean test MCB {sum(mcb) / len(mcb):.5f}, "
                       f"beats climatology on {beats} of {len(files)}")  # fmt: skip
    print("\n".join(summary))


if __name__ == "__main__":
    main()
