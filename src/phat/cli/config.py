"""The config schema and loader: one key per setting, declared once in conf/ with its default.

The YAML files under `phat/conf/` hold every default; the dataclasses below hold only names and
types (every field is MISSING here), so a default cannot differ between the file a user reads
and the code that runs. A composed config is merged into the verb's schema: an undeclared or
misspelt key (`data.volum_nan=1`, also with `+`), a wrong type (`seed=abc`) or a value out of
range (`metrics.n_bins=0`) is a `ConfigError` naming the key, before any data is read or any
MLflow run exists. `precheck` does the same for a command line before Hydra starts, so every
config error is one line and exit code 2.

Only this module reads config with defaults; everything downstream indexes the validated dict.
"""

from __future__ import annotations

import re
from typing import Any

from phat.confdefaults import (
    auto_or_number,
    out_of_bounds,
    schema_autos,
    schema_bounds,
    schema_choices,
)
from phat.contract.labels import parse_horizon
from phat.errors import ConfigError
from phat.models.kinds import check_params, recipes
from phat.models.kinds import kind as model_kind
from phat.settings import LADDER, POOLING, SCHEMAS, ModelConf

# ---------------------------------------------------------------------------------------------
# Schema: names, types and ranges (defaults live in conf/)


# ---------------------------------------------------------------------------------------------
# Values: ranges and choices, checked before any work

CALENDAR_WORDS = ("auto", "24x7", "fx")


