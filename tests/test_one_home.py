"""One home per concept, checked on the source: a second copy of a rule fails here, not in review.

Each check walks the package's syntax trees (not a grep of text, so comments and docstrings do not
count) and a planted copy in a scratch file proves the check can fail.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

from phat.tagnames import Tag

PKG = Path(__file__).resolve().parents[1] / "src" / "phat"
TAG_LIKE = re.compile(r"^(phat|mlflow)\.[A-Za-z_]+(\.[A-Za-z_]+)*\.?$")


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _logger_names(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "getLogger"
        ):
            out.update(id(a) for a in node.args)
    return out


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name.rstrip(".")) is not None
    except (ImportError, ValueError):
        return False


def tag_literals(files: list[Path]) -> list[str]:
    """`path:line: literal` for each tag-like string written outside phat/tagnames.py."""
    found = []
    for path in files:
        if path.name == "tagnames.py":
            continue
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree) | _logger_names(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in skip
                and TAG_LIKE.match(node.value)
                and not _is_module(node.value)
            ):
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    return found


def test_tag_names_have_one_home() -> None:
    assert tag_literals(sorted(PKG.rglob("*.py"))) == []


def test_a_tag_name_typed_elsewhere_is_found(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        '"""phat.model_hash in a docstring is prose."""\n'
        "import logging\n"
        'log = logging.getLogger("phat.train")\n'
        'MODULE = "phat.data.synthetic"\n'
        'def f(tags):\n    return tags.get("phat.model_hash")\n'
    )
    assert tag_literals([planted]) == ["planted.py:6: 'phat.model_hash'"]
    # f-string pieces count too: "phat.alarm." is a prefix only tagnames may spell
    planted.write_text('def f(k):\n    return f"phat.alarm.{k}"\n')
    assert tag_literals([planted]) == ["planted.py:2: 'phat.alarm.'"]


def test_tag_names_are_distinct() -> None:
    names = Tag.names()
    assert len(set(names.values())) == len(names)
    assert all(v.startswith(("phat.", "mlflow.")) for v in names.values())


DURATIONS = [
    "15m",
    "15min",
    "1h",
    "1H",
    "1d",
    "4w",
    "90m",
    "0m",
    "5s",
    "1y",
    "m",
    "15",
    "-1h",
    "1.5h",
]


def _ok(f, *a) -> bool:
    try:
        f(*a)
    except Exception:
        return False
    return True


def test_every_duration_reader_speaks_one_grammar() -> None:
    """Timeframes, horizons, walk-forward windows, data.max_gap and file-name tails accept the
    same strings (the grammar lives in data/timeframes.py)."""
    import pandas as pd

    from phat.contract.labels import parse_horizon
    from phat.data.bars import _as_duration
    from phat.data.timeframes import parse_timeframe
    from phat.data.universe import symbol_of
    from phat.evidence.walkforward import parse_duration

    for text in DURATIONS:
        want = _ok(parse_timeframe, text)
        assert _ok(parse_horizon, text) == want, text
        assert _ok(parse_horizon, f"3x{text}") == want, text
        assert _ok(parse_duration, text, "walkforward.step") == want, text
        assert _ok(_as_duration, text, pd.Timedelta("5min"), "data.max_gap") == want, text
        assert (symbol_of(Path(f"BTC-{text}.csv")) == "BTC") == (want or text == "0m"), text
    assert parse_timeframe("15min") == parse_timeframe("15m") == pd.Timedelta(minutes=15)
    assert parse_horizon("4x15min") == parse_horizon("4x15m")  # one id per timeframe


def test_model_kinds_have_one_registry() -> None:
    """Each class's `kind` is its registry name, each recipe has a conf file and a params schema
    that match, and no module compares a kind to a literal name (models/kinds.py holds the
    traits that were `kind == "tcn"` checks)."""
    import dataclasses

    import yaml

    from phat.models.kinds import KINDS, model_class, recipes

    for name in KINDS:
        assert model_class(name).kind == name
    for name in recipes():
        conf = yaml.safe_load((PKG / "conf" / "model" / f"{name}.yaml").read_text())
        fields = {f.name for f in dataclasses.fields(KINDS[name].params)}
        assert set(conf["params"]) == fields, name
    literal = []
    for path in sorted(PKG.rglob("*.py")):
        if path.name == "kinds.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    elts = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
                    for e in elts:
                        if isinstance(e, ast.Constant) and e.value in recipes():
                            literal.append(f"{path.name}:{node.lineno}: {e.value!r}")
    assert literal == []


def test_the_logged_requirements_follow_the_kinds_a_model_is_made_of() -> None:
    """A per-asset container of TCNs needs torch to score (its own kind is per_asset: the
    earlier `kind == "tcn"` test left torch out of its requirements)."""
    from phat.models.kinds import build_model, kinds_in
    from phat.models.per_asset import PerAssetModel
    from phat.registry.environment import requirements

    tcn = build_model("tcn", {"channels": 4, "levels": 1, "kernel_size": 2, "dropout": 0.0}, 0)
    logit = build_model("logistic", {"C": 1.0, "lookback": 2, "max_iter": 10}, 0)
    torch = [
        r
        for r in requirements(kinds_in(PerAssetModel({"A": tcn, "B": logit})))
        if r.startswith("torch==")
    ]
    assert len(torch) == 1
    assert not any(
        r.startswith("torch==") for r in requirements(kinds_in(PerAssetModel({"B": logit})))
    )


# What writes a run: MLflow's fluent writers, and the client's run writers.
RUN_WRITES = {
    "log_param", "log_params", "log_metric", "log_metrics", "log_batch", "log_artifact",
    "log_artifacts", "log_dict", "log_text", "log_figure", "log_image", "log_input",
    "log_inputs", "set_tag", "set_tags", "start_run", "end_run", "create_run",
    "set_terminated", "update_run", "tracked_run",
}  # fmt: skip
RECORDER_HOMES = {"recorder.py", "tracking.py"}  # the recorder, and the run it opens


def run_writes(files: list[Path]) -> list[str]:
    found = []
    for path in files:
        if path.name in RECORDER_HOMES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                if name in RUN_WRITES:
                    found.append(f"{path.name}:{node.lineno}: {name}")
    return found


def test_every_verb_writes_runs_through_the_one_recorder() -> None:
    """Train, walk-forward, backtest, monitor, promotion, sweeps and doctor log through
    registry/recorder.py (naming, batching, size limits, retries, one connection)."""
    assert run_writes(sorted(PKG.rglob("*.py"))) == []


def test_a_run_written_around_the_recorder_is_found(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "import mlflow\n"
        "def f(client, run):\n"
        "    run.metrics({'a': 1.0})\n"
        "    mlflow.log_metrics({'a': 1.0})\n"
        "    client.set_terminated('r', 'FAILED')\n"
    )
    assert run_writes([planted]) == ["planted.py:4: log_metrics", "planted.py:5: set_terminated"]


def _conf_values() -> dict[str, set[str]]:
    import yaml

    leaves: dict[str, set[str]] = {}

    def walk(d: object) -> None:
        if isinstance(d, dict):
            for k, v in d.items():
                if k != "defaults" and not isinstance(v, dict | list):
                    leaves.setdefault(k, set()).add(repr(v))
                walk(v)
        elif isinstance(d, list):
            for x in d:
                walk(x)

    for f in (PKG / "conf").rglob("*.yaml"):
        walk(yaml.safe_load(f.read_text()))
    return leaves


def code_defaults(files: list[Path], leaves: dict[str, set[str]]) -> list[str]:
    """Parameters and dataclass fields named like a setting whose literal default is one of that
    setting's values in conf/: a second copy of a default (read it with phat.confdefaults)."""
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            pairs: list[tuple[str, ast.expr]] = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                pos = a.posonlyargs + a.args
                pairs += [
                    (x.arg, d)
                    for x, d in zip(pos[len(pos) - len(a.defaults) :], a.defaults, strict=True)
                ]
                pairs += [
                    (x.arg, d)
                    for x, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)
                    if d is not None
                ]
            elif isinstance(node, ast.ClassDef):
                pairs += [
                    (st.target.id, st.value)
                    for st in node.body
                    if isinstance(st, ast.AnnAssign)
                    and isinstance(st.target, ast.Name)
                    and st.value is not None
                ]
            for name, d in pairs:
                if (
                    isinstance(d, ast.Constant)
                    and d.value is not None
                    and repr(d.value) in leaves.get(name, ())
                ):
                    found.append(f"{path.name}:{d.lineno}: {name}={d.value!r}")
    return found


