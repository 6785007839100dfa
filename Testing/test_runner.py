"""WorkerProcess and RunController against real child processes.

The children are small stand-in workers written into ``tmp_path``: they speak the worker's
event protocol, obey (or ignore) the cancel file and exit with the codes the job asks for
through ``JobSpec.config``. The end-to-end run of the real engine CLI lives elsewhere.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from MachineUnlearningLib.app.runner import (
    EXIT,
    LOG,
    CappedLog,
    Progress,
    RunController,
    RunState,
    WorkerProcess,
    child_environment,
    explain_exit,
    format_duration,
    progress_text,
)
from MachineUnlearningLib.runtime.jobs import JobSpec

RUN_TIMEOUT_S = 30.0

STAND_IN_WORKER = textwrap.dedent(
    """
    import json, os, sys, time

    args = sys.argv[1:]
    command = args[0]
    job = json.load(open(args[args.index("--job") + 1])) if "--job" in args else {}
    config = job.get("config", {})
    output = job.get("output", ".")
    cancel_file = job.get("cancel_file") or os.path.join(output, "CANCEL")

    def emit(event_kind, **fields):
        print(json.dumps({"event": event_kind, "time": time.time(), **fields}), flush=True)

    emit("started", command=command, job=job)
    print("a plain line from the worker", flush=True)
    print("a line on stderr", file=sys.stderr, flush=True)
    emit("phase", name="train", detail="stand-in",
         cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
         unbuffered=os.environ.get("PYTHONUNBUFFERED"))
    for line in range(config.get("noise_lines", 0)):
        print(f"noise line {line:04d} " + "x" * 40, flush=True)
    epochs = config.get("epochs", 3)
    for epoch in range(1, epochs + 1):
        if os.path.exists(cancel_file):
            emit("finished", status="cancelled", exit_code=3, outputs={})
            sys.exit(3)
        time.sleep(config.get("sleep", 0.01))
        eta = (epochs - epoch) * 65.0 if epoch > 1 else None
        emit("progress", phase="train", epoch=epoch, epochs=epochs, step=1, steps=1,
             loss=1.0 / epoch, eta_s=eta)
    emit("metrics", model="unlearned", epoch=epochs,
         sets={"forget": {"dice": 0.1, "mae": 0.5, "n": 1}})
    code = config.get("exit_code", 0)
    if code == 0 and not job:
        emit("finished", status="ok", exit_code=0, outputs={})
    elif code == 0:
        os.makedirs(output, exist_ok=True)
        model = os.path.join(output, "model.pt")
        open(model, "w").write("weights")
        emit("artifact", kind="checkpoint", path=model)
        emit("finished", status="ok", exit_code=0, outputs={"checkpoint": model})
    else:
        emit("error", message=config.get("message", "it broke"), hint=config.get("hint", ""),
             exit_code=code)
        emit("finished", status="failed", exit_code=code, outputs={})
    sys.exit(code)
    """
)

STUBBORN_WORKER = textwrap.dedent(
    """
    import json, subprocess, sys, time

    def emit(event_kind, **fields):
        print(json.dumps({"event": event_kind, "time": time.time(), **fields}), flush=True)

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    emit("phase", name="train", detail=str(child.pid))
    epoch = 0
    while True:  # never looks at the cancel file
        epoch += 1
        emit("progress", phase="train", epoch=epoch, epochs=10**6, step=1, steps=1)
        time.sleep(0.05)
    """
)


@pytest.fixture
def a_stand_in_worker(tmp_path: Path) -> Path:
    script = tmp_path / "stand_in_worker.py"
    script.write_text(STAND_IN_WORKER, encoding="utf-8")
    return script


@pytest.fixture
def a_stubborn_worker(tmp_path: Path) -> Path:
    script = tmp_path / "stubborn_worker.py"
    script.write_text(STUBBORN_WORKER, encoding="utf-8")
    return script


def a_job(tmp_path: Path, **config) -> JobSpec:
    return JobSpec(
        command="train",
        cohort=str(tmp_path / "cohort"),
        output=str(tmp_path / "run"),
        device="cpu",
        config=config,
    )


class Recorder:
    """Collects what a RunController reports through its callbacks."""

    def __init__(self) -> None:
        self.progress: list[Progress] = []
        self.log: list[str] = []
        self.finished: list[tuple[str, dict[str, str]]] = []
        self.imported: list[tuple[JobSpec, dict[str, str]]] = []

    def controller(self, script: Path, **kwargs) -> RunController:
        kwargs.setdefault(
            "import_results", lambda job, outputs: self.imported.append((job, outputs))
        )
        return RunController(
            on_progress=self.progress.append,
            on_log=self.log.append,
            on_finished=lambda status, outputs: self.finished.append((status, outputs)),
            entry=(str(script),),
            **kwargs,
        )

    def states(self) -> list[RunState]:
        seen: list[RunState] = []
        for p in self.progress:
            if not seen or seen[-1] != p.state:
                seen.append(p.state)
        return seen


def poll_until(controller: RunController, condition, timeout_s: float = RUN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while controller.poll() and not condition():
        assert time.monotonic() < deadline, "the stand-in worker did not get there in time"
        time.sleep(0.01)
    assert condition()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- WorkerProcess ----------------------------------------------------------------------------


def test_worker_process_delivers_events_in_order_and_plain_lines_as_log(
    tmp_path, a_stand_in_worker
):
    job = a_job(tmp_path, epochs=3)
    job_path = tmp_path / "job.json"
    job_path.write_text(job.to_json(), encoding="utf-8")
    worker = WorkerProcess(
        "train",
        job_path,
        entry=(str(a_stand_in_worker),),
        device="cpu",
        cancel_file=job.cancel_path,
    )
    assert worker.argv == [
        sys.executable,
        str(a_stand_in_worker),
        "train",
        "--job",
        str(job_path),
        "--events",
    ]
    worker.start()
    events = worker.wait(RUN_TIMEOUT_S)

    kinds = [e.kind for e in events if e.kind != LOG]
    assert kinds == ["started", "phase", *["progress"] * 3, "metrics", "artifact", "finished", EXIT]
    logs = [e["message"] for e in events if e.kind == LOG]
    assert logs[0] == f"$ {worker.command_line()}"
    assert logs[1].startswith(f"job {job_path}: ") and '"command": "train"' in logs[1]
    assert "a plain line from the worker" in logs and "a line on stderr" in logs
    assert [e["epoch"] for e in events if e.kind == "progress"] == [1, 2, 3]
    assert events[-1].kind == EXIT and events[-1]["exit_code"] == 0
    assert events[-1]["status"] == "ok"
    assert worker.exit_code == 0 and worker.status == "ok" and not worker.running
    assert worker.poll() == []


def test_worker_environment_is_set_on_the_child_only(tmp_path, a_stand_in_worker):
    before = dict(os.environ)
    job_path = tmp_path / "job.json"
    job_path.write_text(a_job(tmp_path, epochs=1).to_json(), encoding="utf-8")

    seen = {}
    for device in ("cpu", "auto"):
        worker = WorkerProcess("train", job_path, entry=(str(a_stand_in_worker),), device=device)
        worker.start()
        phase = next(e for e in worker.wait(RUN_TIMEOUT_S) if e.kind == "phase")
        seen[device] = (phase["cuda_visible_devices"], phase["unbuffered"])

    assert seen["cpu"] == ("-1", "1")
    assert seen["auto"] == (os.environ.get("CUDA_VISIBLE_DEVICES"), "1")
    assert dict(os.environ) == before


def test_child_environment_prepends_pythonpath_and_copies_its_base():
    base = {"PYTHONPATH": "/already/there", "KEEP": "me"}
    env = child_environment("cpu", base=base, pythonpath=["/module/dir"], extra={"X": "1"})
    assert env["PYTHONPATH"] == os.pathsep.join(["/module/dir", "/already/there"])
    assert env["CUDA_VISIBLE_DEVICES"] == "-1" and env["X"] == "1" and env["KEEP"] == "me"
    assert base == {"PYTHONPATH": "/already/there", "KEEP": "me"}


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (0, "success"),
        (1, "see the log"),
        (2, "invalid input: see the error above"),
        (3, "cancelled"),
        (4, "out of GPU memory: choose CPU or a smaller input size/patch"),
        (-9, "signal 9"),
        (77, "exit code 77"),
    ],
    ids=["ok", "failure", "invalid", "cancelled", "oom", "killed", "unknown"],
)
def test_explain_exit_gives_an_actionable_sentence(code, words):
    assert words in explain_exit(code)


def test_durations_and_progress_text_are_formatted_for_people():
    assert format_duration(83) == "01:23"
    assert format_duration(3725) == "1:02:05"
    assert progress_text({"epoch": 3, "epochs": 50, "eta_s": 83.4}) == "epoch 3/50 — ETA 01:23"
    assert progress_text({"epoch": 1, "epochs": 50, "eta_s": None}) == "epoch 1/50"


# -- RunController ----------------------------------------------------------------------------


def test_a_successful_run_goes_starting_running_importing_done(tmp_path, a_stand_in_worker):
    recorder = Recorder()
    controller = recorder.controller(a_stand_in_worker)
    job = a_job(tmp_path, epochs=3)

    controller.start(job)
    assert controller.state == RunState.STARTING and controller.active
    assert (Path(job.output) / "job.json").is_file()
    assert controller.run_to_end(RUN_TIMEOUT_S) == RunState.DONE

    assert recorder.states() == [
        RunState.STARTING,
        RunState.RUNNING,
        RunState.IMPORTING,
        RunState.DONE,
    ]
    texts = [p.text for p in recorder.progress if p.state == RunState.RUNNING]
    assert "epoch 1/3" in texts and "epoch 2/3 — ETA 01:05" in texts
    fractions = [p.fraction for p in recorder.progress if p.text == "epoch 2/3 — ETA 01:05"]
    assert fractions == [pytest.approx(2 / 3)]
    assert recorder.progress[-1].fraction == 1.0
    model = str(Path(job.output) / "model.pt")
    assert recorder.finished == [("ok", {"checkpoint": model})]
    assert recorder.imported == [(job, {"checkpoint": model})]
    assert controller.exit_code == 0 and controller.status == "ok"
    assert controller.artifacts == [("checkpoint", model)]
    assert "a plain line from the worker" in recorder.log
    assert any(
        line.startswith("metrics [unlearned epoch 3] forget: Dice 0.1000") for line in recorder.log
    )
    assert controller.log.lines() == recorder.log


@pytest.mark.parametrize(
    ("code", "status", "explanation"),
    [
        (2, "invalid", "invalid input: see the error above"),
        (4, "out_of_memory", "out of GPU memory: choose CPU or a smaller input size/patch"),
    ],
    ids=["invalid-input", "out-of-memory"],
)
def test_a_failing_run_ends_failed_with_an_explanation(
    tmp_path, a_stand_in_worker, code, status, explanation
):
    recorder = Recorder()
    controller = recorder.controller(a_stand_in_worker)
    controller.start(a_job(tmp_path, epochs=1, exit_code=code, message="epochs: bad", hint="50"))

    assert controller.run_to_end(RUN_TIMEOUT_S) == RunState.FAILED

    assert recorder.finished == [(status, {})]
    assert recorder.imported == []
    final = recorder.progress[-1]
    assert final.state == RunState.FAILED
    assert final.text.startswith(explanation) and "epochs: bad" in final.text and "50" in final.text
    assert controller.exit_code == code


def test_cancel_writes_the_cancel_file_and_ends_cancelled(tmp_path, a_stand_in_worker):
    recorder = Recorder()
    controller = recorder.controller(a_stand_in_worker)
    job = a_job(tmp_path, epochs=400, sleep=0.02)
    controller.start(job)
    poll_until(controller, lambda: controller.state == RunState.RUNNING)

    controller.cancel()
    assert controller.state == RunState.CANCELLING
    assert job.cancel_path.is_file()
    assert controller.run_to_end(RUN_TIMEOUT_S) == RunState.CANCELLED

    assert recorder.states()[-2:] == [RunState.CANCELLING, RunState.CANCELLED]
    assert controller.exit_code == 3
    assert recorder.finished == [("cancelled", {})]
    assert recorder.imported == []


def test_a_stale_cancel_file_does_not_stop_the_next_run(tmp_path, a_stand_in_worker):
    job = a_job(tmp_path, epochs=2)
    job.cancel_path.parent.mkdir(parents=True)
    job.cancel_path.write_text("left over", encoding="utf-8")
    controller = Recorder().controller(a_stand_in_worker)
    controller.start(job)
    assert controller.run_to_end(RUN_TIMEOUT_S) == RunState.DONE


def test_a_worker_ignoring_cancel_is_killed_with_its_children_after_the_grace_period(
    tmp_path, a_stubborn_worker
):
    recorder = Recorder()
    controller = recorder.controller(a_stubborn_worker, grace_period_s=0.5)
    controller.start(a_job(tmp_path))
    poll_until(controller, lambda: controller.phase == "train")
    child_pid = int(next(line for line in recorder.log if line.startswith("== train: "))[10:])
    worker_pid = controller.worker.pid
    assert not gone(child_pid)

    controller.cancel()
    assert controller.run_to_end(RUN_TIMEOUT_S) == RunState.CANCELLED

    assert gone(worker_pid) and gone(child_pid)
    assert recorder.finished == [("cancelled", {})]
    assert any("did not stop within 0.5 s" in line for line in recorder.log)
    assert any(
        line.startswith("killed the worker process tree (2 process") for line in recorder.log
    )


def test_a_second_cancel_kills_the_tree_at_once(tmp_path, a_stubborn_worker):
    controller = Recorder().controller(a_stubborn_worker, grace_period_s=600)
    controller.start(a_job(tmp_path))
    poll_until(controller, lambda: controller.phase == "train")

    controller.cancel()
    controller.cancel()

    assert controller.run_to_end(5.0) == RunState.CANCELLED
    assert gone(controller.worker.pid)


def test_a_failing_import_turns_the_run_failed(tmp_path, a_stand_in_worker):
    def broken_import(job, outputs):
        raise ValueError("no segmentation in the outputs")

    recorder = Recorder()
    controller = recorder.controller(a_stand_in_worker, import_results=broken_import)
    controller.start(a_job(tmp_path, epochs=1))

    assert controller.run_to_end(RUN_TIMEOUT_S) == RunState.FAILED
    assert recorder.finished[0][0] == "failed"
    assert "importing the results failed: no segmentation" in recorder.progress[-1].text


def test_the_log_is_capped_to_its_newest_lines(tmp_path, a_stand_in_worker):
    controller = Recorder().controller(a_stand_in_worker, log_limit_bytes=2000)
    controller.start(a_job(tmp_path, epochs=1, noise_lines=300))
    assert controller.run_to_end(RUN_TIMEOUT_S) == RunState.DONE

    assert controller.log.size_bytes <= 2000
    assert controller.log.dropped > 0
    text = controller.log.text()
    assert text.startswith(f"[... {controller.log.dropped} earlier line(s) dropped ...]")
    assert "noise line 0299" in text and "noise line 0000" not in text
    assert text.endswith("run done: done")


def test_capped_log_keeps_at_least_the_newest_line():
    log = CappedLog(limit_bytes=10)
    log.append("short")
    log.append("a line far longer than the limit")
    assert log.lines() == ["a line far longer than the limit"] and log.dropped == 1


def test_only_one_run_at_a_time(tmp_path, a_stand_in_worker):
    controller = Recorder().controller(a_stand_in_worker)
    controller.start(a_job(tmp_path, epochs=50, sleep=0.02))
    with pytest.raises(RuntimeError, match="already in progress"):
        controller.start(a_job(tmp_path))
    controller.cancel()
    assert controller.run_to_end(RUN_TIMEOUT_S) == RunState.CANCELLED


def test_a_command_without_a_job_runs_through_the_same_controller(tmp_path, a_stand_in_worker):
    recorder = Recorder()
    controller = recorder.controller(a_stand_in_worker)
    controller.start_command("make-cohort", ["--out", str(tmp_path / "cohort")])
    assert controller.run_to_end(RUN_TIMEOUT_S) == RunState.DONE
    assert controller.worker.argv[-4:] == [
        "make-cohort",
        "--out",
        str(tmp_path / "cohort"),
        "--events",
    ]
    assert recorder.imported == []  # only job runs import results
    assert recorder.finished[0][0] == "ok"
