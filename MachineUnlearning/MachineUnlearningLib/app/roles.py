"""The Cases table: which subject has which role, and which table row a view row shows.

Pure functions over ``vtkMRMLTableNode``-like objects (``GetColumnIndex``, ``GetCellText``,
``SetCellText``, ``GetNumberOfRows``, ``GetUseColumnTitleAsColumnHeader``); ``scene.py``
makes and reads the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from MachineUnlearningLib.runtime.options import look_up_option

FORGET, RETAIN, HELD_OUT = "forget", "retain", "held-out"
ROLES: tuple[str, ...] = (FORGET, RETAIN, HELD_OUT)
"""The roles a user may give a subject in the Cases table."""
_SPELLINGS = {"held out": HELD_OUT, "heldout": HELD_OUT, "held_out": HELD_OUT}


def normalise_role(text: str, subject_id: str) -> str:
    """``text`` as one of :data:`ROLES`: case and surrounding spaces ignored, "held out" ok.

    Raises InvalidInputError naming the subject and listing the valid roles otherwise.
    """
    key = " ".join(str(text).strip().lower().split())
    key = _SPELLINGS.get(key, key)
    return look_up_option(key, ROLES, f"role of subject {subject_id!r}")


def table_row(view_row: int, column_titles_as_header: bool) -> int | None:
    """The table row a (non-transposed) qMRMLTableView shows in ``view_row``; None: no row.

    As ``qMRMLTableModel::mrmlTableRowIndex`` (Slicer v5.8.1 .. v5.12.0): without
    ``UseColumnTitleAsColumnHeader`` the view's first row holds the column names, so view
    row k shows table row k - 1. The view's sort proxy is identity (sorting is off).
    """
    row = view_row if column_titles_as_header else view_row - 1
    return row if row >= 0 else None


def subject_at_view_row(table: Any, view_row: int) -> str | None:
    """The subject id the Cases view shows in ``view_row`` (None for the header or no row)."""
    column = table.GetColumnIndex("subject") if table is not None else -1
    row = (
        table_row(view_row, bool(table.GetUseColumnTitleAsColumnHeader())) if column >= 0 else None
    )
    if row is None or row >= table.GetNumberOfRows():
        return None
    return table.GetCellText(row, column) or None


def roles_for_cohort(
    subjects: Sequence[tuple[str, str]], previous: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(roles, groups) of a cohort's subjects; keeps the 'forget' marks of ``previous``.

    ``subjects`` is [(subject id, group)] with group ``training`` or ``held-out``; training
    subjects are ``retain`` unless ``previous`` marked them ``forget``.
    """
    roles, groups = {}, {}
    for subject_id, group in subjects:
        groups[subject_id] = group
        if group == HELD_OUT:
            roles[subject_id] = HELD_OUT
        else:
            roles[subject_id] = FORGET if previous.get(subject_id) == FORGET else RETAIN
    return roles, groups


def toggled(roles: Mapping[str, str], subject_ids: Iterable[str]) -> dict[str, str]:
    """``roles`` with the given subjects switched retain <-> forget (held-out stays)."""
    out = dict(roles)
    for subject_id in subject_ids:
        if out.get(subject_id) == FORGET:
            out[subject_id] = RETAIN
        elif out.get(subject_id) == RETAIN:
            out[subject_id] = FORGET
    return out


def write_roles(table: Any, roles: Mapping[str, str]) -> None:
    """Set the role cells of the subjects in ``roles``, in place (one ModifiedEvent).

    In place, so that the Cases view keeps its rows and selection (re-filling the table would
    reset the view's model).
    """
    subject, role = table.GetColumnIndex("subject"), table.GetColumnIndex("role")
    modifying = table.StartModify()
    try:
        for row in range(table.GetNumberOfRows()):
            new = roles.get(table.GetCellText(row, subject))
            if new is not None and table.GetCellText(row, role) != new:
                table.SetCellText(row, role, new)
    finally:
        table.EndModify(modifying)
