"""scripts/benchmark_protocol.py: its statistics on inputs with known answers, and one tiny run."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from conftest import TINY_RECIPE, load_script, write_phantom_subject
from MachineUnlearningLib.evaluation.reference_audit import VERDICTS

REPO = Path(__file__).resolve().parents[1]


protocol = load_script("benchmark_protocol")


def test_the_bootstrap_interval_of_constant_values_is_that_value():
    values = {"a": {0: 2.0, 1: 2.0}, "b": {0: 2.0}}
    assert protocol.bootstrap_interval(values) == (2.0, 2.0, 2.0)


def test_the_bootstrap_interval_brackets_the_mean_and_resamples_subjects_first():
    # two subjects, one all 0 and one all 1: a draw's mean is the fraction of "1" subjects
    # drawn (0, 1/2 or 1); seeds within a subject change nothing
    values = {"zero": {0: 0.0, 1: 0.0, 2: 0.0}, "one": {0: 1.0, 1: 1.0, 2: 1.0}}
    mean, low, high = protocol.bootstrap_interval(values, resamples=4000)
    assert mean == 0.5
    assert (low, high) == (0.0, 1.0)  # each extreme has probability 1/4, beyond the 2.5 % tails
    draws = protocol.bootstrap_interval(values, level=0.4, resamples=4000)
    assert draws[1] == draws[2] == 0.5  # the central 40 % is all "one of each"


def test_the_bootstrap_interval_narrows_with_more_subjects():
    few = {str(i): {0: float(i % 2)} for i in range(4)}
    many = {str(i): {0: float(i % 2)} for i in range(64)}
    _, low_few, high_few = protocol.bootstrap_interval(few)
    _, low_many, high_many = protocol.bootstrap_interval(many)
    assert high_many - low_many < (high_few - low_few) / 2
    # the standard error of a mean of 64 fair coins is 1/16: the 95 % interval is about +-1/8
    assert high_many - low_many == pytest.approx(2 * 1.96 / 16, abs=0.05)


def test_clopper_pearson_matches_known_values():
    # 0 of 10: upper limit 1 - 0.025^(1/10); 10 of 10: lower limit 0.025^(1/10)
    assert protocol.clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** (1 / 10)))
    assert protocol.clopper_pearson(10, 10) == (pytest.approx(0.025 ** (1 / 10)), 1.0)
    # 5 of 10 (a textbook value): 0.1871 to 0.8129
    low, high = protocol.clopper_pearson(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.1871, 0.8129)
    with pytest.raises(ValueError):
        protocol.clopper_pearson(3, 2)


def test_the_noise_floor_pools_the_other_seeds_and_leaves_out_the_candidates_seed():
    retrain_dice = {
        "a": {0: 0.50, 1: 0.52, 2: 0.54},
        "b": {0: 0.40, 1: 0.40, 2: 0.46},
    }
    floor = protocol.noise_floor(retrain_dice, seed=2)  # seeds 0 and 1 only
    # variances: a {0.50, 0.52} -> 0.0002, b {0.40, 0.40} -> 0; pooled over df 2 -> 0.0001
    assert floor["df"] == 2 and floor["m"] == 2
    assert floor["sigma"] == pytest.approx(0.01)
    assert floor["t"] == pytest.approx(4.302653, rel=1e-5)  # t(0.975, 2)
    assert floor["tau"] == pytest.approx(4.302653 * 0.01 * math.sqrt(1.5), rel=1e-5)
    # a candidate's seed is not in its reference: with one retrain left there is no spread
    assert protocol.noise_floor({"a": {0: 0.5, 1: 0.6}}, seed=0)["tau"] is None


def test_success_is_the_gap_within_the_noise_floor():
    candidate = {"s": {"dice": 0.50}, "r": {"dice": 0.8}, "h": {"dice": 0.6}}
    references = [
        {"s": {"dice": 0.52}, "r": {"dice": 0.8}, "h": {"dice": 0.5}},
        {"s": {"dice": 0.54}, "r": {"dice": 0.8}, "h": {"dice": 0.7}},
    ]
    metrics = protocol.pair_metrics(candidate, references, "s", ["r"], ["h"])
    assert metrics["forget_gap"] == pytest.approx(-0.03)  # 0.50 against the mean 0.53
    assert metrics["retain_kept_pct"] == pytest.approx(100.0)
    assert metrics["held_out_kept_pct"] == pytest.approx(100.0)  # 0.6 against the mean 0.6
    assert protocol.is_success(metrics["forget_gap"], {"tau": 0.031}) is True
    assert protocol.is_success(metrics["forget_gap"], {"tau": 0.029}) is False
    assert protocol.is_success(0.5, {"tau": None}) is None


def test_rte_is_the_mean_retrain_loop_over_the_unlearning_loop():
    assert protocol.retrain_time_efficiency([100.0, 140.0], 12.0) == pytest.approx(10.0)
    assert protocol.retrain_time_efficiency([100.0], None) is None
    assert protocol.retrain_time_efficiency([], 5.0) is None


def test_the_neurips_epsilon_and_points_at_three_models():
    # perfectly separated: epsilon at the cap, no points
    assert protocol.neurips_epsilon([3.0, 3.1, 3.2], [1.0, 1.1, 1.2]) == 50.0
    # the same distribution: no rule separates them, epsilon 0, one point
    assert protocol.neurips_epsilon([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.0
    # one of three overlaps: the best single threshold has FPR 1/3 and FNR 1/3 or better
    eps = protocol.neurips_epsilon([2.5, 3.0, 3.5], [1.0, 1.5, 2.7])
    assert eps == pytest.approx(math.log(1 - 1e-5 - 1 / 3) - math.log(1 / 3))
    assert protocol.neurips_points(0.0, 3) == 1.0
    assert protocol.neurips_points(eps, 3) == 0.5  # log 2 = 0.69 lies in [0.5, 1)
    assert protocol.neurips_points(50.0, 3) == 0.0
    # with 2 models per side the metric's formula has no bucket at all
    assert protocol.neurips_points(0.0, 2) == 0.0


def test_the_forget_score_averages_points_over_subjects_and_states_its_resolution():
    unlearned = {"a": [1.0, 2.0, 3.0], "b": [3.0, 3.1, 3.2]}
    retrained = {"a": [1.0, 2.0, 3.0], "b": [1.0, 1.1, 1.2]}
    score = protocol.forget_score(unlearned, retrained)
    assert score["score"] == pytest.approx(0.5)  # 1 point for a, 0 for b
    assert score["models"] == 3 and "{1, 0.5, 0}" in score["resolution"]
    assert protocol.forget_score({"a": [1.0, 2.0]}, {"a": [1.0, 2.0]})["score"] is None


def test_the_audit_hook_calls_the_engines_audit_against_the_subjects_references():
    # three subjects; retrains near 0.50 (seed SD 0.01), originals near 0.60: auditable
    retrained = {u: {0: 0.49, 1: 0.50, 2: 0.51} for u in ("a", "b", "c")}
    originals = {u: {0: 0.60, 1: 0.61} for u in ("a", "b", "c")}
    references, spread = protocol.audit_references("dice", retrained, originals, seed=2)
    assert references["a"].retrained == (0.49, 0.50) and references["a"].retrained_seeds == (0, 1)
    assert protocol.audit_verdict(0.495, references["a"], spread) == "forgotten"
    assert protocol.audit_verdict(0.60, references["a"], spread) == "still remembered"
    assert protocol.audit_verdict(0.30, references["a"], spread) == "over-forgotten"


def protocol_document(retrained, originals, candidates):
    """A protocol JSON's audit inputs: ``{subject: {seed: Dice}}`` for the retrains and the
    originals ("do nothing"), ``{row: {(subject, seed): Dice}}`` for the other rows."""
    seeds = sorted({k for by_seed in originals.values() for k in by_seed})
    rows = {"do nothing": {(u, k): v for u in originals for k, v in originals[u].items()}}
    rows.update(candidates)
    pairs = {
        name: [
            {"subject": u, "seed": k, "forget_dice": v, "audit": "?"} for (u, k), v in got.items()
        ]
        for name, got in rows.items()
    }
    return {
        "audit_feature": "dice",
        "seeds": seeds,
        "training_subjects": sorted(originals),
        "retrain_dice": {u: {str(j): v for j, v in d.items()} for u, d in retrained.items()},
        "rows": [{"name": name, "audit": {}} for name in rows],
        "pairs": pairs,
    }


def test_rescoring_recomputes_every_verdict_from_the_recorded_scores():
    retrained = {u: {0: 0.49, 1: 0.50, 2: 0.51} for u in ("a", "b", "c")}
    originals = {u: {0: 0.60, 1: 0.61, 2: 0.60} for u in ("a", "b", "c")}
    document = protocol_document(
        retrained, originals, {"m": {("a", 0): 0.50, ("b", 1): 0.61, ("c", 2): 0.20}}
    )
    rescored = protocol.rescore_audit(document)
    assert [p["audit"] for p in rescored["pairs"]["m"]] == [
        "forgotten", "still remembered", "over-forgotten"
    ]  # fmt: skip
    assert rescored["rows"][0]["audit"] == {"still remembered": 9}
    assert rescored["rows"][1]["audit"] == {
        "forgotten": 1, "over-forgotten": 1, "still remembered": 1
    }  # fmt: skip
    assert document["pairs"]["m"][0]["audit"] == "?"  # the input is not modified
    del originals["c"][2]
    with pytest.raises(ValueError, match="c at seed 2"):
        protocol.rescore_audit(protocol_document(retrained, originals, {}))


def test_every_committed_protocol_json_has_the_verdicts_of_todays_audit_rule():
    """A change to the audit rule must be followed by scripts/rescore_protocol_audit.py; the
    slices that do not record every input are listed, so none drops out unnoticed."""
    docs = Path(__file__).resolve().parents[1] / "docs"
    not_rescorable = []
    for path in sorted(docs.glob("benchmarks-protocol*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        try:
            rescored = protocol.rescore_audit(document)
        except ValueError:
            not_rescorable.append(path.name)
            continue
        for name, pairs in document["pairs"].items():
            got = [p["audit"] for p in rescored["pairs"][name]]
            assert [p["audit"] for p in pairs] == got, f"{path.name}, row {name}"
    rendered = load_script("render_benchmarks").render_protocol_run(
        json.loads((docs / "benchmarks-protocol-salun.json").read_text(encoding="utf-8"))
    )
    assert "re-scored on" in rendered and "rescore_protocol_audit.py" in rendered
    assert not_rescorable == [
        "benchmarks-protocol-defaults.json",  # slice: 2 subjects x 2 seeds
        "benchmarks-protocol-tuned.json",  # the tuning subject's originals are not recorded
        "benchmarks-protocol.json",  # slice: 2 subjects x 2 seeds
    ]


def small_cohort(root: Path) -> Path:
    """3 training subjects and 2 held-out, phantom-sized: the protocol's smallest input."""
    for index, subject_id in enumerate(("1", "4", "070")):
        write_phantom_subject(root / "training" / subject_id, seed=index)
    for index, subject_id in enumerate(("H01", "H02")):
        write_phantom_subject(root / "held-out" / subject_id, seed=100 + index)
    return root


