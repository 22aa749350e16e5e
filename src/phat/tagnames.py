"""Every MLflow tag name phat writes or reads, in one place.

Runs, model versions and registered models carry these names; a test walks the package's source
and refuses a `"phat.…"` tag name typed anywhere else, so a rename happens here or not at all.
The names are part of the contract a user's tooling reads (docs/mlflow.md lists them).
"""

from __future__ import annotations


class Tag:
    """Tag names (plain strings, so they serialize and compare as themselves)."""

    PREFIX = "phat."

    # what a trained model is: identity, data, recipe (on the run and on the version)
    MODEL_HASH = "phat.model_hash"
    CODE_HASH = "phat.code_hash"
    DATA_HASH = "phat.data_hash"
    FEATURE_VERSION = "phat.feature_version"
    LABEL_DEFINITION = "phat.label_definition"
    HORIZON_ID = "phat.horizon_id"
    HORIZON_BARS = "phat.horizon_bars"
    TIMEFRAME = "phat.timeframe"
    CALIBRATION = "phat.calibration"
    TRAINING_WINDOW = "phat.training_window"
    MODEL_KIND = "phat.model_kind"
    SELECTED_RUNG = "phat.selected_rung"
    SEED = "phat.seed"
    THREADS = "phat.threads"
    GIT_SHA = "phat.git_sha"
    SYMBOL = "phat.symbol"
    CALENDAR = "phat.calendar"
    MAX_GAP_BARS = "phat.max_gap_bars"
    PROMOTABLE = "phat.promotable"
    RESOLUTION = "phat.resolution"
    POOLING = "phat.pooling"
    ASSET_MAPS = (
        "phat.asset_maps"  # the calibration's per-asset corrections: pooled | per_asset ...
    )
    UNIVERSE = "phat.universe"
    ASSETS = "phat.assets"
    ASSETS_SKIPPED = "phat.assets_skipped"
    ASSET = "phat.asset"  # a universe model's view of one asset (metadata, not a tag on MLflow)
    MODEL_URI = "phat.model_uri"

    # the logged dataset
    START = "phat.start"
    END = "phat.end"
    BARS = "phat.bars"

    # who wrote a run, and what became of it
    HOST = "phat.host"
    PID = "phat.pid"
    REGISTERED_MODEL = "phat.registered_model"
    MODEL_VERSION = "phat.model_version"
    DUPLICATE_OF = "phat.duplicate_of"
    WARNINGS = "phat.warnings"
    ERROR = "phat.error"
    DEBRIS = "phat.debris"

    # sweeps
    SWEEP_PREFIX = "phat.sweep."
    SWEEP_NAME = "phat.sweep.name"
    SWEEP_OVERRIDES = "phat.sweep.overrides"
    SWEEP_JOB = "phat.sweep.job"
    SWEEP_OBJECTIVES = "phat.sweep.objectives"
    SWEEP_BEST_RUN = "phat.sweep.best_run"
    SWEEP_BEST_OVERRIDES = "phat.sweep.best_overrides"
    SWEEP_REGISTERED = "phat.sweep.registered"

    # walk-forward evidence
    WALKFORWARD_RUN_ID = "phat.walkforward.run_id"
    WALKFORWARD_FOR = "phat.walkforward.for"
    FOLD_TRAIN_START = "phat.fold.train_start"
    FOLD_CALIBRATION_START = "phat.fold.calibration_start"
    FOLD_TEST_START = "phat.fold.test_start"
    FOLD_TEST_END = "phat.fold.test_end"

    # backtest
    BACKTEST_WINDOW = "phat.backtest.window"
    BINDING_PREFIX = "phat.binding."

    # monitoring
    ALARM_PREFIX = "phat.alarm."
    ALARM_TIME = "phat.alarm.time"
    ALARM_E_VALUE = "phat.alarm.e_value"
    ALARM_BARS = "phat.alarm.bars"
    ALARM_ACTION = "phat.alarm.action"
    # one asset's alarm on a universe model's version (phat.alarm.asset.<symbol>): that asset
    # alone resolves to the proxy (trading.signals.for_asset)
    ASSET_ALARM_PREFIX = "phat.alarm.asset."
    RECALIBRATION = "phat.recalibration"

    # promotion and production
    PROMOTION_MODEL_NAME = "phat.promotion.model_name"
    PROMOTION_CANDIDATE = "phat.promotion.candidate"
    PROMOTION_BASELINE = "phat.promotion.baseline"
    PROMOTION_PASSED = "phat.promotion.passed"
    PROMOTION_DRY_RUN = "phat.promotion.dry_run"
    GATE_STATUS = "phat.gate.status"
    GATE_RUN_ID = "phat.gate.run_id"
    GATE_EVALUATED_AT = "phat.gate.evaluated_at"
    GATE_BASELINE = "phat.gate.baseline"
    GATE_FAILED = "phat.gate.failed"
    # the assets a universe model's version was promoted without (promotion.exclude_assets=auto),
    # comma-separated: every binding keeps them on the proxy (reason excluded_asset)
    EXCLUDED_ASSETS = "phat.excluded_assets"
    HISTORY_PREFIX = "phat.history."
    LEGACY_HISTORY = (
        "phat.production_history"  # the whole-JSON history of early versions (read only)
    )
    LEASE = "phat.lease"

    # MLflow's own names that phat sets or reads
    MLFLOW_PARENT_RUN = "mlflow.parentRunId"
    MLFLOW_RUN_NAME = "mlflow.runName"
    MLFLOW_MODEL_VERSIONS = "mlflow.modelVersions"  # on a logged model
    MLFLOW_EXPERIMENT_KIND = "mlflow.experimentKind"
    MLFLOW_NOTE = "mlflow.note.content"  # the run description the UI shows

    @classmethod
    def names(cls) -> dict[str, str]:
        """Every constant (attribute -> tag name or prefix)."""
        return {k: v for k, v in vars(cls).items() if k.isupper() and isinstance(v, str)}
