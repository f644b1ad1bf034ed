"""The repository stands alone: its code and documents cite only files it contains, and every
relative link in its Markdown leads to a file (and a heading) that exists."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Citations of notes that live outside the repository: the old method-notes file, and the shared
# folder beside the checkout. The patterns are split so that this file does not match itself.
OUTSIDE = re.compile(r"(?<![/\w])methods" + r"\.md\b|\.\./" + "shared")
MARKDOWN_LINK = re.compile(r"\]\(([^()\s]+)\)")
DOC_CITATION = re.compile(r"\bdocs/[\w./-]+?\.md(?:#[\w-]+)?")


def _files(*suffixes: str) -> list[Path]:
    """Tracked files and new ones git does not ignore: what a commit of the checkout would hold."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    paths = (ROOT / name for name in listed.split("\0") if name.endswith(suffixes))
    return sorted(p for p in paths if p.is_file())


def _prose_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Numbered lines of a Markdown file outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            yield number, line


def _anchors(path: Path) -> set[str]:
    """The fragment identifiers GitHub gives a Markdown file's headings: lower case, punctuation
    dropped, spaces as hyphens, and -1, -2, ... on repeats."""
    seen: dict[str, int] = {}
    for _, line in _prose_lines(path):
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            if count:
                seen[f"{slug}-{count}"] = 1
    return set(seen)


def _broken(target: Path, anchor: str) -> str | None:
    if not target.exists():
        return "no such file"
    if anchor and target.suffix == ".md" and anchor not in _anchors(target):
        return f"no heading #{anchor}"
    return None


def test_nothing_cites_files_outside_the_repository():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _files(".py", ".md", ".toml")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not found, "\n".join(found)


def test_relative_markdown_links_lead_somewhere():
    broken = []
    for path in _files(".md"):
        for number, line in _prose_lines(path):
            for link in MARKDOWN_LINK.findall(line):
                if re.match(r"[a-z]+:", link):  # https:, mailto:
                    continue
                file_part, _, anchor = link.partition("#")
                target = (path.parent / file_part).resolve() if file_part else path
                why = _broken(target, anchor)
                if why:
                    broken.append(f"{path.relative_to(ROOT)}:{number}: {link} ({why})")
    assert not broken, "\n".join(broken)


def test_cited_doc_pages_exist():
    broken = []
    for path in _files(".py", ".md", ".toml"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for citation in DOC_CITATION.findall(line):
                file_part, _, anchor = citation.partition("#")
                why = _broken(ROOT / file_part, anchor)
                if why:
                    broken.append(f"{path.relative_to(ROOT)}:{number}: {citation} ({why})")
    assert not broken, "\n".join(broken)


def test_anchors_are_the_ones_github_makes(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# CMI: Contrastive Model Inversion\n## What dfkd does\n```\n# a comment\n```\n"
        "## What dfkd does\n### `dfkd invert`\n"
    )
    assert _anchors(page) == {
        "cmi-contrastive-model-inversion",
        "what-dfkd-does",
        "what-dfkd-does-1",
        "dfkd-invert",
    }
