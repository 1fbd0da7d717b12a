"""Data drift of a new batch against the champion's reference data: Evidently's statistics, computed in NumPy.

The reference is the data the current champion was trained on. Each column of the batch is compared with it by
the project's stattest (``drift.num_method``, ``drift.cat_method``) with Evidently's own definitions, computed
over all rows by :mod:`retrainer.drift_stats` (equal to Evidently's scores and verdicts, at a fraction of its
time and memory); the batch-level rule is ours: the batch is drifted when at least ``share_threshold`` of its
columns drifted or when any key feature drifted.

Evidently still draws the HTML and JSON report people open: from every row up to ``drift.report_rows`` rows a
side, else from a seeded sample of that many, which the report's banner says (the verdict shown there is the
one computed on all rows).

Column types are declared explicitly (a 0/1 integer column is numeric, not a category); numeric values are
compared as floats and categories as text. Missing and infinite values are left out of each column, as Evidently
does (missing-value rates are the validation step's concern).

Evidently is imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from retrainer.config import DriftConfig

HTML_NAME = "drift_report.html"
JSON_NAME = "drift_report.json"
SUMMARY_NAME = "drift_summary.json"

NUMERIC = "numeric"
CATEGORICAL = "categorical"


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one column.

    Attributes:
        column: Column name.
        column_type: ``"numeric"`` or ``"categorical"``.
        method: Evidently stattest that measured it (e.g. ``wasserstein``, ``ks``).
        score: The stattest's value: a distance or a p-value depending on ``method``; NaN when undefined.
        threshold: The stattest's threshold.
        drifted: The verdict: Evidently's, or with ``drift.calibration: resampled`` the calibrated one.
        p_value: With calibration: how likely a value at least this far is without a real shift.
    """

    column: str
    column_type: str
    method: str
    score: float
    threshold: float
    drifted: bool
    p_value: float | None = None


