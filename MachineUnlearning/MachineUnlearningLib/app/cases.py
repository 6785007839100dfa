"""The Cases table in the scene: filled from the cohort folder, followed, read and changed.

``roles.py`` holds the pure rules (valid roles, view row -> table row); this module applies
them to the parameter node's ``vtkMRMLTableNode`` through ``scene.py``. The table is observed
because a role edited in the Cases view changes only the table: the parameter node, which
merely references it, fires no event.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vtkmodules.vtkCommonCore import vtkCommand

from MachineUnlearningLib.app import roles
from MachineUnlearningLib.app import scene as mrml
from MachineUnlearningLib.runtime.errors import MachineUnlearningError


def weak_observer(target: Any, method: str) -> Callable[[Any, Any], None]:
    """A VTK observer calling ``target.method()``; it holds ``target`` weakly, so that the
    scene and its nodes never keep a closed module's objects alive."""
    reference = weakref.ref(target)

    def call(caller: Any, event: Any) -> None:
        alive = reference()
        if alive is not None:
            getattr(alive, method)()

    return call


class Cases:
    """The Cases table of the attached parameter node.

    Args:
        scene: the MRML scene the table lives in.
        on_change: called (no arguments) whenever the followed table is modified.
    """

    def __init__(self, scene: Any, on_change: Callable[[], None]) -> None:
        self.scene = scene
        self.on_change = on_change
        self.table: Any = None
        self._observer: int | None = None

    def _changed(self) -> None:
        self.on_change()

    def follow(self, table: Any) -> None:
        """Observe ``table`` (None: nothing); an older scene's table gets its header fixed."""
        if table is self.table:
            return
        if self.table is not None and self._observer is not None:
            self.table.RemoveObserver(self._observer)
        self.table, self._observer = table, None
        if table is not None:
            if not table.GetUseColumnTitleAsColumnHeader():
                table.SetUseColumnTitleAsColumnHeader(True)
            self._observer = table.AddObserver(
                vtkCommand.ModifiedEvent, weak_observer(self, "_changed")
            )

    def fill(self, cohort: str, table: Any) -> tuple[Any, str]:
        """(the table listing ``cohort``'s subjects, "") or (``table``, why not).

        Training subjects start as retain, keeping the 'forget' marks ``table`` had; held-out
        subjects are held-out. Only folder names are read.
        """
        from MachineUnlearningLib.data.cohort import discover_cohort

        try:
            subjects = [(s.subject_id, s.group) for s in discover_cohort(cohort)]
        except MachineUnlearningError as error:
            return table, f"{error.message} {error.hint}".strip()
        new_roles, groups = roles.roles_for_cohort(subjects, self.roles_or_empty(table))
        return mrml.subject_roles_to_table(self.scene, new_roles, table=table, groups=groups), ""

    @staticmethod
    def roles(table: Any) -> dict[str, str]:
        """subject id -> role (raises InvalidInputError for a role that is not one of three)."""
        return mrml.table_to_subject_roles(table) if table is not None else {}

    @classmethod
    def roles_or_empty(cls, table: Any) -> dict[str, str]:
        try:
            return cls.roles(table)
        except MachineUnlearningError:
            return {}

    @staticmethod
    def subjects_at(table: Any, view_rows: Iterable[int]) -> tuple[str, ...]:
        """The subject ids the Cases view shows in ``view_rows`` (header and gaps left out)."""
        if table is None:
            return ()
        ids = (roles.subject_at_view_row(table, row) for row in sorted(set(view_rows)))
        return tuple(s for s in ids if s)

    @classmethod
    def toggle(cls, table: Any, subject_ids: Iterable[str]) -> None:
        """retain <-> forget for ``subject_ids``, in place (the view keeps its selection)."""
        roles.write_roles(table, roles.toggled(cls.roles(table), subject_ids))

    @staticmethod
    def image(cohort: str, subject_id: str, modality: str) -> Path:
        """The subject's image file of ``modality`` in ``cohort``."""
        from MachineUnlearningLib.data.cohort import discover_cohort

        for subject in discover_cohort(cohort):
            if subject.subject_id == subject_id:
                return Path(subject.images[modality])
        raise ValueError(f"Subject {subject_id} is not in the cohort {cohort}.")
