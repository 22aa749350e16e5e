"""The settings every verb runs with, as types: one dataclass per config section, holding only
names, types and ranges (defaults live in conf/, read by phat.cli.config, which composes a
verb's config and checks it into these). A low layer, so every layer may take the section it
needs, typed, and read attributes (`cfg.data.path`); a unit test builds a section without
Hydra (`CalibrationConf(method="platt", per_asset=False, shrink_bars=0.0)`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from phat.confdefaults import MISSING, choice, setting

# The values each word setting may take, declared once here with its field (`choice`): the
# config check reads them from the schema, the code that acts on a setting imports them.
VOLUME_NAN = ("refuse", "zero")
ON_BAD_ASSET = ("fail", "skip")
# where the bars come from: the data=... option (conf/data/); auto is what data.path names
DATA_SOURCES = ("auto", "synthetic", "file", "universe")
LABEL_KINDS = ("sign", "threshold", "relative")
RELATIVE_TO = ("mean", "median")
NEUTRAL = ("drop", "down")
AGGREGATIONS = ("log_return_sum",)
NORMALIZATIONS = ("zscore", "none")
CALIBRATION_METHODS = ("auto", "platt", "temperature", "isotonic", "none")
SPLIT_METHODS = ("fractions", "dates")
ACCELERATORS = ("cpu", "auto", "gpu", "cuda", "mps")
PROGRESS_BARS = ("auto", "true", "false")
TRIGGER_RULES = ("ema_trend", "always_long", "column")
EVIDENCE = ("single_split", "walkforward")
EXCLUDE_ASSETS = ("none", "auto")
ON_ALARM = ("log", "fallback", "rollback")
RECALIBRATE = ("none", "online")
LADDER = ("on", "off")
POOLING = ("pooled", "per_asset")


class Section(Mapping):
    """A validated settings section: a dataclass instance (attributes: `cfg.data.path`) that
    also reads as the mapping it was composed from (`cfg.data.path`, `.items()`,
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
    source: str = choice(DATA_SOURCES)  # phat.data.universe.source_of resolves auto
    path: Any = MISSING  # a file, directory or glob, or a list of files (a universe)
    symbol: str | None = MISSING
    universe_name: str | None = MISSING
    on_bad_asset: str = choice(ON_BAD_ASSET)
    max_gap: Any = setting(0)  # bars (int) or a duration ("1h"); null: the calendar's rule
    calendar: str = MISSING
    volume_nan: str = choice(VOLUME_NAN)
    resample_min_coverage: float = setting(0, 1, lo_open=True)
    timestamp_format: str | None = MISSING
    dayfirst: bool | None = MISSING
    synthetic: SyntheticConf = field(default_factory=SyntheticConf)


@dataclass(eq=False)
class LabelConf(Section):
    kind: str = choice(LABEL_KINDS)
    threshold_bps: float = setting(0)
    aggregation: str = choice(AGGREGATIONS)
    neutral: str = choice(NEUTRAL)
    relative_to: str = choice(
        RELATIVE_TO
    )  # label=relative: mean | median of the universe's returns
    min_assets: int = setting(2)  # label=relative: fewer assets at a timestamp, no label


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
    normalization: str = choice(NORMALIZATIONS)
    clip: float = setting(0, lo_open=True)
    missing: MissingConf = field(default_factory=MissingConf)
    # name -> feature, in the order the model reads them; null drops an entry a composed-from
    # set has (conf/features/no_volume.yaml is the default with `volume_z: null`)
    set: dict[str, FeatureItem | None] = MISSING


@dataclass(eq=False)
class ModelConf(Section):
    """`model=<kind>`: the kind (models.kinds), its params (checked against the kind's own
    params schema), the ladder (on/off) and pooling (pooled/per_asset)."""

    kind: str = MISSING
    params: dict[str, Any] = field(default_factory=dict)
    ladder: str = MISSING
    pooling: str = MISSING


@dataclass(eq=False)
class CalibrationConf(Section):
    method: str = choice(CALIBRATION_METHODS)
    per_asset: bool = MISSING
    shrink_bars: float = setting(0)


@dataclass(eq=False)
class SplitConf(Section):
    method: str = choice(SPLIT_METHODS)
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
    accelerator: str = choice(ACCELERATORS)
    progress_bar: str = choice(PROGRESS_BARS)
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
    rule: str = choice(TRIGGER_RULES)
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
    evidence: str = choice(EVIDENCE)
    max_mcb: float = setting(0)
    alpha: float = setting(0, 1, lo_open=True)
    per_asset_fdr: float = setting(0, 1, lo_open=True)
    exclude_assets: str = choice(EXCLUDE_ASSETS)
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
    # a ModelConf once validated; composed open, as its params are the kind's own schema
    # (phat.cli.config checks them against models.kinds.kind(kind).params)
    model: Any = MISSING
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
    on_alarm: str = choice(ON_ALARM)
    state: str | None = MISSING
    rolling: int = setting(1)
    start: str | None = MISSING
    clear: bool = MISSING
    lock_timeout: float = setting(0)
    recalibrate: str = choice(RECALIBRATE)
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


# Any verb's settings that name data (every verb that reads bars or names a model by its data).
WithData = RecipeConf | PredictConf | BacktestConf | PromoteConf | RollbackConf | MonitorConf