def test_no_default_is_repeated_in_code() -> None:
    assert code_defaults(sorted(PKG.rglob("*.py")), _conf_values()) == []


def test_a_default_copied_into_code_is_found(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from dataclasses import dataclass\n"
        "def ece(y, p, n_bins=15, other=15): ...\n"
        "@dataclass\nclass Policy:\n    tau: float = 0.1\n    seed: int = 12345\n"
    )
    assert code_defaults([planted], _conf_values()) == [
        "planted.py:2: n_bins=15",
        "planted.py:5: tau=0.1",
    ]


def test_classes_take_their_defaults_from_conf() -> None:
    """The defaults code callers get are the conf/ files' (one source)."""
    import yaml

    from phat.contract.features import FeatureSpec
    from phat.contract.splits import SplitConfig
    from phat.data.synthetic import SyntheticConfig
    from phat.trading.policy import ReferencePolicy

    def conf(path: str) -> dict:
        return yaml.safe_load((PKG / "conf" / f"{path}.yaml").read_text())

    syn = conf("data/_base")["synthetic"]
    assert all(getattr(SyntheticConfig(), k) == syn[k] for k in SyntheticConfig.__annotations__)
    pol = conf("policy/reference")["params"]
    assert all(getattr(ReferencePolicy(), k) == pol[k] for k in ReferencePolicy.__annotations__)
    assert vars(SplitConfig()) == {k: v for k, v in conf("split/fractions").items()}
    fs, feat = FeatureSpec(), conf("features/default")
    assert (fs.window, fs.normalization, fs.clip) == (
        feat["window"],
        feat["normalization"],
        feat["clip"],
    )
    assert [dict(f) for f in fs.features] == list(feat["set"].values())