@dataclass(frozen=True)
class DriftSummary:
    """Drift of a batch: the per-column results and the batch-level decision.

    Attributes:
        columns: One entry per analysed column, in the order the columns were given.
        drifted_count: Number of drifted columns.
        column_count: Number of analysed columns.
        share_drifted: ``drifted_count / column_count``.
        share_threshold: Share of drifted columns at which the batch counts as drifted.
        key_features_drifted: Key features that drifted, in the order of the rule's ``key_features``.
        drift_detected: ``share_drifted >= share_threshold`` or any key feature drifted.
        reference_rows: Rows of the reference data.
        current_rows: Rows of the new batch.
    """

    columns: list[ColumnDrift]
    drifted_count: int
    column_count: int
    share_drifted: float
    share_threshold: float
    key_features_drifted: list[str]
    drift_detected: bool
    reference_rows: int
    current_rows: int

    @property
    def drifted_columns(self) -> list[str]:
        """Names of the drifted columns."""
        return [c.column for c in self.columns if c.drifted]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe mapping (non-finite scores become ``None``).

        Returns:
            The summary as plain dicts, lists, strings, numbers and booleans.
        """
        data = asdict(self)
        for column in data["columns"]:
            column["score"] = _finite_or_none(column["score"])
            column["threshold"] = _finite_or_none(column["threshold"])
        data["share_drifted"] = _finite_or_none(data["share_drifted"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftSummary:
        """Rebuild a summary written by :meth:`to_dict`.

        Args:
            data: A mapping produced by ``to_dict`` (for instance read back from ``drift_summary.json``).

        Returns:
            The summary; scores stored as ``None`` come back as NaN.

        Raises:
            ValueError: A field is missing.
        """
        try:
            columns = [
                ColumnDrift(
                    column=str(c["column"]),
                    column_type=str(c["column_type"]),
                    method=str(c["method"]),
                    score=_float_or_nan(c["score"]),
                    threshold=_float_or_nan(c["threshold"]),
                    drifted=bool(c["drifted"]),
                    p_value=c.get("p_value"),
                )
                for c in data["columns"]
            ]
            return cls(
                columns=columns,
                drifted_count=int(data["drifted_count"]),
                column_count=int(data["column_count"]),
                share_drifted=_float_or_nan(data["share_drifted"]),
                share_threshold=float(data["share_threshold"]),
                key_features_drifted=[str(k) for k in data["key_features_drifted"]],
                drift_detected=bool(data["drift_detected"]),
                reference_rows=int(data["reference_rows"]),
                current_rows=int(data["current_rows"]),
            )
        except KeyError as error:
            raise ValueError(f"drift summary is missing the field {error.args[0]!r}") from None

    def summary_line(self) -> str:
        """One line for logs and notifications.

        Returns:
            For example ``"drift detected: 7/15 columns drifted (47%, threshold 50%); key features drifted:
            dep_delay"``.
        """
        verdict = "drift detected" if self.drift_detected else "no drift"
        line = (
            f"{verdict}: {self.drifted_count}/{self.column_count} columns drifted "
            f"({self.share_drifted:.0%}, threshold {self.share_threshold:.0%})"
        )
        if self.key_features_drifted:
            line += f"; key features drifted: {', '.join(self.key_features_drifted)}"
        return line


@dataclass(frozen=True)
class DriftResult:
    """What :func:`compute_drift` produced.

    Attributes:
        summary: The drift summary.
        html_path: Evidently's HTML report.
        json_path: Evidently's snapshot as JSON (metrics and tests).
        summary_path: ``summary.to_dict()`` as JSON.
    """

    summary: DriftSummary
    html_path: Path
    json_path: Path
    summary_path: Path


def compute_drift(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    rule: DriftConfig,
    out_dir: Path,
    title: str | None = None,
) -> DriftResult:
    """Measure drift of a batch against reference data and write the reports.

    Args:
        current: The new batch.
        reference: The data the champion was trained on.
        numeric: Numeric columns to compare (cast to float).
        categorical: Categorical columns to compare (cast to strings).
        rule: Stattests, thresholds, the drifted-share threshold and the key features.
        out_dir: Folder for ``drift_report.html``, ``drift_report.json`` and ``drift_summary.json``;
            created if missing.
        title: What the HTML report is about, shown above Evidently's report (the batches and the reference
            model version), so that a report opened on its own says what it compares.

    Returns:
        The summary and the paths of the three files.

    Raises:
        ValueError: A frame is empty, no columns are given, a column is listed twice or is missing from a
            frame, a column has no values in a frame, a value cannot be cast, a key feature is not among the
            columns, or a stattest name is unknown or does not apply to its column type.
    """
    columns = _check_inputs(current, reference, numeric, categorical, rule)
    _check_method(rule.num_method, NUMERIC, "num_method")
    _check_method(rule.cat_method, CATEGORICAL, "cat_method")
    types = {c: NUMERIC for c in numeric} | {c: CATEGORICAL for c in categorical}
    summary = summarize(
        measure(current, reference, types, rule), rule, reference_rows=len(reference), current_rows=len(current)
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, json_path, summary_path = out_dir / HTML_NAME, out_dir / JSON_NAME, out_dir / SUMMARY_NAME
    report_current, report_reference = _sample(current, rule.report_rows), _sample(reference, rule.report_rows)
    snapshot = _evidently_report(report_current, report_reference, numeric, categorical, columns, rule)
    # Snapshot.save_html silently ignores anything but a str path.
    snapshot.save_html(str(html_path))
    json_path.write_text(snapshot.json(), encoding="utf-8")
    summary_path.write_text(json.dumps(summary.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    sampled = len(report_current) < len(current) or len(report_reference) < len(reference)
    if title or sampled:
        note = (
            f"Evidently's report below is drawn from a seeded sample of {len(report_current):,} of "
            f"{len(current):,} rows of the batch and {len(report_reference):,} of {len(reference):,} rows of the "
            "reference; the verdict above is computed on all rows."
            if sampled
            else ""
        )
        _add_banner(html_path, title or "Data drift", summary, note)
    return DriftResult(summary=summary, html_path=html_path, json_path=json_path, summary_path=summary_path)


def measure(
    current: pd.DataFrame, reference: pd.DataFrame, types: dict[str, str], rule: DriftConfig
) -> list[ColumnDrift]:
    """Each column's drift over all rows (:mod:`retrainer.drift_stats`), in the order of ``types``; calibrated
    when ``rule.calibration`` says so (:mod:`retrainer.drift_calibration`). One column's values are held at a
    time.

    Raises:
        ValueError: A numeric column is not numeric, or a column has no present value in a frame.
    """
    import numpy as np

    from retrainer import drift_calibration, drift_stats

    rng = np.random.default_rng(0)  # calibration's resamples: the same data gets the same verdicts
    results: list[ColumnDrift] = []
    empty: dict[str, list[str]] = {"current": [], "reference": []}
    for column, kind in types.items():
        pair = {}
        for name, frame in (("current", current), ("reference", reference)):
            try:
                pair[name] = drift_stats.column_values(frame[column], kind)  # type: ignore[arg-type]
            except ValueError as error:
                raise ValueError(f"{error} (in the {name} data)") from None
            if pair[name].values.size == 0:
                empty[name].append(column)
        if any(values.values.size == 0 for values in pair.values()):
            continue
        method, threshold = (
            (rule.num_method, rule.num_threshold) if kind == NUMERIC else (rule.cat_method, rule.cat_threshold)
        )
        value = drift_stats.score(method, pair["reference"], pair["current"])
        p_value = (
            drift_calibration.column_p_value(method, pair["reference"], pair["current"], value, rule, rng)
            if rule.calibration != "none"
            else None
        )
        verdict = drift_stats.drifted(method, value, threshold)
        results.append(ColumnDrift(column, kind, method, value, threshold, verdict, p_value))
    for name in ("current", "reference"):
        if empty[name]:
            raise ValueError(f"column(s) {empty[name]} have no non-missing values in the {name} data")
    if rule.calibration == "none":
        return results
    from dataclasses import replace

    verdicts = drift_calibration.calibrated_verdicts(
        [r.method for r in results],
        [r.score for r in results],
        [r.threshold for r in results],
        [float(r.p_value) for r in results],  # type: ignore[arg-type]
        rule,
    )
    return [replace(r, drifted=verdict) for r, verdict in zip(results, verdicts, strict=True)]


def _sample(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    """At most ``rows`` rows of ``frame``: all of them, or a seeded sample (the same on every run)."""
    return frame if len(frame) <= rows else frame.sample(n=rows, random_state=0)


def _evidently_report(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    columns: list[str],
    rule: DriftConfig,
) -> Any:
    """Evidently's drift report (a snapshot) of the frames, for people to open."""
    cur = _prepare(current, numeric, categorical, "current")
    ref = _prepare(reference, numeric, categorical, "reference")

    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=list(numeric), categorical_columns=list(categorical))
    preset = DataDriftPreset(
        columns=columns,
        drift_share=rule.share_threshold,
        num_method=rule.num_method,
        cat_method=rule.cat_method,
        num_threshold=rule.num_threshold,
        cat_threshold=rule.cat_threshold,
    )
    # include_tests=True makes Evidently attach its per-column drift verdict (a test that FAILs on drift).
    report = Report(metrics=[preset], include_tests=True)
    return report.run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )


