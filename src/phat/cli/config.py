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

import builtins
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import MISSING

from phat.confdefaults import auto_or_number, out_of_bounds, schema_autos, schema_bounds, setting
from phat.contract.labels import parse_horizon
from phat.errors import ConfigError
from phat.models.kinds import RECIPES, check_params
from phat.models.kinds import kind as model_kind

# ---------------------------------------------------------------------------------------------
# Schema: names, types and ranges (defaults live in conf/)


class Section(Mapping):
    """A validated settings section: a dataclass instance (attributes: `cfg.data.path`) that
    also reads as the mapping it was composed from (`cfg["data"]["path"]`, `.items()`,
    `**cfg`), so code and tests written against either agree. Equal to a mapping with the same
    items."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self._names():
            raise KeyError(f"{key}: not a setting of {type(self).__name__}")
        setattr(self, key, value)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]


@dataclass(eq=False)
class SyntheticConf(Section):
    assets: int = setting(0)
    vol_spread: float = setting(1)
    correlation: float = setting(0, 0.99)
    seed: int = setting(0)
    start: str = MISSING
    periods: int = setting(10)  # phat.data.synthetic.generate's minimum
    timeframe: str = MISSING
    start_price: float = setting(0, lo_open=True)
    base_vol: float = setting(0, lo_open=True)
    high_vol_mult: float = setting(0, lo_open=True)
    mean_regime_bars: int = setting(1)
    planted_strength: float = setting(free=True)  # < 0 flips the planted signal
    planted_flip_at: int | None = setting(0)
    clv_max: float = setting(0, 1)
    trend_bias: float = setting(free=True)
    revert_strength: float = setting(free=True)
    base_volume: float = setting(0, lo_open=True)
    with_funding: bool = MISSING
    with_spread: bool = MISSING


@dataclass(eq=False)
class DataConf(Section):
    path: Any = MISSING  # a file, directory or glob, or a list of files (a universe)
    symbol: str | None = MISSING
    universe_name: str | None = MISSING
    on_bad_asset: str = MISSING
    max_gap: Any = setting(0)  # bars (int) or a duration ("1h"); null: the calendar's rule
    calendar: str = MISSING
    volume_nan: str = MISSING
    resample_min_coverage: float = setting(0, 1, lo_open=True)
    timestamp_format: str | None = MISSING
    dayfirst: bool | None = MISSING
    synthetic: SyntheticConf = field(default_factory=SyntheticConf)


@dataclass(eq=False)
class LabelConf(Section):
    kind: str = MISSING
    threshold_bps: float = setting(0)
    aggregation: str = MISSING
    neutral: str = MISSING


@dataclass(eq=False)
class FeatureItem(Section):
    fn: str = MISSING
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class MissingConf(Section):
    optional_ffill_bars: int = setting(0)


@dataclass(eq=False)
class FeaturesConf(Section):
    window: int = setting(1)
    normalization: str = MISSING
    clip: float = setting(0, lo_open=True)
    missing: MissingConf = field(default_factory=MissingConf)
    list: builtins.list[FeatureItem] = MISSING


@dataclass(eq=False)
class CalibrationConf(Section):
    method: str = MISSING
    per_asset: bool = MISSING
    shrink_bars: float = setting(0)


@dataclass(eq=False)
class SplitConf(Section):
    method: str = MISSING
    train: float = setting(0, 1, lo_open=True, hi_open=True)
    calibration: float = setting(0, 1, lo_open=True, hi_open=True)
    test: float = setting(0, 1, lo_open=True, hi_open=True)
    calibration_start: str | None = MISSING
    test_start: str | None = MISSING
    test_end: str | None = MISSING
    purge_bars: int | None = setting(0)
    embargo_bars: int | None = setting(0)
    min_samples: int = setting(1)


@dataclass(eq=False)
class TrainerConf(Section):
    max_epochs: int = setting(1)
    batch_size: int = setting(1)
    lr: float = setting(0, lo_open=True)
    weight_decay: Any = setting(0, auto=True)  # auto: the TCN's purged inner CV (model=tcn)
    patience: int = setting(0)
    restore_best: bool = MISSING
    val_fraction: float = setting(0, 1, lo_open=True, hi_open=True)
    accelerator: str = MISSING
    progress_bar: str = MISSING
    deterministic: bool = MISSING


@dataclass(eq=False)
class MetricsConf(Section):
    n_bins: int = setting(2)
    bootstrap_n: int = setting(1)
    bootstrap_block: int = setting(1)


@dataclass(eq=False)
class RegistryConf(Section):
    model_name: str | None = MISSING
    register: bool = MISSING


@dataclass(eq=False)
class TrackingConf(Section):
    uri: str | None = MISSING
    experiment: str = MISSING
    timeout: int = setting(1)
    system_metrics: bool = MISSING


@dataclass(eq=False)
class TriggerConf(Section):
    rule: str = MISSING
    fast: int = setting(1)
    slow: int = setting(1)


@dataclass(eq=False)
class PolicyConf(Section):
    # Open on purpose: `params._target_` may name the user's own policy class with its own
    # arguments; instantiate() refuses unknown ones by name.
    params: dict[str, Any] = MISSING
    trigger: TriggerConf = field(default_factory=TriggerConf)


@dataclass(eq=False)
class ProxyConf(Section):
    k: float = setting(free=True)  # < 0: contrarian
    momentum: int = setting(1)
    zscore_window: int = setting(2)


@dataclass(eq=False)
class SignalConf(Section):
    strict: bool = MISSING
    min_scored_share: float = setting(0, 1)
    proxy: ProxyConf = field(default_factory=ProxyConf)


@dataclass(eq=False)
class CostsConf(Section):
    fee_bps: float = setting(0)
    slippage_bps: float = setting(0)


@dataclass(eq=False)
class RegressionConf(Section):
    churn: float = setting(0)
    slippage: float = setting(0)
    drawdown: float = setting(0)


@dataclass(eq=False)
class WindowConf(Section):
    start: str | None = MISSING
    end: str | None = MISSING


@dataclass(eq=False)
class PromotionConf(Section):
    evidence: str = MISSING
    max_mcb: float = setting(0)
    alpha: float = setting(0, 1, lo_open=True)
    per_asset_fdr: float = setting(0, 1, lo_open=True)
    exclude_assets: str = MISSING
    max_ece: float = setting(0)
    brier_tolerance: float = setting(0)
    ece_tolerance: float = setting(0)
    max_regression: RegressionConf = field(default_factory=RegressionConf)
    min_slack: RegressionConf = field(default_factory=RegressionConf)
    min_history_days: float = setting(0)
    min_samples: int = setting(1)
    window: WindowConf = field(default_factory=WindowConf)
    dry_run: bool = MISSING
    allow_other_data: bool = MISSING


@dataclass(eq=False)
class RayConf(Section):
    address: str | None = MISSING
    num_cpus: int | None = setting(1)


@dataclass(eq=False)
class SparkConf(Section):
    master: str = MISSING
    app_name: str = MISSING
    chunk_bars: int = setting(1)
    conf: dict[str, str] = MISSING


@dataclass(eq=False)
class SweepConf(Section):
    name: str | None = MISSING
    objectives: list[str] = MISSING
    register_best: bool = MISSING


@dataclass(eq=False)
class RecipeConf(Section):
    """What defines a training recipe: `phat train` and `phat walkforward` share it."""

    data: DataConf = field(default_factory=DataConf)
    horizon: str = MISSING
    label: LabelConf = field(default_factory=LabelConf)
    features: FeaturesConf = field(default_factory=FeaturesConf)
    model: Any = MISSING  # {kind, params}: checked against models.kinds.kind(kind).params
    calibration: CalibrationConf = field(default_factory=CalibrationConf)
    split: SplitConf = field(default_factory=SplitConf)
    trainer: TrainerConf = field(default_factory=TrainerConf)
    metrics: MetricsConf = field(default_factory=MetricsConf)
    signal: SignalConf = field(default_factory=SignalConf)  # the proxy rung of the ladder
    registry: RegistryConf = field(default_factory=RegistryConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)
    seed: int = setting(0)
    threads: int = setting(1)
    engine: str = MISSING  # phat.engines.ENGINES
    ray: RayConf = field(default_factory=RayConf)
    out_dir: str = MISSING


@dataclass(eq=False)
class TrainConf(RecipeConf):
    sweep: SweepConf = field(default_factory=SweepConf)


@dataclass(eq=False)
class PredictConf(Section):
    data: DataConf = field(default_factory=DataConf)
    signal: SignalConf = field(default_factory=SignalConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)
    model_uri: str = MISSING
    horizon_id: str | None = MISSING
    out: str = MISSING
    engine: str = MISSING  # phat.engines.ENGINES
    spark: SparkConf = field(default_factory=SparkConf)


@dataclass(eq=False)
class BacktestWindow(Section):
    start: str | None = MISSING
    end: str | None = MISSING


@dataclass(eq=False)
class BacktestConf(Section):
    data: DataConf = field(default_factory=DataConf)
    horizon: str = MISSING
    policy: PolicyConf = field(default_factory=PolicyConf)
    signal: SignalConf = field(default_factory=SignalConf)
    costs: CostsConf = field(default_factory=CostsConf)
    registry: RegistryConf = field(default_factory=RegistryConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)
    signal_source: str = MISSING
    backtest: BacktestWindow = field(default_factory=BacktestWindow)
    out_dir: str = MISSING


@dataclass(eq=False)
class PromoteConf(Section):
    data: DataConf = field(default_factory=DataConf)
    horizon: str = MISSING
    policy: PolicyConf = field(default_factory=PolicyConf)
    signal: SignalConf = field(default_factory=SignalConf)
    costs: CostsConf = field(default_factory=CostsConf)
    metrics: MetricsConf = field(default_factory=MetricsConf)
    registry: RegistryConf = field(default_factory=RegistryConf)
    promotion: PromotionConf = field(default_factory=PromotionConf)
    walkforward: WalkforwardSection = field(default_factory=lambda: WalkforwardSection())
    tracking: TrackingConf = field(default_factory=TrackingConf)
    version: str = MISSING


@dataclass(eq=False)
class RollbackConf(Section):
    data: DataConf = field(default_factory=DataConf)
    horizon: str = MISSING
    registry: RegistryConf = field(default_factory=RegistryConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)
    reason: str = MISSING


@dataclass(eq=False)
class ServeConf(Section):
    tracking: TrackingConf = field(default_factory=TrackingConf)
    model_uri: str = MISSING
    host: str = MISSING
    port: int = setting(1, 65535)


@dataclass(eq=False)
class DoctorConf(Section):
    tracking: TrackingConf = field(default_factory=TrackingConf)
    dry_run: bool = MISSING
    stale_after_hours: float = setting(0)


@dataclass(eq=False)
class WalkforwardSection(Section):
    train: str = MISSING
    initial: str = MISSING
    calibration: str = MISSING
    step: str = MISSING
    test: str | None = MISSING
    start: str | None = MISSING
    for_version: int | None = setting(1)


@dataclass(eq=False)
class WalkforwardConf(RecipeConf):
    walkforward: WalkforwardSection = field(default_factory=WalkforwardSection)


@dataclass(eq=False)
class MonitorSection(Section):
    source: str = MISSING
    alpha: float = setting(0, 1, lo_open=True)
    bins: int = setting(1)
    on_alarm: str = MISSING
    state: str | None = MISSING
    rolling: int = setting(1)
    start: str | None = MISSING
    clear: bool = MISSING
    lock_timeout: float = setting(0)
    recalibrate: str = MISSING
    recal_prior_bars: float = setting(0, lo_open=True)
    recal_half_life: float = setting(1)


@dataclass(eq=False)
class MonitorConf(Section):
    data: DataConf = field(default_factory=DataConf)
    signal: SignalConf = field(default_factory=SignalConf)
    metrics: MetricsConf = field(default_factory=MetricsConf)
    registry: RegistryConf = field(default_factory=RegistryConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)
    horizon: str = MISSING
    monitor: MonitorSection = field(default_factory=MonitorSection)
    out_dir: str = MISSING


SCHEMAS: dict[str, type] = {
    "monitor": MonitorConf,
    "walkforward": WalkforwardConf,
    "doctor": DoctorConf,
    "train": TrainConf,
    "predict": PredictConf,
    "backtest": BacktestConf,
    "promote": PromoteConf,
    "rollback": RollbackConf,
    "serve": ServeConf,
}

# ---------------------------------------------------------------------------------------------
# Values: ranges and choices, checked before any work

CALENDAR_WORDS = ("auto", "24x7", "fx")


def _choices() -> dict[str, tuple[str, ...]]:
    """Allowed values, taken from the code that defines them (imported when checking, not for
    --help: the feature module imports pandas)."""
    from phat.contract.features import NORMALIZATIONS
    from phat.contract.labels import AGGREGATIONS, KINDS, NEUTRAL
    from phat.models.calibration import METHODS

    return {
        "data.volume_nan": ("refuse", "zero"),
        "data.on_bad_asset": ("fail", "skip"),
        "label.kind": KINDS,
        "label.neutral": NEUTRAL,
        "label.aggregation": AGGREGATIONS,
        "features.normalization": NORMALIZATIONS,
        "model.kind": RECIPES,
        "calibration.method": METHODS,
        "split.method": ("fractions", "dates"),
        "trainer.accelerator": ("cpu", "auto", "gpu", "cuda", "mps"),
        "trainer.progress_bar": ("auto", "true", "false"),
        "policy.trigger.rule": ("ema_trend", "always_long", "column"),
        "promotion.evidence": ("single_split", "walkforward"),
        "promotion.exclude_assets": ("none", "auto"),
        "monitor.on_alarm": ("log", "fallback", "rollback"),
        "monitor.recalibrate": ("none", "online"),
    }


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
    for key, choices in _choices().items():
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
        settings.model = out["model"]  # {kind, params, ladder, pooling}: checked above
    return settings


def _validate_model(model: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(model, dict):
        raise ConfigError("model: expected a group option such as model=logistic")
    kind = model.get("kind")
    if kind not in RECIPES:
        raise ConfigError(f"model.kind={kind!r}: expected one of {list(RECIPES)}")
    extra = sorted(set(model) - {"kind", "params", "ladder", "pooling"})
    if extra:
        raise ConfigError(f"model.{extra[0]}: not a setting of model")
    ladder = str(model.get("ladder", "")).lower()
    ladder = {"true": "on", "false": "off"}.get(ladder, ladder)  # YAML/Hydra may read on as true
    if ladder not in ("on", "off"):
        raise ConfigError(f"model.ladder={model.get('ladder')!r}: expected 'on' or 'off'")
    pooling = str(model.get("pooling", "pooled"))
    if pooling not in ("pooled", "per_asset"):
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
