"""Run the worker in a child process and follow its event stream without blocking a GUI.

Two layers, both pure Python (no Qt, no ``slicer``), so they run the same way inside Slicer
(driven by a ``qt.QTimer``), in a terminal and under pytest:

- :class:`WorkerProcess` starts ``python -m MachineUnlearningLib <command> --job job.json
  --events``, reads its stdout on a reader thread into a queue, and hands out parsed events from
  a non-blocking :meth:`WorkerProcess.poll`. Cancel is two-stage: a cancel file first (the worker
  stops cleanly between steps), then, after a grace period, the whole process tree is killed.
- :class:`RunController` is the testable heart of the Slicer Logic facade: it writes the job
  file, starts the worker, turns events into a progress state (:class:`RunState`), keeps a
  capped log, imports results through an injected callback and reports through injected
  callbacks typed by Protocols.

The two layers share one file (past the usual ~400 lines) because they are one protocol: the
controller is the only consumer of the process's event stream, and splitting them would
scatter its vocabulary (``log``/``exit``, cancel stages, exit codes) over two modules.

Besides the worker's own event kinds (see ``events.py``), :meth:`WorkerProcess.poll` yields two
kinds of its own: ``log`` (``message``: a stdout/stderr line that is not an event, or a line the
runner itself logs) and ``exit`` (``exit_code``, ``status``; always the last event of a run).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, Any, Protocol

from MachineUnlearningLib.runtime.events import STATUS_BY_EXIT_CODE, Event, parse_event
from MachineUnlearningLib.runtime.jobs import JobSpec

logger = logging.getLogger(__name__)

LOG = "log"
EXIT = "exit"
WORKER_MODULE_ENTRY: tuple[str, ...] = ("-m", "MachineUnlearningLib")
DEFAULT_GRACE_PERIOD_S = 15.0
DEFAULT_LOG_LIMIT_BYTES = 256 * 1024
JOB_FILE_NAME = "job.json"
# After the worker exits, how long to keep waiting for the end of its output pipe (a grandchild
# that inherited the pipe can keep it open long after the worker itself has gone).
PIPE_DRAIN_TIMEOUT_S = 2.0

_EXIT_EXPLANATIONS = {
    0: "finished successfully",
    1: "failure: see the log above for the error and its traceback",
    2: "invalid input: see the error above (it names the field or file and how to fix it)",
    3: "cancelled",
    4: "out of GPU memory: choose CPU or a smaller input size/patch",
    5: "a Python package is missing: install the module's dependencies, restart Slicer, retry",
}


def explain_exit(code: int | None) -> str:
    """An actionable sentence for a worker exit code (never just the number)."""
    if code is None:
        return "still running"
    if code in _EXIT_EXPLANATIONS:
        return _EXIT_EXPLANATIONS[code]
    if code < 0:
        return f"stopped by signal {-code} (the process was killed before it could finish)"
    return f"failure (exit code {code}): see the log above"


def status_for_exit(code: int, *, cancel_requested: bool = False) -> str:
    """The ``finished`` status for an exit code; a run killed after a cancel is 'cancelled'."""
    if cancel_requested and code != 0:
        return "cancelled"
    return STATUS_BY_EXIT_CODE.get(code, "failed")


def format_duration(seconds: float) -> str:
    """``mm:ss`` below one hour, ``h:mm:ss`` above."""
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes:02d}:{secs:02d}"


def child_environment(
    device: str = "auto",
    *,
    base: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
    pythonpath: Sequence[str] = (),
) -> dict[str, str]:
    """The environment of the worker process, built as a copy (``os.environ`` is never changed).

    Args:
        device: the job's device; ``cpu`` hides every GPU (``CUDA_VISIBLE_DEVICES=-1``).
        base: the starting environment (default: a copy of ``os.environ``; inside Slicer the
            Logic passes ``slicer.util.startupEnvironment()``).
        extra: variables set last (they win).
        pythonpath: folders put in front of ``PYTHONPATH`` (e.g. the folder that holds
            ``MachineUnlearningLib``).
    """
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    if pythonpath:
        parts = [str(p) for p in pythonpath]
        if env.get("PYTHONPATH"):
            parts.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(parts)
    env.update(extra or {})
    return env


class WorkerProcess:
    """One worker run in a child process, followed through a non-blocking :meth:`poll`.

    The command line is ``[python_executable, *entry, command, "--job", job_path, *extra_args,
    "--events"]`` (``--job`` only when a job file is given, ``--events`` only when ``events``).

    Args:
        command: the CLI command (``train``, ``unlearn``, ``make-cohort``, ...).
        job_path: the job file passed with ``--job``; None for commands that take flags only.
        python_executable: interpreter that runs the worker (``PythonSlicer`` inside Slicer);
            default ``sys.executable``.
        entry: how the interpreter finds the worker (default ``-m MachineUnlearningLib``; tests
            pass a stand-in script).
        extra_args: more command-line arguments, after ``--job``.
        events: pass ``--events`` so that stdout carries one JSON event per line.
        device: the job's device (``cpu`` hides GPUs from the child).
        cancel_file: the file whose existence asks the worker to stop (stage 1 of cancel);
            None = cancel kills the process tree at once.
        grace_period_s: seconds between stage 1 and the forced stage 2 of cancel.
        base_env, extra_env, pythonpath: see :func:`child_environment`.
        cwd: working directory of the child.
    """

    def __init__(
        self,
        command: str,
        job_path: Path | str | None = None,
        *,
        python_executable: str | None = None,
        entry: Sequence[str] = WORKER_MODULE_ENTRY,
        extra_args: Sequence[str] = (),
        events: bool = True,
        device: str = "auto",
        cancel_file: Path | str | None = None,
        grace_period_s: float = DEFAULT_GRACE_PERIOD_S,
        base_env: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        pythonpath: Sequence[str] = (),
        cwd: Path | str | None = None,
    ) -> None:
        self.command = command
        self.job_path = Path(job_path) if job_path is not None else None
        self.cancel_file = Path(cancel_file) if cancel_file is not None else None
        self.grace_period_s = float(grace_period_s)
        self.device = device
        self.cwd = str(cwd) if cwd is not None else None
        argv = [python_executable or sys.executable, *entry, command]
        if self.job_path is not None:
            argv += ["--job", str(self.job_path)]
        argv += [str(a) for a in extra_args]
        if events:
            argv.append("--events")
        self.argv: list[str] = argv
        self.env = child_environment(device, base=base_env, extra=extra_env, pythonpath=pythonpath)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._pipe_closed = False
        self._exit_seen_at: float | None = None
        self._exit_delivered = False
        self._cancel_requested_at: float | None = None
        self._killed = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def started(self) -> bool:
        return self._process is not None

    @property
    def running(self) -> bool:
        """True from :meth:`start` until :meth:`poll` has delivered the ``exit`` event."""
        return self._process is not None and not self._exit_delivered

    @property
    def exit_code(self) -> int | None:
        return self._process.returncode if self._process is not None else None

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested_at is not None

    @property
    def status(self) -> str | None:
        """``ok``/``failed``/``invalid``/``cancelled``/``out_of_memory``; None while running."""
        code = self.exit_code
        if code is None:
            return None
        return status_for_exit(code, cancel_requested=self.cancel_requested)

    def command_line(self) -> str:
        return shlex.join(self.argv)

    def start(self) -> None:
        """Start the child; logs the command line and the job file first."""
        if self._process is not None:
            raise RuntimeError("This worker process was already started; create a new one.")
        self._log(f"$ {self.command_line()}")
        if self.job_path is not None and self.job_path.is_file():
            job_text = json.dumps(json.loads(self.job_path.read_text(encoding="utf-8")))
            self._log(f"job {self.job_path}: {job_text}")
        if self.device == "cpu":
            self._log("environment: CUDA_VISIBLE_DEVICES=-1 (CPU only)")
        self._process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            **_platform_popen_kwargs(),
        )
        self._reader = threading.Thread(
            target=_read_lines,
            args=(self._process.stdout, self._lines),
            name=f"worker-{self._process.pid}-reader",
            daemon=True,
        )
        self._reader.start()

    def poll(self) -> list[Event]:
        """Every event that arrived since the last call, in order; never blocks.

        Also runs stage 2 of cancel once the grace period is over. The last event of a run is
        ``exit`` (``exit_code``, ``status``); after it, :attr:`running` is False.
        """
        if self._process is None or self._exit_delivered:
            return []
        events: list[Event] = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._pipe_closed = True
                continue
            events.append(parse_event(line) or Event(LOG, {"message": line.rstrip("\r\n")}))
        self._enforce_grace_period()
        code = self._process.poll()
        if code is not None:
            now = time.monotonic()
            if self._exit_seen_at is None:
                self._exit_seen_at = now
            if self._pipe_closed or now - self._exit_seen_at > PIPE_DRAIN_TIMEOUT_S:
                self._exit_delivered = True
                events.append(Event(EXIT, {"exit_code": code, "status": self.status}))
        return events

    def wait(self, timeout_s: float, interval_s: float = 0.02) -> list[Event]:
        """Poll until the run ends or ``timeout_s`` passes (tests and scripts; not for a GUI)."""
        deadline = time.monotonic() + timeout_s
        events: list[Event] = []
        while self.running and time.monotonic() < deadline:
            events += self.poll()
            if self.running:
                time.sleep(interval_s)
        return events

    # -- cancel ------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stage 1: write the cancel file. Called again (or with no cancel file): kill the tree."""
        if self._process is None or self._process.poll() is not None:
            return
        if self._cancel_requested_at is not None or self.cancel_file is None:
            self._cancel_requested_at = self._cancel_requested_at or time.monotonic()
            self.kill_tree()
            return
        self._cancel_requested_at = time.monotonic()
        self.cancel_file.parent.mkdir(parents=True, exist_ok=True)
        self.cancel_file.write_text("cancel requested\n", encoding="utf-8")
        self._log(
            f"cancel requested ({self.cancel_file}); stopping it by force in "
            f"{self.grace_period_s:g} s if it has not stopped by then"
        )

    def kill_tree(self) -> None:
        """Stage 2: kill the worker and every process below it (children first)."""
        if self._process is None:
            return
        import psutil

        try:
            root = psutil.Process(self._process.pid)
            children = root.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for proc in reversed(children):  # deepest first, the worker itself last
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        # The worker is our own child: kill and reap it through Popen, so that its exit code
        # stays known (reaping it through psutil would leave Popen reading 0).
        self._process.kill()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            logger.warning("worker %s did not die within 5 s of SIGKILL", self._process.pid)
        _wait_until_dead(children, timeout_s=5.0)
        self._killed = True
        self._log(f"killed the worker process tree ({len(children) + 1} process(es))")

    def _enforce_grace_period(self) -> None:
        if (
            self._cancel_requested_at is not None
            and not self._killed
            and self._process is not None
            and self._process.poll() is None
            and time.monotonic() - self._cancel_requested_at >= self.grace_period_s
        ):
            self._log(f"the worker did not stop within {self.grace_period_s:g} s")
            self.kill_tree()

    def _log(self, message: str) -> None:
        logger.info(message)
        self._lines.put(message)


