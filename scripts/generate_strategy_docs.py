"""Regenerate docs/strategies.md from the strategy registry (the single source of truth).

Usage: .venv/bin/python scripts/generate_strategy_docs.py
"""

from pathlib import Path

from MachineUnlearningLib.strategies import strategies_markdown

if __name__ == "__main__":
    target = Path(__file__).resolve().parents[1] / "docs" / "strategies.md"
    target.write_text(strategies_markdown(), encoding="utf-8")
    print(f"wrote {target}")
