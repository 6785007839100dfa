"""A finished run's results in the scene: metrics table, Dice chart, compare views; and text.

Plain Python over ``scene.py``; every function takes the ``scene`` it works on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from MachineUnlearningLib.app import scene as mrml
from MachineUnlearningLib.outputs.record import forgetting_summary

REFERENCE_AUDIT_FILE = "reference-audit.json"

ROLE_ORDER = {"forget": 0, "retain": 1, "held-out": 2}


@dataclass
class ImportedRun:
    """What one run's import made: its metrics, the metrics table and the Dice chart."""

    metrics: dict
    table: Any
    chart: Any

    def nodes(self) -> list[Any]:
        """Every node the import added: table, chart, the chart's series and their table."""
        series = [
            self.chart.GetNthPlotSeriesNode(i)
            for i in range(self.chart.GetNumberOfPlotSeriesNodes())
        ]
        tables = {id(s.GetTableNode()): s.GetTableNode() for s in series if s.GetTableNode()}
        return [self.table, self.chart, *series, *tables.values()]


def remove_nodes(scene: Any, nodes: list[Any]) -> None:
    """Remove ``nodes`` (and their display/storage nodes) from ``scene`` if still there."""
    for node in nodes:
        if node is not None and node.GetScene() is scene:
            scene.RemoveNode(node)


def read_metrics(path: Path | str) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def import_metrics(scene: Any, metrics_path: Path | str) -> ImportedRun:
    """metrics.json -> a locked metrics table and a Dice-per-epoch chart in ``scene``."""
    metrics = read_metrics(metrics_path)
    run_name = Path(metrics_path).parent.name
    table = mrml.metrics_to_table(scene, metrics, name=f"Metrics {run_name}")
    chart = mrml.dice_curves_to_plot(scene, metrics, name=f"Dice {run_name}")
    return ImportedRun(metrics=metrics, table=table, chart=chart)


def results_summary(metrics: Mapping[str, Any]) -> str:
    """One line from metrics.json ``summary`` (the last evaluated epoch)."""
    summary = (metrics.get("summary") or [None])[-1]
    if not summary:
        return "No summary in metrics.json."

    def number(key: str, fmt: str) -> str:
        value = summary.get(key)
        return format(value, fmt) if isinstance(value, (int, float)) else "n/a"

    return (
        f"Epoch {summary.get('epoch')}: forget Dice decreased "
        f"{number('forget_decrease_pct', '.1f')} %, retain Dice preserved "
        f"{number('retain_preservation_pct', '.1f')} %, Dice gap {number('dice_gap', '.3f')}, "
        f"MAE gap {number('mae_gap', '.3f')}"
    )


def read_forgetting(run: Path | str) -> dict | None:
    """The run's audit against retrained models (``reference-audit.json``), None if absent."""
    path = Path(run) / REFERENCE_AUDIT_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {"method": "none", "reason": f"{path} is not valid JSON"}


def verdict_text(forgetting: Mapping[str, Any] | None) -> str:
    """What the module shows under the summary: the verdict against retrained models."""
    return forgetting_summary(forgetting)


def comparable_subjects(metrics: Mapping[str, Any]) -> list[str]:
    """Subjects of the run with predictions, forget subjects first."""
    roles = metrics.get("roles") or {}
    return sorted(roles, key=lambda s: (ROLE_ORDER.get(roles[s], 3), s))


def load_comparison(
    scene: Any, run: Path, metrics: Mapping[str, Any], image: Path, subject_id: str, modality: str
) -> tuple[Any, Any, Any]:
    """(volume, original segmentation, unlearned segmentation) of ``subject_id``, in views.

    ``run`` is the run folder (``predictions/<model>/<id>.nii.gz``), ``image`` the subject's
    MRI of ``modality``; the two slice views show one prediction each, linked.
    """
    names, colours = metrics.get("class_names") or [], metrics.get("class_colours") or []
    volume = mrml.load_volume(scene, image, f"{subject_id} {modality}")
    original, unlearned = (
        mrml.import_label_map_as_segmentation(
            scene,
            run / "predictions" / model / f"{subject_id}.nii.gz",
            volume,
            names,
            colours,
            f"{subject_id} {model}",
        )
        for model in ("original", "unlearned")
    )
    mrml.setup_compare_views(scene, volume, original, unlearned)
    return volume, original, unlearned