def _wait_until_dead(processes: Sequence[Any], timeout_s: float) -> None:
    """Wait until every psutil process is gone or a zombie (nobody may be left to reap it)."""
    import psutil

    deadline = time.monotonic() + timeout_s
    alive = list(processes)
    while alive and time.monotonic() < deadline:
        still = []
        for proc in alive:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    still.append(proc)
            except psutil.NoSuchProcess:
                pass
        alive = still
        if alive:
            time.sleep(0.02)
    for proc in alive:
        logger.warning("process %s survived SIGKILL for %g s", proc.pid, timeout_s)


def _read_lines(stream: IO[bytes] | None, lines: queue.Queue[str | None]) -> None:
    """Reader thread: only moves decoded stdout lines into the queue; None marks the end."""
    if stream is not None:
        try:
            for raw in iter(stream.readline, b""):
                lines.put(raw.decode("utf-8", errors="replace"))
        finally:
            stream.close()
    lines.put(None)


def _platform_popen_kwargs() -> dict[str, Any]:
    if os.name == "nt":  # hide the console window of the child
        info = subprocess.STARTUPINFO()
        info.dwFlags |= subprocess.STARTF_USESHOWWINDOW
        info.wShowWindow = 0
        return {"startupinfo": info}
    return {}


# ---------------------------------------------------------------------------------------------
# RunController: the state machine behind the Slicer module's Run section
# ---------------------------------------------------------------------------------------------