VERB_ARGS = {"predict": ["model_uri=x"], "serve": ["model_uri=x"], "promote": ["version=1"]}


def _numeric_leaves(d: object, prefix: str = "") -> dict[str, float]:
    from collections.abc import Mapping

    out: dict[str, float] = {}
    if isinstance(d, Mapping):
        for k, v in d.items():
            out.update(_numeric_leaves(v, f"{prefix}{k}."))
    elif isinstance(d, int | float) and not isinstance(d, bool):
        out[prefix[:-1]] = d
    return out


def _outside(bounds: tuple, value: float) -> list[float]:
    lo, lo_open, hi, hi_open = bounds
    step = 1 if isinstance(value, int) else 0.5
    bad = []
    if lo is not None:
        bad.append(lo if lo_open else lo - step)
    if hi is not None:
        bad.append(hi if hi_open else hi + step)
    return bad


def test_every_numeric_setting_has_a_range_and_the_cli_refuses_outside_it() -> None:
    """Each verb's numeric keys (and each model kind's params) declare a range beside their
    type; a value just outside it is refused by the command line's check, naming the key,
    before any work."""
    import copy

    from omegaconf import OmegaConf

    from phat.cli.config import SCHEMAS, compose, precheck, validate
    from phat.confdefaults import ANY, schema_bounds
    from phat.errors import ConfigError
    from phat.models.kinds import KINDS, recipes

    def with_value(base: dict, key: str, value: float) -> dict:
        out = copy.deepcopy(base)
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
        return out

    walked = 0
    cases = [(verb, VERB_ARGS.get(verb, []), "") for verb in SCHEMAS]
    cases += [("train", [f"model={k}"], "model.params.") for k in recipes()]
    for verb, args, only in cases:
        composed = compose(verb, args)
        cfg = validate(verb, composed)
        base = OmegaConf.to_container(composed, resolve=False)
        numeric = {
            k: v
            for k, v in _numeric_leaves(cfg).items()
            if k.startswith(only) and not k.startswith("policy.params.")  # a user's class
            and not k.startswith("features.set.")  # a feature's own params (contract.features)
            and (only or not k.startswith("model.params."))  # the kinds' cases below
        }  # fmt: skip
        if only:
            kind = args[0].split("=")[1]
            bounds = {only + k: b for k, b in schema_bounds(KINDS[kind].params).items()}
        else:
            bounds = schema_bounds(SCHEMAS[verb])
        missing = sorted(k for k in numeric if k not in bounds)
        assert missing == [], f"{verb}: numeric settings without a declared range: {missing}"
        through_cli = True
        for key, value in numeric.items():
            if bounds[key] == ANY:
                continue
            for bad in _outside(bounds[key], value):
                with pytest.raises(ConfigError, match=re.escape(f"{key}=")):
                    validate(verb, with_value(base, key, bad))  # what precheck runs, composed
                if through_cli:  # and the command line's own check, end to end, once per case
                    with pytest.raises(ConfigError, match=re.escape(f"{key}=")):
                        precheck(verb, [*args, f"{key}={bad}"])
                    through_cli = False
                walked += 1
    assert walked > 100


def test_every_source_path_named_in_conf_and_docs_exists() -> None:
    """Conf comments, docs and the README point at files that are there (paths went stale when
    modules moved into subpackages)."""
    root = PKG.parents[1]
    texts = [*(PKG / "conf").rglob("*.yaml"), *(root / "docs").rglob("*.md"), root / "README.md"]
    named = {
        (path.relative_to(root).as_posix(), m)
        for path in texts
        for m in re.findall(r"\b(?:src/phat|scripts|tests)/[\w/]+\.py\b", path.read_text())
    }
    assert named, "the scan found no paths at all"
    assert sorted(n for n in named if not (root / n[1]).exists()) == []


