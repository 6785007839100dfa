"""``machine-unlearning demo``: the jobs it runs, in order (each job is tested on its own)."""

from __future__ import annotations

import json

from MachineUnlearningLib.commands import demo
from MachineUnlearningLib.runtime.events import CollectingSink
from MachineUnlearningLib.training.recipes import resolve_recipe


def test_the_demo_trains_the_lighter_baseline_then_unlearns_070(tmp_path, monkeypatch, capsys):
    import MachineUnlearningLib.commands as commands
    import MachineUnlearningLib.data.synthetic as synthetic

    jobs = []
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"evaluations": [], "summary": []}))

    def fake_run_job(job, sink):
        jobs.append(job)
        return {"metrics": str(metrics), "report": str(tmp_path / "report.html")}

    monkeypatch.setattr(commands, "run_job", fake_run_job)
    monkeypatch.setattr(
        synthetic, "make_cohort", lambda out, **_: (out / "training").mkdir(parents=True)
    )
    demo.run_demo(tmp_path / "out", "cpu", CollectingSink())

    train, unlearn = jobs
    assert (train.command, unlearn.command) == ("train", "unlearn")
    recipe = resolve_recipe("cpu-demo", train.config)
    assert recipe.preprocessing.input_size == (48, 160, 160)  # the subjects' own 48 slices
    assert recipe.training.epochs == 40
    full = resolve_recipe("cpu-demo")
    assert full.preprocessing.input_size == (96, 160, 160) and full.training.epochs == 60
    assert (unlearn.forget_ids, unlearn.strategy, unlearn.fix_decoder) == (
        ["070"],
        "noisy-label",
        True,
    )
    assert unlearn.checkpoint == str(tmp_path / "out" / "baseline" / "model.pt")
    assert unlearn.references == "cached"  # the default never trains reference models
    err = capsys.readouterr().err
    assert "Report:" in err and "Forgetting audit: not run" in err

    jobs.clear()
    demo.run_demo(tmp_path / "out", "cpu", CollectingSink(), references="auto")
    assert [job.references for job in jobs if job.command == "unlearn"] == ["auto"]


def test_the_demo_command_line_passes_its_reference_mode(monkeypatch):
    from MachineUnlearningLib.app import cli

    got = []
    monkeypatch.setattr(demo, "run_demo", lambda *args: got.append(args) or {})
    for argv, mode in ((["demo"], "cached"), (["demo", "--references", "auto"], "auto")):
        cli.main(argv)
        assert got[-1][3] == mode