class RunState(str, Enum):
    """Where a run is (reference: slicer-extension.md section 8)."""

    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    CANCELLING = "cancelling"
    IMPORTING = "importing"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        """A run is in flight (Apply shows Cancel, or is disabled)."""
        return self in _ACTIVE_STATES


_KEEP: Any = object()  # "leave this field as it is" in RunController._set_state

_ACTIVE_STATES = frozenset(
    {RunState.STARTING, RunState.RUNNING, RunState.CANCELLING, RunState.IMPORTING}
)


@dataclass(frozen=True)
class Progress:
    """What the GUI shows.

    Attributes:
        state: the run state.
        fraction: 0..1 for a determinate bar; None for an indeterminate (busy) bar.
        text: e.g. ``epoch 3/50 — ETA 01:23``, or the outcome once the run is over.
        phase: the worker's current phase (``train``, ``evaluate``, ...), "" before the first.
    """

    state: RunState
    fraction: float | None = None
    text: str = ""
    phase: str = ""


class ProgressCallback(Protocol):
    def __call__(self, progress: Progress) -> None: ...


class LogCallback(Protocol):
    def __call__(self, line: str) -> None: ...


class FinishedCallback(Protocol):
    def __call__(self, status: str, outputs: dict[str, str]) -> None: ...


