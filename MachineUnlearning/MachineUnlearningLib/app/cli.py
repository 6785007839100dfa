"""The ``machine-unlearning`` command line (also ``python -m MachineUnlearningLib``).

Run commands take flags or ``--job job.json``; ``--events`` switches the output to one JSON
event per line (what the Slicer module reads). Heavy libraries are imported only once a command
runs, so ``--help`` is instant. Exit codes: 0 ok, 1 failure, 2 invalid input, 3 cancelled,
4 out of memory.

``torchrun --nproc_per_node=N -m MachineUnlearningLib train|retrain|unlearn ...`` runs one
command on N processes (``training/distributed.py``); every process but rank 0 is silent (no
events, no progress), except that an error or a crash is still printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from MachineUnlearningLib.runtime.errors import EXIT_FAILURE, MachineUnlearningError
from MachineUnlearningLib.runtime.events import (
    STATUS_BY_EXIT_CODE,
    EventSink,
    HumanSink,
    JsonLinesSink,
)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--job", type=Path, help="read the whole job from this JSON file")
    parser.add_argument("--cohort", help="cohort root (holds training/ and held-out/)")
    parser.add_argument("--output", help="output folder (created; never overwritten)")
    parser.add_argument("--checkpoint", help="input model (read only)")
    parser.add_argument(
        "--bundle",
        metavar="DIR",
        help="a MONAI bundle folder as the model, instead of --checkpoint (read only; "
        "docs/bring-your-own-model.md)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (0)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (auto)")
    parser.add_argument("--epochs", type=int, help="epochs (default: the recipe's/strategy's)")
    parser.add_argument("--learning-rate", type=float, help="learning rate (default: recipe's)")
    parser.add_argument("--events", action="store_true", help="print JSON events, one per line")
    parser.add_argument(
        "--cancel-file", help="stop cleanly once this file exists (default: OUTPUT/CANCEL)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe override, e.g. --set input_size=32,96,96 --set base_width=8",
    )


def _add_roles(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--forget", nargs="+", default=[], metavar="ID", help="subject id(s) to forget, e.g. 070"
    )
    parser.add_argument(
        "--retain",
        nargs="+",
        metavar="ID",
        help="retain ids (default: every other training subject)",
    )
    parser.add_argument(
        "--held-out",
        nargs="+",
        metavar="ID",
        help="held-out ids (default: every subject under held-out/)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="machine-unlearning",
        description="Subject-level machine unlearning for 3D brain-MRI segmentation models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    cohort = sub.add_parser(
        "make-cohort",
        help="write a synthetic MRBrainS18-layout cohort (the MNI demo cohort, or one "
        "from real FreeSurfer label maps with --label-maps)",
    )
    cohort.add_argument("--out", required=True, type=Path, help="cohort folder to create")
    cohort.add_argument("--seed", type=int, default=0, help="generator seed (0)")
    cohort.add_argument(
        "--held-out",
        type=int,
        default=None,
        help="number of held-out subjects (MNI cohort: 0; --label-maps: every map after "
        "the first 7)",
    )
    cohort.add_argument(
        "--label-maps",
        type=Path,
        metavar="DIR",
        help="folder of FreeSurfer-numbered whole-head label maps (.nii.gz); the first 7 "
        "by file name become the training subjects (README: 'A cohort from real anatomies')",
    )

    train = sub.add_parser("train", help="train a baseline on every training subject")
    _add_common(train)
    _add_roles(train)
    train.add_argument(
        "--recipe", default="cpu-demo", help="cpu-demo | bench | medicalnet (cpu-demo)"
    )

    retrain = sub.add_parser("retrain", help="retrain from scratch without the forget subjects")
    _add_common(retrain)
    _add_roles(retrain)
    retrain.add_argument(
        "--recipe", default="cpu-demo", help="cpu-demo | bench | medicalnet (cpu-demo)"
    )

    evaluate = sub.add_parser("evaluate", help="score a model; writes metrics.json")
    _add_common(evaluate)
    _add_roles(evaluate)

    unlearn = sub.add_parser("unlearn", help="make a model forget subjects")
    _add_common(unlearn)
    _add_roles(unlearn)
    unlearn.add_argument(
        "--strategy",
        default="noisy-label",
        help="preset (noisy-label); see 'machine-unlearning strategies'",
    )
    unlearn.add_argument("--fix-decoder", action="store_true", help="freeze the decoder")
    unlearn.add_argument(
        "--eval-epochs",
        nargs="+",
        type=int,
        metavar="N",
        help="evaluate after these epochs (default: 20 50)",
    )
    unlearn.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="strategy parameter, e.g. --param retain_weight=0.5",
    )
    unlearn.add_argument("--requested-by", default="", help="who asked, for the deletion record")

    unlearn.add_argument(
        "--stop-when-indistinguishable",
        action="store_true",
        help="evaluate every epoch; with the forget subject's references: stop at the first "
        "epoch within the target band of the first reference seed's retrain (else rewind to "
        "the closest), then certify once with the other seeds; without references: stop once "
        "it is indistinguishable from held-out subjects (needs >= 2 held-out)",
    )
    unlearn.add_argument(
        "--stop-retain-tolerance",
        type=float,
        default=0.05,
        metavar="FRACTION",
        help="with --stop-when-indistinguishable: stop only while retain Dice keeps >= "
        "(1 - FRACTION) of the original's (0.05)",
    )

    unlearn.add_argument(
        "--reference",
        metavar="auto|PATH",
        help="compare with the retrain-from-scratch reference: 'auto' retrains "
        "(cached per cohort, forget set and recipe) or give its checkpoint",
    )

    audit = sub.add_parser("audit", help="membership-inference audit of a model")
    _add_common(audit)
    _add_roles(audit)
    for parser_ in (unlearn, audit):
        parser_.add_argument(
            "--references",
            choices=("cached", "auto", "none"),
            default="cached",
            help="audit each forget subject against its own leave-one-out retrains and the "
            "originals from the retrain cache: 'cached' uses what is there (never trains), "
            "'auto' trains what is missing (one model per seed each, cost printed first), "
            "'none' skips it (cached)",
        )
        parser_.add_argument(
            "--reference-seeds",
            nargs="+",
            type=int,
            default=[0, 1, 2],
            metavar="SEED",
            help="seeds of the reference ensemble (0 1 2)",
        )

    verify = sub.add_parser("verify-record", help="re-hash the files of a deletion record")
    verify.add_argument("record", type=Path, help="deletion-record.json")
    verify.add_argument("--base-dir", type=Path, help="where the cohort lives now, if moved")

    sub.add_parser("strategies", help="list the unlearning presets and their parameters")

    # Questions the Slicer module asks in the background (app/queries.py): one JSON document.
    sub.add_parser("devices", help="list the CUDA GPUs torch sees, with free memory (JSON)")
    describe = sub.add_parser(
        "describe-checkpoint", help="architecture, labels and trained-on subjects of a model (JSON)"
    )
    describe.add_argument("checkpoint", type=Path, help="the model file (read only)")

    demo = sub.add_parser("demo", help="the end-to-end demo on the synthetic cohort")
    demo.add_argument(
        "--output",
        type=Path,
        default=Path("demo-output"),
        help="folder for the cohort, the cached baseline and the run (demo-output)",
    )
    demo.add_argument("--device", default="auto", help="auto | cpu | cuda (auto)")
    demo.add_argument("--events", action="store_true", help="print JSON events, one per line")
    demo.add_argument(
        "--references",
        choices=("cached", "auto", "none"),
        default="cached",
        help="the forgetting audit's reference models: 'cached' uses what the retrain cache "
        "holds (a fresh machine has none: the audit then says it did not run), 'auto' trains "
        "the forget subject's missing ones first (cost printed first), 'none' skips it (cached)",
    )
    return parser


def parse_value(text: str):
    """``3`` -> 3, ``0.5`` -> 0.5, ``true`` -> True, ``a,b`` -> list, else the string."""
    if "," in text:
        return [parse_value(part) for part in text.split(",") if part]
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _key_values(items: list[str], flag: str) -> dict:
    from MachineUnlearningLib.runtime.errors import InvalidInputError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"{flag}: expected KEY=VALUE, got {item!r}.")
        out[key.strip()] = parse_value(value.strip())
    return out


def job_from_args(args: argparse.Namespace):
    """A JobSpec from ``--job`` or from flags (flags name the same fields)."""
    from MachineUnlearningLib.runtime.errors import InvalidInputError
    from MachineUnlearningLib.runtime.jobs import JobSpec

    if args.job:
        job = JobSpec.from_file(args.job)
        if job.command != args.command:
            raise InvalidInputError(
                f"command: the job file says {job.command!r} but the command is {args.command!r}."
            )
        return job
    for name in ("cohort", "output"):
        if not getattr(args, name):
            raise InvalidInputError(f"{name}: --{name} is required (or pass --job).")
    config = _key_values(args.set, "--set")
    if getattr(args, "recipe", None):
        config["recipe"] = args.recipe
    return JobSpec(
        command=args.command,
        cohort=args.cohort,
        output=args.output,
        checkpoint=args.checkpoint,
        forget_ids=list(args.forget),
        retain_ids=args.retain,
        held_out_ids=args.held_out,
        strategy=getattr(args, "strategy", "noisy-label"),
        fix_decoder=getattr(args, "fix_decoder", False),
        strategy_params=_key_values(getattr(args, "param", []), "--param"),
        epochs=args.epochs,
        eval_epochs=getattr(args, "eval_epochs", None),
        learning_rate=args.learning_rate,
        seed=args.seed,
        device=args.device,
        config=config,
        cancel_file=args.cancel_file,
        requested_by=getattr(args, "requested_by", ""),
        stop_when_indistinguishable=getattr(args, "stop_when_indistinguishable", False),
        stop_retain_tolerance=getattr(args, "stop_retain_tolerance", 0.05),
        reference=getattr(args, "reference", None),
        bundle=args.bundle,
        references=getattr(args, "references", "cached"),
        reference_seeds=getattr(args, "reference_seeds", [0, 1, 2]),
    )


def _run(args: argparse.Namespace, sink: EventSink) -> dict:
    if args.command == "make-cohort":
        return _make_cohort(args)
    if args.command == "strategies":
        from MachineUnlearningLib.strategies import describe_strategies

        print(describe_strategies())
        return {}
    if args.command in QUERY_COMMANDS:
        return _answer_query(args)
    if args.command == "verify-record":
        from MachineUnlearningLib.outputs.record import verify_record
        from MachineUnlearningLib.runtime.errors import InvalidInputError

        result = verify_record(args.record, base_dir=args.base_dir)
        print(result.to_text())
        if not result.ok:
            raise InvalidInputError(
                f"verify-record: {len(result.problems)} file(s) do not match {args.record}.",
                hint="A listed file was changed or removed after the record was written.",
            )
        return {"record": str(args.record)}
    if args.command == "demo":
        from MachineUnlearningLib.commands.demo import run_demo

        return run_demo(args.output, args.device, sink, args.references)
    from MachineUnlearningLib.commands import run_job

    job = job_from_args(args)
    if _process_rank() is not None and job.command not in DISTRIBUTED_COMMANDS:
        from MachineUnlearningLib.runtime.errors import InvalidInputError

        raise InvalidInputError(
            f"{job.command}: runs in one process; torchrun runs "
            f"{', '.join(DISTRIBUTED_COMMANDS)} only.",
            hint=f"Run 'machine-unlearning {job.command} ...' without torchrun.",
        )
    if _process_rank() is None:
        sink.emit("started", command=job.command, job=job.to_dict())
        return run_job(job, sink)
    from MachineUnlearningLib.training import distributed

    with distributed.session(job.device):
        sink.emit("started", command=job.command, job=job.to_dict())
        return run_job(job, sink)


DISTRIBUTED_COMMANDS = ("train", "retrain", "unlearn")


class SilentSink:
    """The sink of every torchrun process but rank 0: rank 0 alone reports progress, metrics
    and outputs; an error is still printed (one line, with the rank), because torchrun stops
    every process as soon as one fails, possibly before rank 0 has printed its own."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def emit(self, event: str, **fields) -> None:
        if event == "error":
            print(f"error (rank {self.rank}): {fields.get('message')}", file=sys.stderr)


