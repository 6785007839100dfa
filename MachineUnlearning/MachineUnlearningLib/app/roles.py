"""The Cases table: which subject has which role, and which table row a view row shows.

Pure functions over ``vtkMRMLTableNode``-like objects (``GetColumnIndex``, ``GetCellText``,
``GetNumberOfRows``); the table itself is made and read by ``scene.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def subject_at_row(table: Any, row: int) -> str:
    """The subject id in ``row`` of the roles table."""
    column = table.GetColumnIndex("subject") if table is not None else -1
    if column < 0 or not 0 <= row < table.GetNumberOfRows():
        raise ValueError(f"No subject in row {row}.")
    return table.GetCellText(row, column)


def roles_for_cohort(
    subjects: Sequence[tuple[str, str]], previous: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(roles, groups) of a cohort's subjects; keeps the 'forget' marks of ``previous``.

    ``subjects`` is [(subject id, group)] with group ``training`` or ``held-out``.
    """
    roles, groups = {}, {}
    for subject_id, group in subjects:
        groups[subject_id] = group
        if group == "held-out":
            roles[subject_id] = "held-out"
        else:
            roles[subject_id] = "forget" if previous.get(subject_id) == "forget" else "retain"
    return roles, groups


def toggled(roles: Mapping[str, str], subject_ids: Iterable[str]) -> dict[str, str]:
    """``roles`` with the given training subjects switched retain <-> forget."""
    out = dict(roles)
    for subject_id in subject_ids:
        if out.get(subject_id) == "forget":
            out[subject_id] = "retain"
        elif out.get(subject_id) in ("retain", "train"):
            out[subject_id] = "forget"
    return out