def registry_clients(files: list[Path]) -> list[str]:
    """MlflowClient made outside phat/registry: the Model Registry has one door there."""
    found = []
    for path in files:
        if path.parent.name == "registry":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                if name == "MlflowClient":
                    found.append(f"{path.name}:{node.lineno}")
    return found


def test_the_model_registry_is_reached_through_the_registry_package() -> None:
    assert registry_clients(sorted(PKG.rglob("*.py"))) == []


def test_a_client_made_elsewhere_is_found(tmp_path: Path) -> None:
    planted = tmp_path / "trading" / "planted.py"
    planted.parent.mkdir()
    planted.write_text(
        "from mlflow.tracking import MlflowClient\n"
        "import mlflow\n"
        "def f():\n"
        "    return MlflowClient(), mlflow.MlflowClient()\n"
    )
    assert registry_clients([planted]) == ["planted.py:4", "planted.py:4"]


LONG = 80  # lines a function may take; an exception says why in a comment just above it


def long_functions(files: list[Path]) -> tuple[list[str], list[str]]:
    """(functions over LONG lines without a comment above saying why, those with one)."""
    bare, excused = [], []
    for path in files:
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if node.end_lineno - node.lineno + 1 <= LONG:
                    continue
                k = first - 1  # the comment block just above the definition
                while k > 0 and lines[k - 1].strip().startswith("#"):
                    k -= 1
                above = " ".join(lines[k : first - 1])
                where = f"{path.name}:{node.name}"
                (excused if "80 lines" in above else bare).append(where)
    return bare, excused


def test_functions_are_short_and_the_few_long_ones_say_why() -> None:
    bare, excused = long_functions(sorted(PKG.rglob("*.py")))
    assert bare == []
    assert len(excused) <= 3, excused


def test_a_long_function_is_found(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    body = "".join(f"    x{i} = {i}\n" for i in range(LONG))
    planted.write_text(
        f"def long():\n{body}\n\n# Longer than 80 lines on purpose: one table.\ndef why():\n{body}"
    )
    assert long_functions([planted]) == (["planted.py:long"], ["planted.py:why"])


def shape_tests(files: list[Path]) -> list[str]:
    """Where code outside the data layer tells one asset from a universe by the object's type
    (isinstance(x, StackedBars), hasattr/getattr(x, "assets" | "grid" | "clock")) or reads a
    model's universe to decide its shape (`.universe is None`, `.universe is not None`, `if
    x.universe`) outside PHatModel.assets: each a second path the next verb would copy."""
    found = []
    for path in files:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            where = f"{path.name}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                args = node.args
                if node.func.id == "isinstance" and len(args) == 2:
                    kinds = args[1].elts if isinstance(args[1], ast.Tuple) else [args[1]]
                    if any(isinstance(k, ast.Name) and k.id == "StackedBars" for k in kinds):
                        found.append(where)
                if node.func.id in ("hasattr", "getattr") and len(args) >= 2:
                    name = args[1]
                    if isinstance(name, ast.Constant) and name.value in ("assets", "grid", "clock"):
                        found.append(where)
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute):
                is_none = isinstance(node.comparators[0], ast.Constant) and (
                    node.comparators[0].value is None
                )
                if node.left.attr == "universe" and is_none:
                    found.append(where)
            test = getattr(node, "test", None) if isinstance(node, ast.If | ast.IfExp) else None
            if isinstance(test, ast.Attribute) and test.attr == "universe":
                found.append(where)
    return sorted(found, key=lambda w: (w.split(":")[0], int(w.split(":")[1])))


def test_one_asset_and_a_universe_take_one_path_outside_the_data_layer() -> None:
    """The data declares what differs (Bars and StackedBars: members, keys_of, gather,
    across_assets, universe_record, pooled, ...); every other layer asks it. The one read of a
    model's shape is PHatModel.assets (scoring/model.py), allowed once."""
    outside = sorted(p for p in PKG.rglob("*.py") if "data" not in p.relative_to(PKG).parts)
    found = shape_tests(outside)
    assert [w for w in found if not w.startswith("model.py:")] == []
    assert len([w for w in found if w.startswith("model.py:")]) <= 1, found


def test_a_type_test_on_bars_is_found(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "def f(bars, model):\n"
        "    a = isinstance(bars, (Bars, StackedBars))\n"
        "    b = hasattr(bars, 'assets') or getattr(bars, 'grid', None)\n"
        "    c = model.universe is None\n"
        "    return 1 if model.universe else 2\n"
    )
    assert shape_tests([planted]) == [f"planted.py:{n}" for n in (2, 3, 3, 4, 5)]