def _lookup(cfg: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def bounds_of(schema: type) -> dict[str, Any]:
    """Every ranged key of a verb's schema (declared with its type: `setting(...)`)."""
    return schema_bounds(schema)


def check_values(cfg: dict[str, Any], schema: type) -> None:
    """Ranges (declared beside the types) and choices that the types alone do not say."""
    for key, choices in schema_choices(schema).items():  # declared with the types (settings)
        found, v = _lookup(cfg, key)
        if found and v is not None and str(v).lower() not in choices:
            raise ConfigError(f"{key}={v!r}: expected one of {list(choices)}")
    ranges = bounds_of(schema)
    for key, integer in schema_autos(schema).items():
        found, v = _lookup(cfg, key)
        if found:
            try:
                auto_or_number(key, v, ranges[key], integer)
            except ValueError as e:
                raise ConfigError(str(e)) from None
    for key, bounds in ranges.items():
        found, v = _lookup(cfg, key)
        why = out_of_bounds(key, v, bounds) if found else None
        if why:
            raise ConfigError(why)
    if "horizon" in cfg:
        parse_horizon(cfg["horizon"])
    found, cal = _lookup(cfg, "data.calendar")
    if found and cal not in CALENDAR_WORDS and not re.fullmatch(r"[A-Z0-9]{3,5}", str(cal)):
        raise ConfigError(
            f"data.calendar={cal!r}: expected auto, 24x7, fx or an exchange code such as XNYS"
        )
    found, objectives = _lookup(cfg, "sweep.objectives")
    if found:
        allowed = ("selection_log_loss", "selection_brier", "selection_ece")
        bad = [o for o in objectives or [] if o not in allowed]
        if bad or not objectives:
            why = (
                " (a sweep never selects on the test span)"
                if any(str(o).startswith("test_") for o in bad)
                else ""
            )
            raise ConfigError(
                f"sweep.objectives={list(objectives or [])}: expected one or more of "
                f"{list(allowed)}{why}"
            )
    if "version" in cfg and not re.fullmatch(r"\d+", str(cfg["version"])):
        raise ConfigError(f"version={cfg['version']!r}: expected a registry version number")


def _field_error(e: Exception) -> ConfigError:
    """OmegaConf's multi-line validation error -> one line naming the key."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    key = getattr(e, "full_key", None) or ""
    msg = str(getattr(e, "msg", e)).split("\n")[0]
    if isinstance(e, ConfigKeyError | ConfigAttributeError) and "not in" in msg:
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        return ConfigError(
            f"{key or msg}: not a setting{' of ' + parent if parent else ''} (misspelt or "
            "undeclared; `phat <verb> --help` lists the keys)"
        )
    return ConfigError(f"{key}: {msg}" if key else msg)


def validate(verb: str, cfg: Any) -> Any:
    """The composed config (DictConfig or dict) checked against the verb's schema; returns the
    verb's settings: an instance of its schema dataclass (`SCHEMAS[verb]`), every section a
    `Section` (attributes, and item access as the composed mapping). Refuses undeclared keys,
    wrong types and out-of-range values."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = {k: v for k, v in dict(cfg).items() if k != "hydra"}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(SCHEMAS[verb]), cfg)
        out = OmegaConf.to_container(merged, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        raise _field_error(e) from None
    if verb in ("train", "walkforward"):
        out["model"] = _validate_model(cfg["model"])
    assert isinstance(out, dict)
    check_values(out, SCHEMAS[verb])
    if "engine" in out:
        from phat.engines import ENGINES, require

        if str(out["engine"]) not in ENGINES[verb]:
            raise ConfigError(f"engine={out['engine']!r}: expected one of {list(ENGINES[verb])}")
        if str(out["engine"]) != "local":
            require(str(out["engine"]))  # installed? one line naming the extra if not
    settings = OmegaConf.to_object(merged)  # the verb's dataclass, every section typed
    if "model" in out:
        settings.model = ModelConf(**out["model"])  # checked above, params by the kind
    return settings


def _validate_model(model: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(model, dict):
        raise ConfigError("model: expected a group option such as model=logistic")
    kind = model.get("kind")
    if kind not in recipes():
        raise ConfigError(f"model.kind={kind!r}: expected one of {list(recipes())}")
    extra = sorted(set(model) - {"kind", "params", "ladder", "pooling"})
    if extra:
        raise ConfigError(f"model.{extra[0]}: not a setting of model")
    ladder = str(model.get("ladder", "")).lower()
    ladder = {"true": "on", "false": "off"}.get(ladder, ladder)  # YAML/Hydra may read on as true
    if ladder not in LADDER:
        raise ConfigError(f"model.ladder={model.get('ladder')!r}: expected 'on' or 'off'")
    pooling = str(model.get("pooling", "pooled"))
    if pooling not in POOLING:
        raise ConfigError(f"model.pooling={pooling!r}: expected 'pooled' or 'per_asset'")
    try:
        params = OmegaConf.merge(
            OmegaConf.structured(model_kind(kind).params), model.get("params") or {}
        )
        plain = OmegaConf.to_container(params, throw_on_missing=True)
    except OmegaConfBaseException as e:
        err = _field_error(e)
        raise ConfigError(f"model.params.{err} (model={kind})") from None
    assert isinstance(plain, dict)
    plain = check_params(kind, plain)
    return {"kind": kind, "params": plain, "ladder": ladder, "pooling": pooling}


# ---------------------------------------------------------------------------------------------
# Command line


def _split_args(args: list[str]) -> list[str]:
    """The overrides phat owns: not Hydra's flags (-m, --cfg, ...) nor hydra.* / hydra/ keys."""
    return [
        a
        for a in args
        if not a.startswith("-")
        and "=" in a
        and not a.lstrip("+~").startswith(("hydra.", "hydra/"))
    ]


def _expand(overrides: list[str]) -> list[list[str]]:
    """One override list per value of each sweep (`model=logistic,tree`), so every value of a
    multirun is checked; interval/range sweeps a sweeper samples are checked by the job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    base: list[str] = []
    sweeps: list[tuple[int, list[str]]] = []
    for o in parsed:
        if o.is_sweep_override():
            try:
                values = list(o.sweep_string_iterator())
            except Exception:  # interval(): a sweeper samples it
                continue
            prefix = "+" if o.is_add() else ""
            key = o.get_key_element()
            sweeps.append((len(base), [f"{prefix}{key}={v}" for v in values]))
            base.append(sweeps[-1][1][0])
        else:
            base.append(o.input_line)
    runs = [base]
    for pos, values in sweeps:
        for v in values[1:]:
            runs.append([*base[:pos], v, *base[pos + 1 :]])
    return runs[:64]


def compose(verb: str, overrides: list[str]) -> Any:
    """The verb's config composed with overrides (Hydra's compose API; no run, no output dir)."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from phat.cli.verbs import CONF_DIR, VERBS

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
            return _compose(VERBS[verb][1], overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def _quote_hint(overrides: list[str]) -> str:
    """The quoting that makes Hydra read a value with brackets (`spark.master=local[2]`)."""
    for o in overrides:
        key, eq, value = o.partition("=")
        if eq and "[" in value and not value.startswith(("[", "'", '"')):
            return f"; a value with brackets needs quotes: \"{key}='{value}'\""
    return ""


def precheck(verb: str, args: list[str]) -> None:
    """Compose and validate what the command line asks for; raises ConfigError in one line."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = _split_args(args)
    try:
        runs = _expand(overrides)
    except HydraException as e:
        raise ConfigError(
            f"cannot parse overrides {overrides}: {str(e).splitlines()[0]}{_quote_hint(overrides)}"
        ) from None
    for ov in runs:
        try:
            cfg = compose(verb, ov)
        except (HydraException, OmegaConfBaseException) as e:
            raise _compose_error(e) from None
        try:
            checked = validate(verb, cfg)
        except OmegaConfBaseException as e:  # interpolation errors while resolving
            raise _field_error(e) from None
        check_outputs(verb, checked)


# The suffixes `phat predict` writes by (one format each); engine=spark writes a directory.
PREDICT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


def check_outputs(verb: str, cfg: Any) -> None:
    """Every path the verb will write, checked before Hydra starts and before any data is read
    (phat.files.check_output): a file where a file is meant (its suffix one the writer knows),
    a directory where a directory is, in a place this process can write."""
    from phat.files import check_output

    if verb in ("train", "backtest", "walkforward", "monitor"):
        check_output("out_dir", cfg["out_dir"], kind="dir")
    if verb == "predict":
        if str(cfg["engine"]) == "spark":
            check_output("out", cfg["out"], kind="dir")
        else:
            check_output("out", cfg["out"], suffixes=tuple(PREDICT_FORMATS))
    if verb == "monitor" and cfg["monitor"]["state"]:
        # the placeholders ({name}, {version}, {asset}) are filled in once the model is known
        state = re.sub(r"\{(name|version|asset)\}", "x", str(cfg["monitor"]["state"]))
        check_output("monitor.state", state)


def _compose_error(e: Exception) -> ConfigError:
    from omegaconf.errors import OmegaConfBaseException

    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
            return _field_error(cause)
        cause = cause.__cause__
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    m = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if m:
        import os

        from phat.cli.verbs import CONF_DIR

        group = m.group(1)
        folder = os.path.join(CONF_DIR, group)
        options = sorted(
            f[:-5] for f in os.listdir(folder) if f.endswith(".yaml") and not f.startswith("_")
        )
        return ConfigError(f"{group}={m.group(2)}: no such option; expected one of {options}")
    return ConfigError(
        text.replace("To append to your config use +", "(undeclared; `+` would add ")[:400]
    )


# ---------------------------------------------------------------------------------------------
# Help

_EXAMPLES = {
    "monitor": [
        "phat monitor data.path=new_bars.csv monitor.state=monitor.json",
        "phat monitor monitor.on_alarm=fallback monitor.alpha=0.01",
        "phat monitor monitor.clear=true",
        "phat monitor monitor.recalibrate=online monitor.state=monitor.json",
    ],
    "walkforward": [
        "phat walkforward model=logistic horizon=15m",
        "phat walkforward walkforward.train=expanding walkforward.step=7d",
        "phat walkforward data.path=btc.parquet data.symbol=BTCUSDT model=tree",
    ],
    "train": [
        "phat train model=logistic horizon=15m",
        "phat train model=tcn horizon=4x15m calibration=temperature",
        "phat train data.path=btc.parquet data.symbol=BTCUSDT horizon=1h",
        "phat train data.path=pairs/ horizon=5m   (a directory, glob or list: a universe)",
    ],
    "predict": [
        "phat predict model_uri=models:/phat-synth-15m@production data.path=bars.csv out=p.parquet",
        "phat predict model_uri=outputs/train/<run>/model data.path=bars.parquet",
        "phat predict model_uri=models:/phat-pairs-5m/1 data.path=pairs/ out=p.parquet",
    ],
    "backtest": [
        "phat backtest signal_source=proxy horizon=15m",
        "phat backtest signal_source=production horizon=15m",
        "phat backtest signal_source=model_v3 data.path=btc.parquet data.symbol=BTCUSDT",
    ],
    "promote": [
        "phat promote version=2 --dry-run",
        "phat promote version=2 horizon=15m promotion.max_ece=0.02",
        "phat promote version=2 walkforward.train=90d walkforward.calibration=30d   (the record's "
        "windows, when promote makes it)",
    ],
    "doctor": [
        "phat doctor --dry-run",
        "phat doctor stale_after_hours=1",
    ],
    "serve": [
        "phat serve model_uri=models:/phat-synth-15m@production",
        "phat serve model_uri=models:/phat-btcusdt-15m/3 host=0.0.0.0 port=8080",
    ],
    "rollback": [
        'phat rollback horizon=15m reason="calibration drift"',
        "phat rollback registry.model_name=phat-btcusdt-15m",
    ],
}


def help_text(verb: str) -> str:
    """The verb's page: what it does, examples, its groups with options, and every key with
    its default (read from conf/, no heavy import)."""
    import os

    from omegaconf import OmegaConf

    from phat.cli.verbs import CONF_DIR, VERBS

    cfg = compose(verb, [])
    lines = [f"phat {verb}: {VERBS[verb][2]}", "", "Examples:"]
    lines += [f"  {e}" for e in _EXAMPLES[verb]]
    groups = []
    for name in sorted(os.listdir(CONF_DIR)):
        folder = os.path.join(CONF_DIR, name)
        if os.path.isdir(folder) and name in cfg:
            opts = sorted(
                f[:-5] for f in os.listdir(folder) if f.endswith(".yaml") and not f.startswith("_")
            )
            groups.append(f"  {name:<12} {', '.join(opts)}")
    if groups:
        lines += ["", "Config groups (group=option):", *groups]
    if "horizon" in cfg:
        lines += ["  horizon      any <timeframe> or <bars>x<timeframe>: 15m, 1h, 1d, 4x15m, 3x1h"]
    words = schema_choices(SCHEMAS[verb])  # declared with the types (phat.settings)
    if words:
        lines += ["", "Settings that take one of:"]
        lines += [f"  {k:<28} {' | '.join(v)}" for k, v in sorted(words.items())]
    body = OmegaConf.to_yaml(cfg, resolve=False).rstrip()
    lines += [
        "",
        "Keys and defaults (override with key=value):",
        *("  " + x for x in body.split("\n")),
    ]
    lines += [
        "",
        "Tracking: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db (tracking.uri=... overrides).",
        "Config errors exit 2 with one line. Hydra's own flags: --hydra-help, -m (multirun).",
    ]
    return "\n".join(lines)
