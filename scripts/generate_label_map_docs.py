"""Regenerate docs/label-map-cohort.md from the FreeSurfer label table (the source of truth).

Usage: .venv/bin/python scripts/generate_label_map_docs.py
"""

from pathlib import Path

from MachineUnlearningLib.data.freesurfer_labels import mapping_markdown

if __name__ == "__main__":
    target = Path(__file__).resolve().parents[1] / "docs" / "label-map-cohort.md"
    target.write_text(mapping_markdown(), encoding="utf-8")
    print(f"wrote {target}")
