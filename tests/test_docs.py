"""Every example in README.md and sample_data/EXAMPLES.md runs as written.

Code blocks are found the way Markdown shows them: indented blocks (four spaces) and
fenced blocks tagged ``bash``, ``sh``, ``shell``, ``console`` or ``python`` (fenced
blocks without a language, such as the architecture tree, are text). Every such block
runs unless the line before it says why not, as ``<!-- not run: REASON -->`` (an
excerpt, a job script for a batch scheduler). A new example is therefore tested
without anything to register.

The shell blocks of one document run in order, in one fresh directory where
``sample_data/`` is the repository's, as a newcomer following the document would run
them: later blocks use the files earlier ones wrote. ``popinfer`` is this checkout's;
``pip`` and ``pytest`` are no-ops (installing is CI's job, and the suite is running
already). Python blocks each run in a fresh directory of their own.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

DOCUMENTS = ["README.md", "sample_data/EXAMPLES.md"]
SHELL = {"bash", "sh", "shell", "console"}
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")


def code_blocks(text):
    """``(line number, language, code, reason not run or None)`` of every code block."""
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        line = lines[i]
        previous = lines[i - 1] if i else ""
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        skip = NOT_RUN.search(before)
        fence = re.match(r"^```\s*(\S*)", line)
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            language = fence.group(1).lower()
            if language in SHELL or language == "python":
                found.append((i + 1, "python" if language == "python" else "shell",
                              "\n".join(lines[i + 1:end]), skip and skip.group(1)))
            i = end + 1
            continue
        if line.startswith("    ") and not previous.strip():
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            while not lines[end - 1].strip():
                end -= 1
            found.append((i + 1, "shell", "\n".join(l[4:] for l in lines[i:end]), skip and skip.group(1)))
            i = end
            continue
        i += 1
    return found


def _environment(directory):
    """A directory with sample_data/ and a bin/ of this checkout's popinfer and no-op pip, pytest."""
    (directory / "sample_data").symlink_to(ROOT / "sample_data")
    bin_dir = directory.parent / f"{directory.name}-bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "popinfer").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m popinfer "$@"\n')
    for name in ("pip", "pytest"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "({name} $* is not run by the docs test)" >&2\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SOURCE_DATE_EPOCH="1700000000",
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def _run(block, language, code, directory, env):
    line, document = block
    command = ([sys.executable, "-"] if language == "python" else ["bash", "-euo", "pipefail", "-s"])
    done = subprocess.run(command, input=code, cwd=directory, env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0 and "Traceback" not in done.stderr and "Unexpected" not in done.stderr, (
        f"{document} line {line} failed (exit {done.returncode}):\n{code}\n--- stderr:\n{done.stderr[-3000:]}")
    return done


def test_the_block_finder_reads_markdown_as_it_renders():
    text = ("Intro\n\n    popinfer a\n        --x\n\n    popinfer b\n\n- item\n  more\n\n```\ntree/\n```\n\n"
            "<!-- not run: an excerpt -->\n```python\nx = 1\n```\n\n```bash\npopinfer c\n```\n")
    blocks = code_blocks(text)
    assert [(language, code, reason) for _, language, code, reason in blocks] == [
        ("shell", "popinfer a\n    --x\n\npopinfer b", None), ("python", "x = 1", "an excerpt"),
        ("shell", "popinfer c", None)]


def test_every_document_has_examples_and_says_why_any_is_not_run():
    for document in DOCUMENTS:
        blocks = code_blocks((ROOT / document).read_text())
        assert sum(reason is None for *_, reason in blocks) >= 4, document
        assert all(reason is None or len(reason) > 10 for *_, reason in blocks)


@pytest.mark.slow
@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_example_runs_as_written(document, tmp_path):
    shell_directory = tmp_path / "walkthrough"
    shell_directory.mkdir()
    env = _environment(shell_directory)
    ran = 0
    for line, language, code, reason in code_blocks((ROOT / document).read_text()):
        if reason is not None:
            continue
        directory = shell_directory
        if language == "python":
            directory = tmp_path / f"python-{line}"
            directory.mkdir()
            (directory / "sample_data").symlink_to(ROOT / "sample_data")
        _run((line, document), language, code, directory, env)
        ran += 1
    assert ran >= 4
