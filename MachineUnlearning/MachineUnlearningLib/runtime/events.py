"""The worker's event stream: one JSON object per stdout line.

Event kinds (field ``event``) and their fields:

- ``started``: ``command`` (str), ``job`` (the JobSpec as a dict)
- ``phase``: ``name`` (str, e.g. "load", "train", "evaluate", "report"), ``detail`` (str)
- ``progress``: ``phase``, ``epoch``, ``epochs``, ``step``, ``steps`` (ints, 1-based, of this
  phase), ``loss`` (float or null), ``eta_s`` (seconds or null)
- ``metrics``: ``model`` (str), ``epoch`` (int or null), ``sets`` ({role: {"dice", "mae", "n"}})
- ``artifact``: ``kind`` (str, e.g. "checkpoint", "prediction", "metrics", "report"), ``path``
- ``warning``: ``message``
- ``error``: ``message``, ``hint``, ``exit_code``
- ``finished``: ``status`` ("ok" | "invalid" | "cancelled" | "out_of_memory" | "failed"),
  ``exit_code`` (int), ``outputs`` ({name: path}), on success ``resources``
  (``peak_rss_mib``, and ``peak_cuda_mib`` when CUDA was used)

Every event also has ``time`` (seconds since the epoch, float). The Slicer Logic, the CLI's
progress bar and the tests read the same stream through :func:`parse_event`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

EVENT_KINDS = (
    "started",
    "phase",
    "progress",
    "metrics",
    "artifact",
    "warning",
    "error",
    "finished",
)

STATUS_BY_EXIT_CODE = {0: "ok", 1: "failed", 2: "invalid", 3: "cancelled", 4: "out_of_memory"}


@dataclass(frozen=True)
class Event:
    """One parsed event: its kind and the remaining fields."""

    kind: str
    fields: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


def parse_event(line: str) -> Event | None:
    """Parse one stdout line; return None for lines that are not events (plain log text)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or payload.get("event") not in EVENT_KINDS:
        return None
    kind = payload.pop("event")
    return Event(kind=kind, fields=payload)


class EventSink(Protocol):
    """Anything that receives events from the engine."""

    def emit(self, event: str, **fields: Any) -> None: ...


class JsonLinesSink:
    """Writes each event as one JSON line and flushes, for a parent process to read."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stdout

    def emit(self, event: str, **fields: Any) -> None:
        payload = {"event": event, "time": round(time.time(), 3), **fields}
        self._stream.write(json.dumps(payload, default=str) + "\n")
        self._stream.flush()


class HumanSink:
    """Prints progress as a one-line bar with ETA and other events as short log lines."""

    def __init__(self, stream: IO[str] | None = None, width: int = 30) -> None:
        self._stream = stream or sys.stderr
        self._width = width
        self._bar_open = False

    def emit(self, event: str, **fields: Any) -> None:
        if event == "progress":
            self._draw_bar(fields)
            return
        self._close_bar()
        line = self._format(event, fields)
        if line:
            self._stream.write(line + "\n")
            self._stream.flush()

    def _draw_bar(self, f: dict[str, Any]) -> None:
        step, steps = int(f.get("step") or 0), int(f.get("steps") or 0)
        done = step / steps if steps else 0.0
        filled = int(round(done * self._width))
        bar = "#" * filled + "-" * (self._width - filled)
        eta = f.get("eta_s")
        eta_text = f" ETA {_mmss(eta)}" if eta is not None else ""
        loss = f.get("loss")
        loss_text = f" loss {loss:.4f}" if isinstance(loss, (int, float)) else ""
        text = (
            f"\r{f.get('phase', '')} [{bar}] epoch {f.get('epoch')}/{f.get('epochs')} "
            f"step {step}/{steps}{loss_text}{eta_text}"
        )
        self._stream.write(text)
        self._stream.flush()
        self._bar_open = True

    def _close_bar(self) -> None:
        if self._bar_open:
            self._stream.write("\n")
            self._bar_open = False

    @staticmethod
    def _format(kind: str, f: dict[str, Any]) -> str:
        if kind == "phase":
            return f"== {f.get('name')}: {f.get('detail', '')}".rstrip(": ")
        if kind == "metrics":
            parts = []
            for role, values in (f.get("sets") or {}).items():
                dice, mae = values.get("dice"), values.get("mae")
                dice_text = "n/a" if dice is None else f"{dice:.4f}"
                mae_text = "n/a" if mae is None else f"{mae:.4f}"
                parts.append(f"{role}: Dice {dice_text} MAE {mae_text}")
            epoch = f.get("epoch")
            where = f" epoch {epoch}" if epoch is not None else ""
            return f"   metrics [{f.get('model')}{where}] " + "; ".join(parts)
        if kind == "artifact":
            return f"   wrote {f.get('kind')}: {f.get('path')}"
        if kind == "warning":
            return f"warning: {f.get('message')}"
        if kind == "error":
            hint = f.get("hint")
            return f"error: {f.get('message')}" + (f"\nhint: {hint}" if hint else "")
        if kind == "finished":
            return f"finished: {f.get('status')}"
        return ""


class CollectingSink:
    """Keeps every event in memory (tests, and callers that run the engine in-process)."""

    def __init__(self, forward: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.events: list[Event] = []
        self._forward = forward

    def emit(self, event: str, **fields: Any) -> None:
        self.events.append(Event(kind=event, fields=dict(fields)))
        if self._forward is not None:
            self._forward(event, fields)

    def of_kind(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


def _mmss(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"
