"""Gaps between an unlearned model and the retrain-from-scratch reference (SalUn's Avg. Gap)."""

from __future__ import annotations

from MachineUnlearningLib.evaluation.predict import Evaluation


def reference_gaps(unlearned: Evaluation, reference: Evaluation) -> dict:
    """Absolute gaps between an unlearned model and the retrained reference.

    Returns ``{"subjects": {id: {"role", "dice_gap", "mae_gap"}}, "sets": {role: {"dice_gap",
    "mae_gap"}}, "avg_gap": mean of the set Dice gaps}``; a gap is None where a value is.
    """
    ref = {s.subject_id: s for s in reference.subjects}
    subjects = {}
    for s in unlearned.subjects:
        r = ref.get(s.subject_id)
        subjects[s.subject_id] = {
            "role": s.role,
            "dice_gap": _gap(s.mean_dice, r.mean_dice if r else None),
            "mae_gap": _gap(s.mae, r.mae if r else None),
        }
    u_sets, r_sets = unlearned.sets(), reference.sets()
    sets = {
        role: {
            "dice_gap": _gap(v["dice"], r_sets.get(role, {}).get("dice")),
            "mae_gap": _gap(v["mae"], r_sets.get(role, {}).get("mae")),
        }
        for role, v in u_sets.items()
    }
    dice_gaps = [v["dice_gap"] for v in sets.values() if v["dice_gap"] is not None]
    return {
        "subjects": subjects,
        "sets": sets,
        "avg_gap": sum(dice_gaps) / len(dice_gaps) if dice_gaps else None,
    }


def _gap(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else abs(a - b)
