"""The README opens with the two commands, and CI runs the second one."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_opens_with_exactly_two_runnable_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert text.index("```bash") < text.index("\n## ")  # the first thing after the title
    commands = readme_commands()
    assert commands == ["scripts/demo.sh", "scripts/test.sh"]
    for command in commands:
        assert os.access(REPO / command, os.X_OK), command


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    steps = [
        line
        for line in ci.splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))
    ]
    assert steps[0].split()[0] == readme_commands()[1]


def test_demo_and_test_scripts_share_one_setup():
    for script in ("demo.sh", "test.sh"):
        assert "scripts/setup_env.sh" in (REPO / "scripts" / script).read_text()
    setup = (REPO / "scripts" / "setup_env.sh").read_text()
    assert "torch==2.13.0" in setup


def test_every_readme_number_has_its_command_next_to_it():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for section in re.findall(r"## Measured.*?(?=\n## |\Z)", text, re.S):
        assert "scripts/" in section or "machine-unlearning" in section


def tutorial_invocations() -> list[list[str]]:
    """Each ``machine-unlearning`` call of the README's terminal tutorial (every bash block of
    the section), as argv words (continuation lines joined, comments dropped)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    tutorial = text[text.index("## Tutorial (terminal)") :]
    tutorial = tutorial[: tutorial.index("\n## ")]
    blocks = re.findall(r"```bash\n(.*?)```", tutorial, re.S)
    joined = re.sub(r"\\\n", " ", "".join(blocks))
    calls = []
    for line in joined.splitlines():
        words = line.split("#")[0].split()
        if words[:1] == ["machine-unlearning"]:
            calls.append(words[1:])
    return calls


def test_every_tutorial_command_parses_with_the_real_cli():
    from MachineUnlearningLib.app.cli import build_parser

    calls = tutorial_invocations()
    assert len(calls) >= 6
    for argv in calls:
        build_parser().parse_args(argv)  # an unknown flag or command exits with status 2
