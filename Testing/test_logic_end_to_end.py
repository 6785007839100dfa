"""The Slicer Logic's heart (RunController) drives the real worker end to end and the results
land in a real MRML scene (slicer-core): start, progress events, completion, import; and cancel.
"""

from __future__ import annotations

import json

import pytest
import slicer

from MachineUnlearningLib.app import scene as mrml
from MachineUnlearningLib.app.runner import RunController, RunState
from MachineUnlearningLib.runtime.jobs import JobSpec


def an_unlearn_job(cohort, checkpoint, output, epochs):
    return JobSpec(
        command="unlearn",
        cohort=str(cohort),
        output=str(output),
        checkpoint=str(checkpoint),
        forget_ids=["070"],
        strategy="noisy-label",
        epochs=epochs,
        eval_epochs=[epochs],
        device="cpu",
        seed=0,
    )


def test_controller_runs_the_worker_and_imports_results_into_a_scene(
    a_tiny_cohort, a_tiny_trained_model, tmp_path
):
    scene = slicer.vtkMRMLScene()
    imported = {}
    progress = []

    def import_results(job, outputs):
        metrics = json.loads(open(outputs["metrics"]).read())
        volume = mrml.load_volume(scene, a_tiny_cohort / "training/070/pre/reg_T1.nii.gz", "070")
        imported["table"] = mrml.metrics_to_table(scene, metrics, "metrics")
        imported["chart"] = mrml.dice_curves_to_plot(scene, metrics, "dice")
        for model in ("original", "unlearned"):
            imported[model] = mrml.import_label_map_as_segmentation(
                scene,
                outputs[f"prediction:{model}:070"],
                volume,
                metrics["class_names"],
                metrics["class_colours"],
                f"070 {model}",
            )

    controller = RunController(import_results=import_results, on_progress=progress.append)
    controller.start(an_unlearn_job(a_tiny_cohort, a_tiny_trained_model, tmp_path / "run", 2))
    assert controller.run_to_end(600) == RunState.DONE, controller.message
    states = [p.state for p in progress]
    assert RunState.RUNNING in states and RunState.IMPORTING in states
    assert any(p.fraction is not None and 0 < p.fraction < 1 for p in progress)
    assert imported["table"].GetNumberOfRows() == 2 * 10  # original + epoch 2, 10 subjects
    assert imported["original"].GetSegmentation().GetNumberOfSegments() >= 2
    assert scene.GetNodesByClass("vtkMRMLPlotSeriesNode").GetNumberOfItems() >= 2


def test_controller_cancel_stops_the_worker_cleanly(a_tiny_cohort, a_tiny_trained_model, tmp_path):
    controller = RunController()
    output = tmp_path / "cancelled"
    controller.start(an_unlearn_job(a_tiny_cohort, a_tiny_trained_model, output, 500))
    while controller.poll():
        if controller.state == RunState.RUNNING and (controller.progress.fraction or 0) > 0:
            controller.cancel()
            break
    assert controller.run_to_end(300) == RunState.CANCELLED
    assert not (output / "unlearned.pt").exists()


@pytest.mark.parametrize("bad", ["forget", "checkpoint"], ids=["unknown-subject", "no-file"])
def test_controller_reports_invalid_input_with_advice(
    a_tiny_cohort, a_tiny_trained_model, tmp_path, bad
):
    job = an_unlearn_job(a_tiny_cohort, a_tiny_trained_model, tmp_path / "bad", 1)
    if bad == "forget":
        job.forget_ids = ["999"]
    else:
        job.checkpoint = str(tmp_path / "missing.pt")
    controller = RunController()
    controller.start(job)
    assert controller.run_to_end(300) == RunState.FAILED
    assert controller.exit_code == 2
    assert "999" in controller.log.text() or "missing.pt" in controller.log.text()
