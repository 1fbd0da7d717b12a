"""Validate one batch against a Great Expectations suite kept in the repository.

The checked-in File Data Context lives in the top-level ``great_expectations/`` folder: its configuration
(``great_expectations.yml``), the expectation suites (``expectations/<suite>.json``) and, per suite, one
validation definition and one checkpoint (``retrainer init-suite`` creates them for a new suite; commit them).

At run time the committed context is only read: each validation works in a private temporary copy of it, so
that workers on different machines, with read-only checkouts, never write into (or read results from) a shared
folder. What a validation produces, its result and its Data Docs page, is then copied to the caller's
``results_root`` (the project's data root, a folder or an S3 prefix): ``validations/...`` (the results as
JSON) and ``data_docs/...`` (the site's static assets once, and one page per validation).

A batch that fails its expectations is not an error: :func:`validate_frame` returns an outcome with
``success=False`` that lists the failed expectations, and the caller decides (fails closed). Broken setups
(a missing or unreadable suite, a missing context) raise.

Great Expectations is imported lazily inside the functions: it takes seconds to import and must stay out of
Airflow DAG parsing.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.checkpoint import Checkpoint
    from great_expectations.core import ValidationDefinition
    from great_expectations.data_context import FileDataContext

logger = logging.getLogger(__name__)

GX_ROOT_ENV = "RETRAINER_GX_ROOT"
DATASOURCE_NAME = "retrainer_pandas"
DATA_DOCS_SITE = "local_site"
_PARTIAL_LIST_LIMIT = 10
_SUITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RUN_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# JSON-safe parts of an expectation's ``result`` kept in FailedExpectation.observed.
_OBSERVED_KEYS = (
    "observed_value",
    "element_count",
    "unexpected_count",
    "unexpected_percent",
    "missing_count",
    "missing_percent",
    "partial_unexpected_list",
    "details",
)


class SuiteNotFoundError(ValueError):
    """The expectation suite named by a project does not exist in the data context."""


@dataclass(frozen=True)
class FailedExpectation:
    """One expectation a batch did not meet.

    Attributes:
        expectation_type: Snake-case name, e.g. ``expect_column_values_to_not_be_null``.
        column: The column the expectation is about, or None for table-level expectations.
        kwargs: The expectation's arguments (JSON-safe).
        observed: The JSON-safe part of its result: ``unexpected_count``, ``unexpected_percent``,
            ``observed_value``, ``partial_unexpected_list`` (at most 10 values), ``details``, and
            ``exception_message`` when the expectation could not be evaluated (e.g. a missing column).
    """

    expectation_type: str
    column: str | None
    kwargs: dict[str, Any]
    observed: dict[str, Any]

    def describe(self) -> str:
        """One short human-readable line.

        Returns:
            E.g. ``"expect_column_values_to_not_be_null(arr_delay): 12.0% unexpected"``.
        """
        name = f"{self.expectation_type}({self.column})" if self.column else self.expectation_type
        return f"{name}: {self._what()}"

    def _what(self) -> str:
        observed = self.observed
        if observed.get("missing_column"):
            return "column not found"
        if "exception_message" in observed:
            return f"error: {_shorten(str(observed['exception_message']))}"
        mismatched = (observed.get("details") or {}).get("mismatched")
        if isinstance(mismatched, dict) and mismatched.get("missing"):
            return f"missing {', '.join(map(str, mismatched['missing']))}"
        percent = observed.get("unexpected_percent")
        if isinstance(percent, int | float) and not math.isnan(percent):
            return f"{percent:.1f}% unexpected"
        if "observed_value" in observed:
            return f"observed {_shorten(repr(observed['observed_value']))}"
        return "failed"


@dataclass(frozen=True)
class ValidationOutcome:
    """The result of validating one batch against one suite.

    Attributes:
        batch_id: Identifier of the batch (e.g. its period ``2013-01-07``).
        suite: Name of the expectation suite.
        success: Whether every expectation passed.
        evaluated: How many expectations were evaluated.
        failed: The expectations that did not pass, in suite order.
        report: The full validation result, JSON-serialisable.
        data_docs: URI of the Data Docs index when Data Docs were built, else None.
    """

    batch_id: str
    suite: str
    success: bool
    evaluated: int
    failed: list[FailedExpectation] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    data_docs: str | None = None

    def summary_line(self) -> str:
        """One line for logs and notifications.

        Returns:
            E.g. ``"batch 2013-01-07 passed 14/14 expectations of suite flights_arr_delay"`` or
            ``"batch 2013-01-07 FAILED 2/14 expectations of suite flights_arr_delay: <describe>; <describe>"``.
        """
        if self.success:
            return (
                f"batch {self.batch_id} passed {self.evaluated}/{self.evaluated} expectations "
                f"of suite {self.suite}"
            )
        details = "; ".join(failure.describe() for failure in self.failed)
        return (
            f"batch {self.batch_id} FAILED {len(self.failed)}/{self.evaluated} expectations "
            f"of suite {self.suite}: {details}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe mapping of the outcome (the failed expectations as plain mappings).

        Returns:
            The outcome as a dict that ``json.dumps`` accepts.
        """
        return {
            "batch_id": self.batch_id,
            "suite": self.suite,
            "success": self.success,
            "evaluated": self.evaluated,
            "failed": [
                {
                    "expectation_type": failure.expectation_type,
                    "column": failure.column,
                    "kwargs": failure.kwargs,
                    "observed": failure.observed,
                    "description": failure.describe(),
                }
                for failure in self.failed
            ],
            "summary": self.summary_line(),
            "report": self.report,
            "data_docs": self.data_docs,
        }