def test_a_tiny_protocol_run_end_to_end(tmp_path, monkeypatch):
    """Originals and retrains through the cache, one real unlearn subprocess per seed, the
    JSON; and the renderer turns it into the protocol table."""
    monkeypatch.setenv("MACHINE_UNLEARNING_CACHE", str(tmp_path / "cache"))
    cohort = small_cohort(tmp_path / "cohort")
    out = tmp_path / "protocol.json"
    settings = [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in {**TINY_RECIPE, "epochs": 2}.items()]  # fmt: skip
    protocol.main(
        ["--cohort", str(cohort), "--subjects", "070", "--seeds", "0", "1",
         "--retrain-seeds", "0", "1", "2", "--threads", "1", "--work", str(tmp_path / "runs"),
         "--method", "nl=noisy-label --epochs 1 --eval-epochs 1",
         "--label", "tiny", "--json", str(out),
         *[word for s in settings for word in ("--set", s)]]
    )  # fmt: skip
    data = json.loads(out.read_text())
    rows = {row["name"]: row for row in data["rows"]}
    assert list(rows) == ["do nothing", "another retrain", "nl"]
    assert rows["nl"]["strategy"] == "noisy-label"
    assert rows["nl"]["options"] == ["--epochs", "1", "--eval-epochs", "1"]
    for row in rows.values():
        assert row["success"]["trials"] == 2  # one subject x two seeds
        assert sum(row["audit"].values()) == 2
        assert set(row["audit"]) <= set(VERDICTS)
    nl_pairs = data["pairs"]["nl"]
    assert all(p["loop_seconds"] > 0 and p["steps"] == 3 for p in nl_pairs)  # 1 epoch, 3 subjects
    assert rows["nl"]["rte"] > 0 and rows["do nothing"]["rte"] is None
    # "do nothing" is the original: its forget gap is what the original has over the retrains
    for p in data["pairs"]["do nothing"]:
        refs = [data["retrain_dice"]["070"][str(j)] for j in (0, 1, 2) if j != p["seed"]]
        assert p["forget_gap"] == pytest.approx(p["forget_dice"] - statistics.fmean(refs))
    # the noisy-label run changed the model: its forget Dice differs from the original's
    originals = {p["seed"]: p["forget_dice"] for p in data["pairs"]["do nothing"]}
    assert all(p["forget_dice"] != originals[p["seed"]] for p in nl_pairs)
    assert rows["do nothing"]["neurips"]["models"] == 2  # two seeds: no score at this N
    assert rows["do nothing"]["neurips"]["score"] is None

    module = load_script("render_benchmarks")
    (tmp_path / "benchmarks-protocol.json").write_text(out.read_text())
    table = module.render_protocol(tmp_path)
    assert "| nl | `noisy-label --epochs 1 --eval-epochs 1` | 2 |" in table
    assert "Against issue 11's goal" in table
