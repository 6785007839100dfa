"""The deletion record: what a data-protection officer files after an unlearning run.

A record (JSON, ``record_version`` 1) says who asked (free text given by the user), which
subjects were to be forgotten, which files went in and which model came out (SHA-256 of each),
how (strategy and parameters, software versions), with what effect (set-level metrics and the
membership audit), what kind of guarantee that is, and what the record does not prove. A run
that read or wrote a MONAI bundle also names the bundle(s) and hashes every file in them.

Privacy: nothing is ever read from image files except their bytes for hashing; header fields
(e.g. NIfTI ``descrip``, ``db_name``) that may hold a patient name never enter the record.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from MachineUnlearningLib import __version__
from MachineUnlearningLib.runtime.errors import InvalidInputError
from MachineUnlearningLib.runtime.files import folder_hashes, sha256_file
from MachineUnlearningLib.runtime.options import look_up_option

RECORD_VERSION = 1
GUARANTEES: dict[str, str] = {
    "exact": (
        "Exact: the output model was trained from the original initialisation on the retained "
        "subjects only, so the listed subjects' data never entered its training (the "
        "pretrained backbone aside)."
    ),
    "approximate": (
        "Approximate: the output model was obtained by modifying a model that had been trained "
        "on the listed subjects so that it behaves like one that never saw them; their "
        "influence is reduced and audited, not provably removed."
    ),
}
NOT_PROVEN: tuple[str, ...] = (
    "The hashes identify the files that went in and the model that came out; they do not "
    "prove that the output model holds no information about the listed subjects.",
    "The record does not cover other copies of the original model, earlier checkpoints, "
    "backups, logs or predictions stored elsewhere; they must be deleted separately.",
    "If the subjects were in the data the pretrained backbone was built from (not verified "
    "for MRBrainS18), no fine-tuning-level method removes that influence.",
    "The membership audit is statistical evidence from a small cohort, not proof of absence.",
    "'requested_by' is copied as given; the record does not authenticate the requester.",
    "The record is not signed: the hashes are evidence only while the record itself is kept "
    "unaltered (file it where it cannot be edited, or hash it in turn).",
)
SOFTWARE_PACKAGES: tuple[str, ...] = ("torch", "monai", "numpy", "nibabel")


def build_deletion_record(
    *,
    job: Mapping[str, Any],
    requested_by: str,
    subject_ids: Sequence[str],
    input_checkpoint: Path,
    output_checkpoint: Path,
    cohort_files: Sequence[Path],
    cohort_root: Path,
    strategy: str,
    strategy_params: Mapping[str, Any],
    metrics_before: Mapping[str, Any],
    metrics_after: Mapping[str, Any],
    audit: Mapping[str, Any] | None,
    guarantee: str,
    forgetting_audit: Mapping[str, Any] | None = None,
    started_at: datetime | str,
    finished_at: datetime | str,
    notes: str = "",
    bundles: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Build the record (a JSON-ready dict); every listed file is hashed now.

    Args:
        job: the resolved JobSpec as a dict (``JobSpec.to_dict()``).
        requested_by: free text from the user (who asked for the deletion).
        subject_ids: the subjects forgotten.
        input_checkpoint, output_checkpoint: model files; stored as absolute paths.
        cohort_files: the data files the run actually read; each must lie under
            ``cohort_root`` and is stored relative to it (sorted).
        strategy, strategy_params: the unlearning preset and its resolved parameters.
        metrics_before, metrics_after: set-level numbers of the original and unlearned model.
        audit: ``AuditReport.to_dict()`` of the unlearned model (the secondary check against
            never-seen subjects), or None if not run.
        forgetting_audit: the audit against the forget subject's own references
            (``commands/unlearn_checks.record_entry``): its verdict, the cache keys of the reference
            models, the margin, the TOST p-value and the number of looks; ``{"verdict": None,
            "reason": ...}`` when no references existed; None for runs that do not unlearn.
        guarantee: ``exact`` (retrain from scratch) or ``approximate`` (everything else).
        started_at, finished_at: datetimes (naive ones are taken as local time and converted
            to UTC) or ISO 8601 strings, stored as given.
        notes: free text.
        bundles: for a run that read / wrote MONAI bundles, ``{"input": {...}, "output":
            {...}}``, each with at least ``name``, ``version`` and ``root`` (the folder);
            every file under each ``root`` is hashed now (``files``).

    Raises InvalidInputError for a missing file, a cohort file outside ``cohort_root`` or an
    unknown guarantee. Non-finite numbers become null.
    """
    guarantee = look_up_option(guarantee, tuple(GUARANTEES), "guarantee")
    root = Path(cohort_root).resolve()
    record = {
        "record_version": RECORD_VERSION,
        "record_id": str(uuid.uuid4()),
        "created": _utc_iso(datetime.now(timezone.utc)),
        "request": {
            "requested_by": str(requested_by),
            "subject_ids": [str(s) for s in subject_ids],
            "notes": str(notes),
        },
        "when": {"started_at": _iso(started_at), "finished_at": _iso(finished_at)},
        "job": dict(job),
        "checkpoints": {
            "input": _file_entry(Path(input_checkpoint).resolve(), "input_checkpoint"),
            "output": _file_entry(Path(output_checkpoint).resolve(), "output_checkpoint"),
        },
        "cohort": {"root": str(root), "files": _cohort_entries(cohort_files, root)},
        **(
            {"bundles": {which: _bundle_entry(which, entry) for which, entry in bundles.items()}}
            if bundles
            else {}
        ),
        "strategy": {"name": str(strategy), "params": dict(strategy_params)},
        "software": software_versions(),
        "metrics": {"before": dict(metrics_before), "after": dict(metrics_after)},
        "forgetting_audit": None if forgetting_audit is None else dict(forgetting_audit),
        "audit": None if audit is None else dict(audit),
        "guarantee": {"kind": guarantee, "meaning": GUARANTEES[guarantee]},
        "does_not_prove": list(NOT_PROVEN),
    }
    return _json_safe(record)


