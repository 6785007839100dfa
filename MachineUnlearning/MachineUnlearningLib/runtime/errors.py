"""Exceptions the engine raises on purpose, each tied to a worker exit code.

Exit codes (DESIGN.md section 3): 0 ok, 1 anything else, 2 invalid input, 3 cancelled,
4 out of memory. Every error carries a message that names the file or field and a hint that
says how to fix it; the CLI prints both on one line each and exits with ``exit_code``.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID_INPUT = 2
EXIT_CANCELLED = 3
EXIT_OUT_OF_MEMORY = 4


class MachineUnlearningError(Exception):
    """Base class: an error with an exit code and an actionable hint."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InvalidInputError(MachineUnlearningError):
    """A file, field or option the user gave is wrong (exit code 2)."""

    exit_code = EXIT_INVALID_INPUT


class CancelledError(MachineUnlearningError):
    """The run was cancelled through its cancel file (exit code 3)."""

    exit_code = EXIT_CANCELLED


class OutOfMemoryError(MachineUnlearningError):
    """The device ran out of memory (exit code 4)."""

    exit_code = EXIT_OUT_OF_MEMORY


class TrainingDivergedError(MachineUnlearningError):
    """The loss became NaN or infinite (exit code 1)."""

    exit_code = EXIT_FAILURE
