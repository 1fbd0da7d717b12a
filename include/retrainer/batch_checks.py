"""The platform's own checks of a batch, run beside its Great Expectations suite.

A suite says what the data should look like, and a team may write it loosely; these checks refuse what the
training step cannot take whatever the suite says, so that such a batch is quarantined at validation instead
of failing every later cycle whose window holds it: a column the model needs is missing, a numeric column
holds text, a value is infinite, an id repeats, or many rows repeat another row exactly (a file appended to
itself upstream).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from retrainer.config import NUMERIC_TYPES

if TYPE_CHECKING:
    import pandas as pd

    from retrainer.config import ProjectConfig

_EXAMPLES = 3


@dataclass(frozen=True)
class BatchProblem:
    """One reason a batch cannot be trained on.

    Attributes:
        check: ``missing_column``, ``not_numeric``, ``non_finite``, ``duplicate_ids`` or ``duplicate_rows``.
        column: The column concerned, None for whole rows.
        message: One line naming the batch's problem.
    """

    check: str
    column: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


def check_batch(frame: pd.DataFrame, config: ProjectConfig) -> list[BatchProblem]:
    """Every problem of ``frame`` (one batch, timestamps already read) that training could not take."""
    import numpy as np
    import pandas as pd

    problems: list[BatchProblem] = []
    schema = config.schema_
    needed = [*config.features, schema.target]
    for column in needed:
        if column not in frame.columns:
            problems.append(BatchProblem("missing_column", column, f"column {column!r} is missing"))
    for column in needed:
        if column not in frame.columns or schema.columns[column] not in NUMERIC_TYPES:
            continue
        values = frame[column]
        if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
            text = values[values.notna()].astype(str).unique()[:_EXAMPLES]
            problems.append(
                BatchProblem(
                    "not_numeric",
                    column,
                    f"column {column!r} is declared {schema.columns[column].value} but holds {values.dtype} "
                    f"values (e.g. {', '.join(map(repr, text))})",
                )
            )
            continue
        infinite = int(np.isinf(values.to_numpy(dtype="float64", na_value=np.nan)).sum())
        if infinite:
            problems.append(
                BatchProblem(
                    "non_finite", column, f"column {column!r} has {infinite} infinite value(s) of {len(values)}"
                )
            )
    if schema.id is not None and schema.id in frame.columns:
        repeated = int(frame[schema.id].duplicated().sum())
        if repeated:
            problems.append(
                BatchProblem("duplicate_ids", schema.id, f"{repeated} row(s) repeat an id of column {schema.id!r}")
            )
    elif len(frame):
        repeated = int(frame.duplicated().sum())
        limit = config.validation.max_duplicate_rows
        if repeated / len(frame) > limit:
            problems.append(
                BatchProblem(
                    "duplicate_rows",
                    None,
                    f"{repeated} of {len(frame)} rows ({repeated / len(frame):.1%}) repeat another row exactly, "
                    f"more than validation.max_duplicate_rows ({limit:.1%})",
                )
            )
    return problems
