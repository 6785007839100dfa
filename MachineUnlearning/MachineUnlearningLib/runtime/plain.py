"""Plain JSON values: what a checkpoint may hold so that it loads with ``weights_only=True``.

Network constructor arguments and bundle transform arguments pass through :func:`to_plain`
before they are recorded: tuples become lists, string enums their value; anything else (a
class, a function, a tensor) is refused, naming where it was found.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from MachineUnlearningLib.runtime.errors import InvalidInputError

PLAIN_SCALARS = (str, int, float, bool, type(None))


def to_plain(value: Any, where: str) -> Any:
    """``value`` as plain JSON types; InvalidInputError naming ``where`` for anything else."""
    if isinstance(value, enum.Enum) and isinstance(value.value, str):
        return value.value
    if isinstance(value, PLAIN_SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: to_plain(v, f"{where}.{k}") for k, v in value.items()}
    raise InvalidInputError(
        f"{where}: {type(value).__name__} {value!r} is not a plain value (str, number, bool, "
        "null, list, dict).",
        hint="Give it as a plain value (e.g. a name such as 'instance'); whatever the engine "
        "records must load with weights_only=True.",
    )


def from_plain(value: Any) -> Any:
    """Lists back to tuples (recursively), as MONAI's constructors document their arguments."""
    if isinstance(value, list):
        return tuple(from_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: from_plain(v) for k, v in value.items()}
    return value