def default_context_root() -> Path:
    """Folder of the File Data Context.

    Returns:
        ``$RETRAINER_GX_ROOT`` when set, else the repository's ``great_expectations/`` folder.
    """
    override = os.environ.get(GX_ROOT_ENV)
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[2] / "great_expectations"


def validate_frame(
    df: pd.DataFrame,
    suite_name: str,
    batch_id: str,
    context_root: Path | None = None,
    build_docs: bool = True,
    results_root: str | None = None,
) -> ValidationOutcome:
    """Validate a DataFrame against an expectation suite of the File Data Context, without writing to it.

    The suite's validation definition and checkpoint are the committed ones; a suite that has none yet is set
    up in the private copy only (with a warning to run ``retrainer init-suite`` and commit the result).

    Args:
        df: The batch.
        suite_name: Name of a suite stored as ``expectations/<suite_name>.json`` in the context.
        batch_id: Identifier of the batch; also the GX run name of the validation.
        context_root: Folder of the File Data Context; defaults to :func:`default_context_root`.
        build_docs: Run the checkpoint with its ``UpdateDataDocsAction``; when False the validation
            definition is run directly and no Data Docs are written.
        results_root: Where the result and the Data Docs page are copied (a folder or an S3 prefix); None
            keeps nothing.

    Returns:
        The outcome; ``success`` is False when any expectation failed. ``data_docs`` is the URI of the
        validation's Data Docs page under ``results_root``.

    Raises:
        SuiteNotFoundError: The suite does not exist in the context.
        FileNotFoundError: ``context_root`` holds no ``great_expectations.yml``.
        ValueError: ``suite_name`` is not a valid suite name.
    """
    root = Path(context_root) if context_root is not None else default_context_root()
    _check_suite(root, suite_name)
    gx = _import_gx()
    from great_expectations.core.run_identifier import RunIdentifier

    run_id = RunIdentifier(run_name=_run_name(batch_id), run_time=datetime.now(UTC))
    with tempfile.TemporaryDirectory(prefix="retrainer-gx-") as work:
        copy = _private_copy(root, Path(work))
        context = gx.get_context(mode="file", context_root_dir=str(copy))
        validation_definition, checkpoint = _ensure_objects(context, suite_name, committed=False)
        if build_docs:
            checkpoint_result = checkpoint.run(batch_parameters={"dataframe": df}, run_id=run_id)
            (result,) = checkpoint_result.run_results.values()
        else:
            result = validation_definition.run(
                batch_parameters={"dataframe": df}, result_format=checkpoint.result_format, run_id=run_id
            )
        docs = _publish(copy / "uncommitted", results_root) if results_root is not None else None
    order = [expectation.id for expectation in validation_definition.suite.expectations]
    outcome = _outcome(
        result, suite_name=suite_name, batch_id=batch_id, data_docs=docs, order=order, columns=set(df.columns)
    )
    (logger.info if outcome.success else logger.warning)("%s", outcome.summary_line())
    return outcome


