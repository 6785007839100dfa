"""Device choice and out-of-memory translation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from MachineUnlearningLib.runtime.errors import InvalidInputError, OutOfMemoryError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda:N`` is checked against the GPUs present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidInputError(
                f"device: {name} was requested but this PyTorch sees no CUDA GPU.",
                hint="Use --device cpu, or install a CUDA build of PyTorch.",
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise InvalidInputError(
                f"device: {name} does not exist; {torch.cuda.device_count()} GPU(s) found.",
                hint="Use --device cuda:0 or auto.",
            )
    return torch.device(name)


@contextlib.contextmanager
def translate_out_of_memory(what: str) -> Iterator[None]:
    """Turn torch's out-of-memory errors into OutOfMemoryError (exit code 4) with advice."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        raise OutOfMemoryError(
            f"out of GPU memory during {what} ({str(exc).splitlines()[0]}).",
            hint="Use a smaller input size (--input-size), a smaller batch, or --device cpu.",
        ) from None
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise OutOfMemoryError(
                f"out of memory during {what}.",
                hint="Use a smaller input size (--input-size) or batch, or free memory.",
            ) from None
        raise
