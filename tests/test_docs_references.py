"""Every document a user is pointed to lives in the repository.

A clone has only what is committed, so a README link, a ``--help`` text or a docstring that cites a
file outside the repository (``../...``, an absolute path on someone's machine, a design note that
was never committed) sends the reader nowhere. Scanned: every .py, .toml, .yaml/.yml and .md file
of the repository (this file excepted: it has to spell the patterns it looks for).
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = {".py", ".toml", ".yaml", ".yml", ".md"}
SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".hypothesis", "build", "dist"}

# A path on a developer's machine, or the design-notes folder the repository was written from.
ABSOLUTE = re.compile(r"(?<![\w.])/(?:work|home|Users|root)/")
SHARED_NOTES = re.compile(r"shared/docs|\bleakage_math\b|\bdata_leakage_joint\b")
PARENT_PATH = re.compile(r"(?:\.\./)+[\w.\-/]*")
MARKDOWN_NAME = re.compile(r"[\w.\-/]*\w\.md\b")
MARKDOWN_LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)")
SECTION_CITE = re.compile(r"\b(PHYSICS|INSTRUMENTS)\.md(?:,? sections?)? (\d+(?:\.\d+)?)")
DECISION_CITE = re.compile(r"\bDECISIONS?(?:\.md)?(?:,? items?)? ([A-Z]{1,2}(?:(?:, | and |-)[A-Z]{1,2})*)\b")


def _files() -> list[Path]:
    found = []
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        found += [Path(folder) / name for name in names if Path(name).suffix in SUFFIXES]
    return sorted(path for path in found if path != Path(__file__).resolve())


FILES = _files()


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _inside(path: Path) -> bool:
    return path.resolve().is_relative_to(ROOT)


@cache
def _markdown_names() -> frozenset[str]:
    return frozenset(path.name for path in FILES if path.suffix == ".md")


@cache
def _headings(name: str) -> frozenset[str]:
    """Section numbers of docs/<name>: '## 4. ...' gives '4', '### 4.2 ...' gives '4.2'."""
    text = (ROOT / "docs" / name).read_text(encoding="utf-8")
    return frozenset(re.findall(r"^#+ (\d+(?:\.\d+)?)\.? ", text, flags=re.M))


@cache
def _decision_letters() -> frozenset[str]:
    text = (ROOT / "docs" / "DECISIONS.md").read_text(encoding="utf-8")
    return frozenset(re.findall(r"^\| ([A-Z]{1,2}) \|", text, flags=re.M))


def _lines(path: Path):
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        yield number, line


def test_the_scan_sees_the_repository():
    names = {_id(path) for path in FILES}
    assert {"README.md", "docs/ARCHITECTURE.md", "docs/DECISIONS.md", "docs/PHYSICS.md", "pyproject.toml",
            "sequences/cli.py", "lab_config.toml"} <= names
    assert not any(name.startswith(".venv") for name in names)


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_no_reference_leaves_the_repository(path):
    problems = []
    for number, line in _lines(path):
        for pattern in (ABSOLUTE, SHARED_NOTES):
            problems += [f"{number}: {match.group(0)!r}" for match in pattern.finditer(line)]
        for match in PARENT_PATH.finditer(line):
            if not _inside(path.parent / match.group(0)):
                problems.append(f"{number}: {match.group(0)!r} points outside the repository")
        for match in MARKDOWN_NAME.finditer(line):
            name = match.group(0)
            bare = "/" not in name and name in _markdown_names()  # "PHYSICS.md": a document of the repository
            if not bare and not any(c.is_file() and _inside(c) for c in (path.parent / name, ROOT / name)):
                problems.append(f"{number}: {match.group(0)!r} is no file of the repository")
    assert not problems, f"{_id(path)}:\n" + "\n".join(problems)


MARKDOWN = [path for path in FILES if path.suffix == ".md"]


@pytest.mark.parametrize("path", MARKDOWN, ids=_id)
def test_markdown_links_resolve(path):
    problems = []
    for number, line in _lines(path):
        for match in MARKDOWN_LINK.finditer(line):
            target = match.group(1)
            if re.match(r"[a-zA-Z][\w+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same file
            resolved = path.parent / target.split("#", 1)[0]
            if target.startswith("/") or not _inside(resolved) or not resolved.exists():
                problems.append(f"{number}: ({target}) does not resolve to a file of the repository")
    assert not problems, f"{_id(path)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_cited_sections_and_decisions_exist(path):
    """'PHYSICS.md 13.2' names a heading of docs/PHYSICS.md; 'DECISIONS J' a row of docs/DECISIONS.md."""
    problems = []
    for number, line in _lines(path):
        for match in SECTION_CITE.finditer(line):
            name, section = f"{match.group(1)}.md", match.group(2)
            if section not in _headings(name):
                problems.append(f"{number}: {name} has no section {section}")
        for match in DECISION_CITE.finditer(line):
            letters = set(re.findall(r"[A-Z]{1,2}", match.group(1)))
            if match.group(1)[1:2] == "-":
                start, end = match.group(1)[0], match.group(1)[2]
                letters = {chr(c) for c in range(ord(start), ord(end) + 1)}
            missing = letters - _decision_letters()
            if missing:
                problems.append(f"{number}: DECISIONS has no item {', '.join(sorted(missing))}")
    assert not problems, f"{_id(path)}:\n" + "\n".join(problems)


def test_the_checks_can_fail(tmp_path):
    """The patterns catch what they are for (so an empty report means something)."""
    assert ABSOLUTE.search("see /work/shared/x") and not ABSOLUTE.search("see docs/x and a/work/b")
    assert SHARED_NOTES.search("see shared/docs/ARCHITECTURE.md") and SHARED_NOTES.search("leakage_math section 2")
    assert not _inside(ROOT / "README.md/../../x") and _inside(ROOT / "tests/../README.md")
    assert "paper.md" not in _markdown_names()
    assert DECISION_CITE.search("(DECISIONS B-F)").group(1) == "B-F"
    assert DECISION_CITE.search("DECISIONS ZZ") and "ZZ" not in _decision_letters()
    assert DECISION_CITE.search("(DECISIONS Y and AB)").group(1) == "Y and AB"
    assert SECTION_CITE.search("docs/PHYSICS.md section 8").groups() == ("PHYSICS", "8")
    assert MARKDOWN_LINK.search("[the card](../elsewhere/CARD.md)").group(1) == "../elsewhere/CARD.md"