def init_suite(suite_name: str, context_root: Path | None = None) -> dict[str, str]:
    """Create a suite's datasource asset, batch definition, validation definition and checkpoint in the
    committed context (the one place the platform writes to it: a developer runs it, then commits).

    Returns:
        The GX names of the suite's objects (see :func:`gx_names`).

    Raises:
        SuiteNotFoundError: The suite does not exist in the context.
    """
    root = Path(context_root) if context_root is not None else default_context_root()
    _check_suite(root, suite_name)
    gx = _import_gx()
    context = gx.get_context(mode="file", context_root_dir=str(root))
    _ensure_objects(context, suite_name, committed=True)
    return gx_names(suite_name)


def _check_suite(root: Path, suite_name: str) -> None:
    _check_suite_name(suite_name)
    if not (root / "great_expectations.yml").is_file():
        raise FileNotFoundError(f"no Great Expectations File Data Context at {root} (great_expectations.yml)")
    if not (root / "expectations" / f"{suite_name}.json").is_file():
        raise SuiteNotFoundError(_missing_suite_message(suite_name, root))


def _private_copy(root: Path, work: Path) -> Path:
    """A copy of the committed context (without ``uncommitted/``) that this validation alone writes to."""
    copy = work / "great_expectations"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("uncommitted", "__pycache__"))
    return copy


def _publish(uncommitted: Path, results_root: str) -> str | None:
    """Copy the validation's result and Data Docs page to ``results_root``; returns the page's URI.

    The site's static assets (styles, fonts: ~4 MB) are copied only when missing there; GX's site index is not
    copied, since it lists only the validations of the private copy.
    """
    from retrainer import storage

    for path in sorted((uncommitted / "validations").rglob("*.json")):
        relative = path.relative_to(uncommitted / "validations").as_posix()
        storage.write_bytes(storage.join(results_root, "validations", relative), path.read_bytes())
    site = uncommitted / "data_docs" / DATA_DOCS_SITE
    if not site.is_dir():
        return None
    docs = storage.join(results_root, "data_docs")
    static = sorted(p for p in (site / "static").rglob("*") if p.is_file())
    if static and not storage.exists(storage.join(docs, static[0].relative_to(site).as_posix())):
        for path in static:
            storage.write_bytes(storage.join(docs, path.relative_to(site).as_posix()), path.read_bytes())
    pages = sorted((site / "validations").rglob("*.html")) if (site / "validations").is_dir() else []
    for path in [*pages, *sorted((site / "expectations").rglob("*.html"))]:
        page = offline_page(path.read_text(encoding="utf-8"))
        storage.write_bytes(storage.join(docs, path.relative_to(site).as_posix()), page.encode())
    if not pages:
        return None
    page = storage.join(docs, pages[0].relative_to(site).as_posix())
    return page if storage.is_s3(page) else Path(page).as_uri()