class ResultImporter(Protocol):
    """Imports a finished run's outputs (into an MRML scene inside Slicer)."""

    def __call__(self, job: JobSpec, outputs: dict[str, str]) -> None: ...


class WorkerFactory(Protocol):
    def __call__(self, command: str, job_path: Path | None, **kwargs: Any) -> WorkerProcess: ...


class CappedLog:
    """The run log, keeping about the last ``limit_bytes`` of text (oldest lines dropped)."""

    def __init__(self, limit_bytes: int = DEFAULT_LOG_LIMIT_BYTES) -> None:
        self.limit_bytes = int(limit_bytes)
        self._lines: deque[str] = deque()
        self._size = 0
        self.dropped = 0

    def append(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line.encode("utf-8")) + 1
        while self._size > self.limit_bytes and len(self._lines) > 1:
            old = self._lines.popleft()
            self._size -= len(old.encode("utf-8")) + 1
            self.dropped += 1

    def clear(self) -> None:
        self._lines.clear()
        self._size = 0
        self.dropped = 0

    @property
    def size_bytes(self) -> int:
        return self._size

    def lines(self) -> list[str]:
        return list(self._lines)

    def text(self) -> str:
        head = [f"[... {self.dropped} earlier line(s) dropped ...]"] if self.dropped else []
        return "\n".join(head + list(self._lines))