def parse_snapshot(snapshot: dict[str, Any], columns: list[str], types: dict[str, str]) -> list[ColumnDrift]:
    """Read per-column drift out of an Evidently snapshot dict (``Snapshot.dict()``).

    Each ``ValueDrift`` metric gives the column, method, threshold and score; the drift flag is the status of
    the drift test Evidently attaches to that metric (``FAIL`` means drifted). Without such a test the flag
    is derived from the method: below the threshold for p-value stattests, at or above it for distances.

    Args:
        snapshot: The snapshot as a dict with ``metrics`` and ``tests``.
        columns: Columns to report, in this order.
        types: Column name to ``"numeric"`` or ``"categorical"``.

    Returns:
        One result per column.

    Raises:
        ValueError: The snapshot has no drift result for one of the columns.
    """
    from retrainer import drift_stats

    status_by_metric = {
        test["metric_config"]["metric_id"]: test.get("status")
        for test in snapshot.get("tests", [])
        if test.get("id") == "drift" and isinstance(test.get("metric_config"), dict)
    }
    by_column: dict[str, ColumnDrift] = {}
    for metric in snapshot.get("metrics", []):
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith(":ValueDrift"):
            continue
        column = config["column"]
        method = str(config.get("method"))
        threshold = float(config["threshold"])
        score = _float_or_nan(metric.get("value"))
        status = status_by_metric.get(metric.get("id"))
        drifted = status == "FAIL" if status is not None else drift_stats.drifted(method, score, threshold)
        by_column[column] = ColumnDrift(
            column=column,
            column_type=types.get(column, ""),
            method=method,
            score=score,
            threshold=threshold,
            drifted=drifted,
        )
    missing = [c for c in columns if c not in by_column]
    if missing:
        raise ValueError(f"the Evidently snapshot has no drift result for column(s) {missing}")
    return [by_column[c] for c in columns]


def summarize(
    columns: list[ColumnDrift], rule: DriftConfig, reference_rows: int, current_rows: int
) -> DriftSummary:
    """Apply the batch-level drift rule to per-column results.

    Args:
        columns: Per-column drift.
        rule: Supplies ``share_threshold`` and ``key_features``.
        reference_rows: Rows of the reference data.
        current_rows: Rows of the new batch.

    Returns:
        The summary; drift is detected when the drifted share reaches ``share_threshold`` or a key feature
        drifted.
    """
    drifted = {c.column for c in columns if c.drifted}
    count = len(drifted)
    share = count / len(columns) if columns else 0.0
    keys = [k for k in rule.key_features if k in drifted]
    return DriftSummary(
        columns=list(columns),
        drifted_count=count,
        column_count=len(columns),
        share_drifted=share,
        share_threshold=rule.share_threshold,
        key_features_drifted=keys,
        drift_detected=bool(columns) and (share >= rule.share_threshold or bool(keys)),
        reference_rows=reference_rows,
        current_rows=current_rows,
    )