# What a Data Docs page loads from CDNs (Bootstrap, jQuery, Vega, fonts, a tracking logo) never arrives on a
# machine without internet, and a blocking script from an unreachable host stalls the page; the tables are in
# the HTML itself. These stand in for Bootstrap's look, locally.
_REMOTE_TAG = re.compile(
    r"<script[^>]*\ssrc=[\"']https?://[^>]*>\s*</script>|<link[^>]*\shref=[\"']https?://[^>]*>|"
    r"<img[^>]*\ssrc=[\"']https?://[^>]*>",
    re.IGNORECASE,
)
_OFFLINE_STYLE = """<style id="retrainer-offline">
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 1.5rem; color: #1f2328; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #d0d7de; padding: .3rem .5rem; vertical-align: top; text-align: left; }
th { background: #f6f8fa; } code, pre { font-size: 12px; }
.alert-danger, .text-danger { color: #cf222e; } .alert-success, .text-success { color: #1a7f37; }
.d-none, .modal, .sticky { display: none; }
</style>"""


def offline_page(html: str) -> str:
    """A Data Docs page that reads without network: remote scripts, styles and images removed, a local style in
    their place (the page's own tables, results and expectations are all kept)."""
    stripped = _REMOTE_TAG.sub("", html)
    head = stripped.find("</head>")
    return stripped[:head] + _OFFLINE_STYLE + stripped[head:] if head >= 0 else _OFFLINE_STYLE + stripped


def gx_names(suite_name: str) -> dict[str, str]:
    """Names of the GX objects that validate a suite.

    Args:
        suite_name: Name of the expectation suite.

    Returns:
        A mapping with keys ``datasource``, ``asset``, ``batch_definition``, ``validation_definition`` and
        ``checkpoint``.
    """
    return {
        "datasource": DATASOURCE_NAME,
        "asset": f"{suite_name}_batches",
        "batch_definition": f"{suite_name}_whole_batch",
        "validation_definition": f"{suite_name}_validation",
        "checkpoint": f"{suite_name}_checkpoint",
    }


def _import_gx() -> Any:
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    return gx


def _check_suite_name(suite_name: str) -> None:
    if not _SUITE_NAME.match(suite_name):
        raise ValueError(
            f"invalid expectation suite name {suite_name!r}: use letters, digits, '_', '.' and '-' only"
        )


def _missing_suite_message(suite_name: str, root: Path) -> str:
    folder = root / "expectations"
    available = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
    return (
        f"expectation suite {suite_name!r} not found in {folder} "
        f"(expected {suite_name}.json; available: {', '.join(available) or 'none'})"
    )


def _ensure_objects(
    context: FileDataContext, suite_name: str, *, committed: bool
) -> tuple[ValidationDefinition, Checkpoint]:
    """Get the suite's datasource, asset, batch definition, validation definition and checkpoint.

    Each object is created only when it does not exist yet: in the committed context by ``init-suite``
    (``committed``), otherwise in a private copy, with a warning that the committed context lacks it.
    """
    import great_expectations as gx
    from great_expectations.exceptions import DataContextError

    names = gx_names(suite_name)
    created: list[str] = []
    try:
        suite = context.suites.get(suite_name)
    except DataContextError as error:
        raise SuiteNotFoundError(_missing_suite_message(suite_name, Path(context.root_directory))) from error
    if suite.id is None:
        # A hand-written suite file without ids: GX cannot reference it from a validation definition.
        created.append("ids of the suite's expectations")
        suite = context.suites.add_or_update(suite)

    datasources = context.data_sources.all()
    if names["datasource"] in datasources:
        datasource = datasources[names["datasource"]]
    else:
        created.append(f"pandas datasource {names['datasource']}")
        datasource = context.data_sources.add_pandas(name=names["datasource"])

    try:
        asset = datasource.get_asset(names["asset"])
    except LookupError:
        created.append(f"dataframe asset {names['asset']}")
        asset = datasource.add_dataframe_asset(name=names["asset"])

    try:
        batch_definition = asset.get_batch_definition(names["batch_definition"])
    except KeyError:
        created.append(f"batch definition {names['batch_definition']}")
        batch_definition = asset.add_batch_definition_whole_dataframe(names["batch_definition"])

    try:
        validation_definition = context.validation_definitions.get(names["validation_definition"])
    except DataContextError:
        created.append(f"validation definition {names['validation_definition']}")
        validation_definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=names["validation_definition"], data=batch_definition, suite=suite)
        )

    try:
        checkpoint = context.checkpoints.get(names["checkpoint"])
    except DataContextError:
        created.append(f"checkpoint {names['checkpoint']}")
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=names["checkpoint"],
                validation_definitions=[validation_definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": _PARTIAL_LIST_LIMIT},
            )
        )
    if created and committed:
        logger.info("created in %s: %s; commit them", context.root_directory, ", ".join(created))
    elif created:
        logger.warning(
            "the committed Great Expectations context lacks %s for suite %s: created for this validation only; "
            "run `retrainer init-suite -c <project file>` and commit the result",
            ", ".join(created),
            suite_name,
        )
    return validation_definition, checkpoint


