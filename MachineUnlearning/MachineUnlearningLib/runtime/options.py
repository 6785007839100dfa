"""Validation of string options at the boundary, with a "did you mean" message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from MachineUnlearningLib.runtime.errors import InvalidInputError


def look_up_option(value: str, valid: Iterable[str], field: str) -> str:
    """Return ``value`` if it is one of ``valid``; else raise InvalidInputError naming ``field``.

    The message lists every valid name and, where one is close, suggests it.
    """
    choices = list(valid)
    if value in choices:
        return value
    close = difflib.get_close_matches(str(value), choices, n=1)
    suggestion = f" Did you mean {close[0]!r}?" if close else ""
    raise InvalidInputError(
        f"{field}: unknown value {value!r}.{suggestion}",
        hint=f"Valid values: {', '.join(choices)}.",
    )