def _process_rank() -> int | None:
    """This process's rank in a multi-process run (torchrun's ``RANK`` / ``WORLD_SIZE``, or a
    process group the caller set up already); None in a plain one-process run."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
        return int(os.environ["RANK"])
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            return dist.get_rank()
    return None


def _make_cohort(args: argparse.Namespace) -> dict:
    """``make-cohort``: the MNI demo cohort, or with ``--label-maps`` the label-map cohort."""
    if args.label_maps is not None:
        from MachineUnlearningLib.data.label_map_cohort import SIDECAR_FILE, make_label_map_cohort

        subjects = make_label_map_cohort(
            args.label_maps, args.out, seed=args.seed, held_out=args.held_out
        )
        print(
            f"wrote {len(subjects)} subjects to {args.out} (which file became which id: "
            f"{args.out / SIDECAR_FILE})",
            file=sys.stderr,
        )
        return {"cohort": str(args.out)}
    from MachineUnlearningLib.data.synthetic import make_cohort

    held_out = 0 if args.held_out is None else args.held_out
    subjects = make_cohort(args.out, seed=args.seed, held_out=held_out)
    print(f"wrote {len(subjects)} subjects to {args.out}", file=sys.stderr)
    return {"cohort": str(args.out)}


QUERY_COMMANDS = ("devices", "describe-checkpoint")


def _answer_query(args: argparse.Namespace) -> dict:
    """Print the answer of a query command as one JSON line on stdout."""
    import json

    if args.command == "devices":
        from MachineUnlearningLib.runtime.gpus import list_gpus

        answer = {"gpus": list_gpus()}
    else:
        from MachineUnlearningLib.model.summary import describe_checkpoint

        answer = {"checkpoint": describe_checkpoint(args.checkpoint)}
    print(json.dumps(answer), flush=True)
    return {}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    events = getattr(args, "events", False)
    sink: EventSink = JsonLinesSink(sys.stdout) if events else HumanSink(sys.stderr)
    rank = _process_rank() or 0
    if rank != 0:
        sink = SilentSink(rank)
    try:
        outputs = _run(args, sink)
    except MachineUnlearningError as exc:
        code = exc.exit_code
        sink.emit("error", message=exc.message, hint=exc.hint, exit_code=code)
        sink.emit("finished", status=STATUS_BY_EXIT_CODE[code], exit_code=code, outputs={})
        return code
    except KeyboardInterrupt:
        sink.emit("finished", status="cancelled", exit_code=3, outputs={})
        return 3
    except Exception as exc:  # the last resort: report, never a bare traceback only
        traceback.print_exc(file=sys.stderr)
        sink.emit(
            "error",
            message=f"{type(exc).__name__}: {exc}",
            hint="An internal error; the traceback is above. Please report it.",
            exit_code=EXIT_FAILURE,
        )
        sink.emit("finished", status="failed", exit_code=EXIT_FAILURE, outputs={})
        return EXIT_FAILURE
    if args.command not in ("strategies", *QUERY_COMMANDS):
        sink.emit("finished", status="ok", exit_code=0, outputs=outputs, resources=resource_usage())
    return 0


def resource_usage() -> dict:
    """Peak memory of this process: resident (MiB, Linux/macOS) and CUDA allocated if used."""
    usage: dict = {}
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        usage["peak_rss_mib"] = round(peak / (2**20 if sys.platform == "darwin" else 1024), 1)
    except ImportError:  # Windows
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        usage["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return usage


if __name__ == "__main__":
    sys.exit(main())