def _run_name(batch_id: str) -> str:
    """GX stores results under ``validations/<suite>/<run name>/``: keep the name one safe path segment."""
    return _RUN_NAME_UNSAFE.sub("_", batch_id).strip("._") or "batch"


def _docs_index(context: FileDataContext) -> str | None:
    sites = context.get_docs_sites_urls(site_name=DATA_DOCS_SITE, only_if_exists=True)
    urls = [site["site_url"] for site in sites if site.get("site_url")]
    return urls[0] if urls else None


def _outcome(
    result: Any,
    suite_name: str,
    batch_id: str,
    data_docs: str | None,
    order: list[str | None],
    columns: set[Any],
) -> ValidationOutcome:
    """Turn a GX suite validation result into a ValidationOutcome, failures in suite order."""
    position = {expectation_id: index for index, expectation_id in enumerate(order) if expectation_id}
    failed_items = [item for item in result.results if not item.success]
    failed_items.sort(key=lambda item: position.get(item.expectation_config.id, len(position)))
    return ValidationOutcome(
        batch_id=batch_id,
        suite=suite_name,
        success=bool(result.success),
        evaluated=len(result.results),
        failed=[_failed_expectation(item, columns) for item in failed_items],
        report=result.to_json_dict(),
        data_docs=data_docs,
    )


def _failed_expectation(item: Any, columns: set[Any]) -> FailedExpectation:
    payload = item.to_json_dict()
    config = payload.get("expectation_config") or {}
    kwargs = {k: v for k, v in (config.get("kwargs") or {}).items() if k != "batch_id"}
    result = payload.get("result") or {}
    observed = {key: result[key] for key in _OBSERVED_KEYS if key in result}
    if isinstance(observed.get("partial_unexpected_list"), list):
        observed["partial_unexpected_list"] = observed["partial_unexpected_list"][:_PARTIAL_LIST_LIMIT]
    message = _exception_message(payload.get("exception_info") or {})
    if message is not None:
        observed["exception_message"] = message
    column = kwargs.get("column")
    column = column if isinstance(column, str) else None
    if column is not None and column not in columns:
        observed["missing_column"] = True
    return FailedExpectation(
        expectation_type=str(config.get("type")),
        column=column,
        kwargs=kwargs,
        observed=observed,
    )


def _exception_message(info: dict[str, Any]) -> str | None:
    """The first error message of an ``exception_info``.

    GX reports either one flat ``{"raised_exception": ..., "exception_message": ...}`` or one such mapping per
    failed metric, keyed by the metric's id (and ``raised_exception`` may be the string ``"True"``).
    """
    candidates = [info, *(value for value in info.values() if isinstance(value, dict))]
    for candidate in candidates:
        if str(candidate.get("raised_exception")).lower() == "true":
            return str(candidate.get("exception_message") or "unknown error")
    return None


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