class RunController:
    """Starts one worker run at a time and turns its events into state, progress and log.

    Inside Slicer the Logic owns one controller and calls :meth:`poll` from a ``qt.QTimer``;
    tests call :meth:`run_to_end`. An end-to-end test needs only a JobSpec and, to check the
    import step, a ``import_results`` callback.

    Args:
        on_progress: called with a :class:`Progress` whenever state, fraction or text change.
        on_log: called with every log line (already in :attr:`log`).
        on_finished: called once per run with the status (``ok``, ``failed``, ``invalid``,
            ``cancelled``, ``out_of_memory``) and the outputs ({name: path}).
        import_results: called in the IMPORTING state of a successful job run; an exception
            turns the run into FAILED.
        python_executable, entry, base_env, extra_env, pythonpath, grace_period_s: passed to
            :class:`WorkerProcess`.
        log_limit_bytes: size of the capped log.
        worker_factory: builds the :class:`WorkerProcess` (tests may wrap it).
    """

    def __init__(
        self,
        *,
        on_progress: ProgressCallback | None = None,
        on_log: LogCallback | None = None,
        on_finished: FinishedCallback | None = None,
        import_results: ResultImporter | None = None,
        python_executable: str | None = None,
        entry: Sequence[str] = WORKER_MODULE_ENTRY,
        base_env: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        pythonpath: Sequence[str] = (),
        grace_period_s: float = DEFAULT_GRACE_PERIOD_S,
        log_limit_bytes: int = DEFAULT_LOG_LIMIT_BYTES,
        worker_factory: WorkerFactory | None = None,
    ) -> None:
        self.on_progress = on_progress
        self.on_log = on_log
        self.on_finished = on_finished
        self.import_results = import_results
        self._worker_kwargs: dict[str, Any] = {
            "python_executable": python_executable,
            "entry": tuple(entry),
            "base_env": base_env,
            "extra_env": extra_env,
            "pythonpath": tuple(pythonpath),
            "grace_period_s": grace_period_s,
        }
        self._worker_factory: WorkerFactory = worker_factory or WorkerProcess
        self.log = CappedLog(log_limit_bytes)
        self.worker: WorkerProcess | None = None
        self.job: JobSpec | None = None
        self._reset_run_state()

    def _reset_run_state(self) -> None:
        self.state = RunState.IDLE
        self.fraction: float | None = None
        self.text = ""
        self.phase = ""
        self.outputs: dict[str, str] = {}
        self.artifacts: list[tuple[str, str]] = []
        self.errors: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.metrics: list[dict[str, Any]] = []
        self.finished_event: dict[str, Any] | None = None
        self.exit_code: int | None = None
        self.status: str | None = None
        self.message = ""

    # -- queries -----------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.state.active

    @property
    def progress(self) -> Progress:
        return Progress(self.state, self.fraction, self.text, self.phase)

    # -- commands ----------------------------------------------------------------------------

    def start(self, job: JobSpec) -> WorkerProcess:
        """Write ``job.json`` into the job's output folder and start the worker on it."""
        output = Path(job.output)
        output.mkdir(parents=True, exist_ok=True)
        job_path = output / JOB_FILE_NAME
        job_path.write_text(job.to_json() + "\n", encoding="utf-8")
        job.cancel_path.unlink(missing_ok=True)  # a stale cancel file would stop it at once
        return self._launch(job, job.command, job_path, (), job.device, job.cancel_path)

    def start_command(
        self,
        command: str,
        arguments: Sequence[str] = (),
        *,
        device: str = "cpu",
        cancel_file: Path | str | None = None,
        events: bool = True,
    ) -> WorkerProcess:
        """Start a CLI command that takes flags instead of a job (e.g. ``make-cohort``)."""
        if cancel_file is not None:
            Path(cancel_file).unlink(missing_ok=True)
        return self._launch(None, command, None, arguments, device, cancel_file, events=events)

    def _launch(
        self,
        job: JobSpec | None,
        command: str,
        job_path: Path | None,
        arguments: Sequence[str],
        device: str,
        cancel_file: Path | str | None,
        *,
        events: bool = True,
    ) -> WorkerProcess:
        if self.active:
            raise RuntimeError("A run is already in progress; cancel it or wait for it to end.")
        self._reset_run_state()
        self.log.clear()
        self.job = job
        self._set_state(RunState.STARTING, fraction=None, text="starting…")
        worker = self._worker_factory(
            command,
            job_path,
            extra_args=tuple(arguments),
            events=events,
            device=device,
            cancel_file=cancel_file,
            **self._worker_kwargs,
        )
        self.worker = worker
        try:
            worker.start()
        except OSError as exc:
            self._log(f"$ {worker.command_line()}")
            self._finish(RunState.FAILED, "failed", f"could not start the worker: {exc}")
            raise
        return worker

    def cancel(self) -> None:
        """First call: cooperative cancel (CANCELLING); second call: kill the process tree."""
        if self.worker is None or self.state not in (
            RunState.STARTING,
            RunState.RUNNING,
            RunState.CANCELLING,
        ):
            return
        self.worker.cancel()
        if self.state != RunState.CANCELLING:
            self._set_state(RunState.CANCELLING, text="cancelling…")

    def poll(self) -> bool:
        """Handle every event that arrived; returns True while the run is still active."""
        self._drain()
        return self.active

    def run_to_end(self, timeout_s: float, interval_s: float = 0.02) -> RunState:
        """Poll until the run is over (tests, scripts); cancels it by force on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.poll():
            if time.monotonic() > deadline:
                if self.worker is not None:
                    self.worker.kill_tree()
                raise TimeoutError(f"the run did not finish within {timeout_s:g} s")
            time.sleep(interval_s)
        return self.state

    # -- event handling ----------------------------------------------------------------------

    def _drain(self) -> None:
        if self.worker is None:
            return
        for event in self.worker.poll():
            handler = getattr(self, f"_on_{event.kind}", None)
            if handler is not None:
                handler(event)

    def _on_log(self, event: Event) -> None:
        self._log(str(event.get("message", "")))

    def _on_started(self, event: Event) -> None:
        self._enter_running(text=f"{event.get('command', '')} started".strip())

    def _on_phase(self, event: Event) -> None:
        name, detail = str(event.get("name", "")), str(event.get("detail", "") or "")
        self.phase = name
        self._log(f"== {name}: {detail}" if detail else f"== {name}")
        self._enter_running(text=f"{name}: {detail}" if detail else name)

    def _on_progress(self, event: Event) -> None:
        epoch, epochs = _int(event.get("epoch")), _int(event.get("epochs"))
        step, steps = _int(event.get("step")), _int(event.get("steps"))
        self.phase = str(event.get("phase") or self.phase)
        fraction = self.fraction
        if epochs > 0:
            within = step / steps if steps > 0 else 1.0
            fraction = min(1.0, max(0.0, (max(epoch, 1) - 1 + within) / epochs))
        elif steps > 0:
            fraction = min(1.0, max(0.0, step / steps))
        self._enter_running(fraction=fraction, text=progress_text(event))

    def _on_metrics(self, event: Event) -> None:
        self.metrics.append(dict(event.fields))
        parts = []
        for role, values in (event.get("sets") or {}).items():
            dice, mae = values.get("dice"), values.get("mae")
            dice_text = "n/a" if dice is None else f"{dice:.4f}"
            mae_text = "n/a" if mae is None else f"{mae:.4f}"
            parts.append(f"{role}: Dice {dice_text}, MAE {mae_text}")
        epoch = event.get("epoch")
        where = f" epoch {epoch}" if epoch is not None else ""
        self._log(f"metrics [{event.get('model')}{where}] " + "; ".join(parts))

    def _on_artifact(self, event: Event) -> None:
        kind, path = str(event.get("kind", "")), str(event.get("path", ""))
        self.artifacts.append((kind, path))
        self._log(f"wrote {kind}: {path}")

    def _on_warning(self, event: Event) -> None:
        message = str(event.get("message", ""))
        self.warnings.append(message)
        self._log(f"warning: {message}")

    def _on_error(self, event: Event) -> None:
        self.errors.append(dict(event.fields))
        hint = event.get("hint")
        self._log(f"error: {event.get('message')}" + (f"\nhint: {hint}" if hint else ""))

    def _on_finished(self, event: Event) -> None:
        self.finished_event = dict(event.fields)
        self.outputs = {str(k): str(v) for k, v in (event.get("outputs") or {}).items()}
        self._log(f"finished: {event.get('status')}")
        if event.get("status") == "ok" and self.state != RunState.CANCELLING:
            self._set_state(RunState.IMPORTING, fraction=None, text="importing results…")

    def _on_exit(self, event: Event) -> None:
        code = _int(event.get("exit_code"), default=1)
        self.exit_code = code
        status = str(event.get("status") or status_for_exit(code))
        if status == "cancelled":
            self._finish(RunState.CANCELLED, status, "cancelled")
            return
        if code != 0:
            self._finish(RunState.FAILED, status, self._failure_text(code))
            return
        if self.job is not None and self.import_results is not None:
            if self.state != RunState.IMPORTING:
                self._set_state(RunState.IMPORTING, fraction=None, text="importing results…")
            try:
                self.import_results(self.job, dict(self.outputs))
            except Exception as exc:  # the import is user-facing: report, never crash the GUI
                logger.exception("importing the results failed")
                self._finish(RunState.FAILED, "failed", f"importing the results failed: {exc}")
                return
        self._finish(RunState.DONE, "ok", "done")

    def _failure_text(self, code: int) -> str:
        text = explain_exit(code)
        if self.errors:
            last = self.errors[-1]
            text += f" — {last.get('message')}"
            if last.get("hint"):
                text += f" ({last.get('hint')})"
        return text

    # -- state -------------------------------------------------------------------------------

    def _enter_running(self, fraction: float | None = None, text: str = "") -> None:
        if self.state in (RunState.CANCELLING, RunState.IMPORTING):
            return  # events still arriving after Cancel / finished must not undo those states
        if fraction is None:
            fraction = self.fraction if self.fraction is not None else 0.0
        self._set_state(RunState.RUNNING, fraction=fraction, text=text or self.text)

    def _set_state(
        self, state: RunState, *, fraction: Any = _KEEP, text: str | None = None
    ) -> None:
        """Change state, fraction (None = indeterminate; default: keep) and text; notify."""
        changed = state != self.state
        self.state = state
        if fraction is not _KEEP:
            changed = changed or fraction != self.fraction
            self.fraction = fraction
        if text is not None:
            changed = changed or text != self.text
            self.text = text
        if changed and self.on_progress is not None:
            self.on_progress(self.progress)

    def _finish(self, state: RunState, status: str, message: str) -> None:
        self.status = status
        self.message = message
        self._log(f"run {state.value}: {message}")
        fraction = 1.0 if state == RunState.DONE else self.fraction
        self._set_state(state, fraction=fraction, text=message)
        if self.on_finished is not None:
            self.on_finished(status, dict(self.outputs))

    def _log(self, line: str) -> None:
        self.log.append(line)
        if self.on_log is not None:
            self.on_log(line)


def progress_text(event: Event | Mapping[str, Any]) -> str:
    """``epoch i/n — ETA mm:ss`` from a ``progress`` event (no ETA part while it is unknown)."""
    get = event.get
    epoch, epochs = get("epoch"), get("epochs")
    if epochs:
        text = f"epoch {epoch}/{epochs}"
    elif get("steps"):
        text = f"step {get('step')}/{get('steps')}"
    else:
        text = str(get("phase") or "")
    eta = get("eta_s")
    if isinstance(eta, (int, float)):
        text += f" — ETA {format_duration(eta)}"
    return text


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