def software_versions() -> dict[str, Any]:
    """Python, platform and installed package versions (missing: None; nothing is imported)."""
    packages: dict[str, str | None] = {}
    for name in SOFTWARE_PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine_unlearning": __version__,
        "packages": packages,
    }


def write_record(record: Mapping[str, Any], path: Path | str) -> Path:
    """Write ``record`` as JSON atomically (temp file, fsync, rename); never overwrite.

    Raises InvalidInputError if ``path`` exists: a deletion record is evidence and is kept.
    """
    path = Path(path)
    if path.exists():
        raise InvalidInputError(
            f"record: {path} already exists; a deletion record is never overwritten.",
            hint="Choose another file name or output folder.",
        )
    text = json.dumps(record, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        if path.exists():  # created meanwhile by someone else
            raise InvalidInputError(f"record: {path} appeared while writing; not overwritten.")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


@dataclass(frozen=True)
class FileCheck:
    """One file of a record, re-hashed: ``status`` is ``ok``, ``mismatch`` or ``missing``."""

    kind: str
    name: str
    path: str
    expected: str
    actual: str | None
    status: str


@dataclass(frozen=True)
class VerificationResult:
    """The outcome of :func:`verify_record`; ``ok`` only if every file matched."""

    record_path: str
    record_id: str
    checks: tuple[FileCheck, ...]

    @property
    def ok(self) -> bool:
        return all(c.status == "ok" for c in self.checks)

    @property
    def problems(self) -> tuple[FileCheck, ...]:
        return tuple(c for c in self.checks if c.status != "ok")

    def to_text(self) -> str:
        lines = [f"Deletion record {self.record_id} ({self.record_path})"]
        for c in self.checks:
            detail = ""
            if c.status == "mismatch":
                detail = f" (expected {c.expected[:12]}..., found {c.actual[:12]}...)"
            lines.append(f"  {c.status.upper():8} {c.kind}: {c.name}{detail}")
        bad = len(self.problems)
        verdict = (
            f"OK: all {len(self.checks)} files match their recorded SHA-256."
            if not bad
            else f"FAILED: {bad} of {len(self.checks)} files are missing or changed."
        )
        return "\n".join([*lines, verdict]) + "\n"


def verify_record(path: Path | str, base_dir: Path | str | None = None) -> VerificationResult:
    """Re-hash every file a record lists and report each missing or changed file by name.

    Cohort files (stored relative) are resolved against the stored cohort root, or against
    ``base_dir`` if given (the cohort has moved); checkpoints against their stored absolute
    paths.
    """
    record = load_record(path)
    try:
        root = Path(base_dir) if base_dir is not None else Path(record["cohort"]["root"])
        targets = [
            (f"{which} checkpoint", entry["path"], Path(entry["path"]), entry["sha256"])
            for which, entry in record["checkpoints"].items()
        ]
        targets += [
            ("cohort file", entry["path"], root / entry["path"], entry["sha256"])
            for entry in record["cohort"]["files"]
        ]
        for which, bundle in (record.get("bundles") or {}).items():
            targets += [
                (
                    f"{which} bundle file",
                    f"{bundle['name']}/{entry['path']}",
                    Path(bundle["root"]) / entry["path"],
                    entry["sha256"],
                )
                for entry in bundle["files"]
            ]
    except (KeyError, TypeError) as exc:
        raise InvalidInputError(f"record: {path} lacks a file entry field ({exc}).") from None
    checks = []
    for kind, name, file, expected in targets:
        actual = sha256_file(file) if file.is_file() else None
        status = "missing" if actual is None else ("ok" if actual == expected else "mismatch")
        checks.append(FileCheck(kind, name, str(file), expected, actual, status))
    return VerificationResult(str(path), str(record.get("record_id", "")), tuple(checks))


def load_record(path: Path | str) -> dict[str, Any]:
    """Read a record; raises InvalidInputError if it is unreadable or not a version-1 record."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError(f"record: {path} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"record: {path} is not valid JSON ({exc}).") from None
    if not isinstance(record, dict) or record.get("record_version") != RECORD_VERSION:
        raise InvalidInputError(
            f"record_version: {path} is not a version-{RECORD_VERSION} deletion record.",
            hint="Pass a deletion-record.json written by this engine.",
        )
    for key in ("checkpoints", "cohort"):
        if not isinstance(record.get(key), dict):
            raise InvalidInputError(f"{key}: missing from the record {path}.")
    return record


def record_to_markdown(record: Mapping[str, Any]) -> str:
    """A human-readable section: who/what/when, guarantee, audit verdict and the hashes.

    Written in the Markdown subset of ``report.markdown_to_html`` (tables, lists, ``###``
    headings, `code`, **bold**) and without a top heading, for
    ``write_report(..., extra_sections=[("Deletion record", record_to_markdown(record))])``.
    Free text is kept on one line with pipes escaped; HTML escaping is the renderer's job.
    """
    req, when, strat = record["request"], record["when"], record["strategy"]
    audit = record.get("audit") or {}
    files = [(f"{k} checkpoint", v) for k, v in record["checkpoints"].items()]
    files += [("cohort", f) for f in record["cohort"]["files"]]
    bundles = record.get("bundles") or {}
    for which, bundle in bundles.items():
        files += [
            (f"{which} bundle", {**f, "path": f"{bundle['root']}/{f['path']}"})
            for f in bundle["files"]
        ]
    lines = [
        "| field | value |",
        "|---|---|",
        f"| record id | {_md(record['record_id'])} |",
        f"| requested by | {_md(req['requested_by']) or '(not given)'} |",
        f"| subjects forgotten | {_md(', '.join(req['subject_ids']))} |",
        f"| started / finished | {_md(when['started_at'])} / {_md(when['finished_at'])} |",
        f"| record created | {_md(record['created'])} |",
        f"| strategy | {_md(strat['name'])} {_md(json.dumps(strat['params'], sort_keys=True))} |",
        f"| guarantee | **{_md(record['guarantee']['kind'])}** |",
        f"| forgetting verdict (against retrained models) | "
        f"{_md(_forgetting_line(record.get('forgetting_audit')))} |",
        f"| held-out comparison (secondary) | {_md(_audit_line(audit))} |",
    ]
    for which, bundle in bundles.items():
        version = f" {bundle.get('version')}" if bundle.get("version") else ""
        lines.append(
            f"| {which} bundle | {_md(bundle['name'])}{_md(version)} ({_md(bundle['root'])}, "
            f"{len(bundle['files'])} files) |"
        )
    if req.get("notes"):
        lines.append(f"| notes | {_md(req['notes'])} |")
    lines += ["", _md(record["guarantee"]["meaning"]), "", "### Files (SHA-256)", ""]
    lines += ["| file | SHA-256 (first 12) |", "|---|---|"]
    lines += [f"| {_md(k)}: {_md(f['path'])} | `{f['sha256'][:12]}` |" for k, f in files]
    lines += ["", "### Full SHA-256 hashes", ""]
    lines += [f"- {_md(f['path'])}: `{f['sha256']}`" for _, f in files]
    lines += ["", "### What this record does not prove", ""]
    lines += [f"- {_md(s)}" for s in record["does_not_prove"]]
    return "\n".join(lines) + "\n"


def forgetting_summary(document: Mapping[str, Any] | None) -> str:
    """One plain sentence from a run's ``reference-audit.json`` (None: the file is missing)."""
    if not document:
        return "Forgetting audit: not run (no reference-audit.json in the run folder)."
    if document.get("method") == "none" or document.get("verdict") is None:
        return f"Forgetting audit: not run: {document.get('reason', 'no references')}."
    unlearned = document.get("unlearned") or {}
    text = (
        f"Forgetting audit of {document.get('subject')} against models retrained without it: "
        f"{str(document['verdict']).upper()} (equivalence test p = "
        f"{unlearned.get('p_equivalence', float('nan')):.3g}, margin "
        f"{unlearned.get('margin_sds')} seed-SDs, gap {unlearned.get('gap_sds', float('nan')):+.1f}"
        " SD)"
    )
    original = document.get("original")
    if original:
        text += f"; doing nothing: {original.get('verdict')}"
    return text + "."


def _forgetting_line(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "not run"
    if entry.get("verdict") is None:
        return f"not run: {entry.get('reason', 'no references')}"
    looks = entry.get("looks", {})
    refs = entry.get("references", {})
    return (
        f"**{entry['verdict']}** ({entry.get('subject')}, {entry.get('feature')}; margin "
        f"{entry.get('margin_sds')} seed-SDs = {entry.get('margin', float('nan')):.4g}; TOST p "
        f"{entry.get('p_equivalence', float('nan')):.3g}; looks: certification "
        f"{looks.get('certification')}, selection {looks.get('selection')}; references: "
        f"retrains {', '.join(refs.get('retrained', []))}; originals "
        f"{', '.join(refs.get('originals', []))})"
    )


def _audit_line(audit: Mapping[str, Any]) -> str:
    if not audit:
        return "not run"
    parts = [f"{audit.get('overall', 'n/a')} (feature {audit.get('feature', '?')})"]
    for v in audit.get("forget_verdicts", []):
        parts.append(f"{v.get('subject_id')}: {v.get('verdict')}")
    return "; ".join(parts)


def _md(text: Any) -> str:
    """Free text for a Markdown table cell or list item: one line, pipes escaped."""
    return " ".join(str(text).splitlines()).replace("|", "\\|")


def _file_entry(path: Path, field: str) -> dict[str, Any]:
    if not path.is_file():
        raise InvalidInputError(f"{field}: {path} does not exist or is not a file.")
    return {"path": str(path), "sha256": sha256_file(path), "size_bytes": path.stat().st_size}


def _bundle_entry(which: str, bundle: Mapping[str, Any]) -> dict[str, Any]:
    folder = Path(bundle["root"]).resolve()
    if not folder.is_dir():
        raise InvalidInputError(f"bundles.{which}: {folder} is not a folder.")
    return {**dict(bundle), "root": str(folder), "files": folder_hashes(folder)}


def _cohort_entries(files: Sequence[Path], root: Path) -> list[dict[str, Any]]:
    entries = {}
    for file in files:
        resolved = Path(file).resolve()
        try:
            rel = resolved.relative_to(root).as_posix()
        except ValueError:
            raise InvalidInputError(
                f"cohort_files: {file} is not under the cohort root {root}.",
                hint="List only files of the cohort the run read.",
            ) from None
        entries[rel] = {**_file_entry(resolved, "cohort_files"), "path": rel}
    return [entries[k] for k in sorted(entries)]


def _iso(moment: datetime | str) -> str:
    return moment if isinstance(moment, str) else _utc_iso(moment)


def _utc_iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _json_safe(value: Any) -> Any:
    """Plain JSON types: dict keys to str, tuples to lists, paths to str, NaN/inf to None."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalar
        return _json_safe(value.item())
    return str(value)


def _fsync_dir(directory: Path) -> None:
    if sys.platform.startswith("win"):
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