def available_methods(column_type: str) -> list[str]:
    """Names of the Evidently stattests that apply to a column type.

    Args:
        column_type: ``"numeric"`` or ``"categorical"``.

    Returns:
        Sorted stattest names.
    """
    import evidently.legacy.calculations.stattests  # noqa: F401  (registers the stattests)
    from evidently.legacy.calculations.stattests import registry

    evidently_type = _evidently_type(column_type)
    registered: dict[str, dict[Any, Any]] = getattr(registry, "_registered_stat_tests", {})
    return sorted(name for name, by_type in registered.items() if evidently_type in by_type)


def _check_method(method: str, column_type: str, field_name: str) -> None:
    import evidently.legacy.calculations.stattests  # noqa: F401  (registers the stattests)
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest

    try:
        get_registered_stattest(method, _evidently_type(column_type))
    except ValueError:  # StatTestNotFoundError / StatTestInvalidFeatureTypeError
        valid = available_methods(column_type)
        raise ValueError(
            f"drift.{field_name}: unknown or inapplicable Evidently stattest {method!r} for {column_type} "
            f"columns; valid: {', '.join(valid)}"
        ) from None


def _evidently_type(column_type: str) -> Any:
    from evidently.legacy.core import ColumnType

    if column_type == NUMERIC:
        return ColumnType.Numerical
    if column_type == CATEGORICAL:
        return ColumnType.Categorical
    raise ValueError(f"column type must be {NUMERIC!r} or {CATEGORICAL!r}, got {column_type!r}")


def _check_inputs(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    rule: DriftConfig,
) -> list[str]:
    for name, frame in (("current", current), ("reference", reference)):
        if len(frame) == 0:
            raise ValueError(f"the {name} data is empty: drift needs at least one row in both frames")
    columns = [*numeric, *categorical]
    if not columns:
        raise ValueError("no columns to compare: numeric and categorical are both empty")
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise ValueError(f"column {column!r} is listed twice in numeric/categorical")
        seen.add(column)
    for name, frame in (("current", current), ("reference", reference)):
        absent = [c for c in columns if c not in frame.columns]
        if absent:
            raise ValueError(f"column(s) {absent} missing from the {name} data")
    for key in rule.key_features:
        if key not in seen:
            raise ValueError(f"key feature {key!r} is not among the compared columns")
    return columns


def _prepare(frame: pd.DataFrame, numeric: list[str], categorical: list[str], name: str) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    out: dict[str, pd.Series] = {}
    for column in numeric:
        try:
            values = frame[column].astype("float64")
        except (TypeError, ValueError) as error:
            raise ValueError(f"numeric column {column!r} in the {name} data is not numeric: {error}") from None
        out[column] = values.replace([np.inf, -np.inf], np.nan)
    for column in categorical:
        values = frame[column]
        missing = values.isna()
        out[column] = values.astype(str).astype(object).where(~missing, np.nan)
    prepared = pd.DataFrame(out, index=frame.index).reset_index(drop=True)
    empty = [c for c in prepared.columns if prepared[c].notna().sum() == 0]
    if empty:
        raise ValueError(f"column(s) {empty} have no non-missing values in the {name} data")
    return prepared


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _float_or_nan(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _add_banner(html_path: Path, title: str, summary: DriftSummary, note: str = "") -> None:
    """Put ``title``, the verdict (the summary line) and ``note`` above Evidently's report, at the top of its
    ``<body>``."""
    from html import escape

    sample = f'<div id="retrainer-sample">{escape(note)}</div>' if note else ""
    banner = (
        '<div style="font: 15px system-ui, sans-serif; padding: 12px 16px; background: #f6f8fa; '
        'border-bottom: 1px solid #d0d7de"><h2 id="retrainer-title" style="margin: 0 0 4px; font-size: 18px">'
        f"{escape(title)}</h2><div>{escape(summary.summary_line())}</div>{sample}</div>"
    )
    text = html_path.read_text(encoding="utf-8")
    start = text.find("<body")
    end = text.find(">", start) + 1 if start >= 0 else 0
    html_path.write_text(text[:end] + banner + text[end:], encoding="utf-8")
