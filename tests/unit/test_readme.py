"""The README's facts: its flags table says what --help says, its links lead somewhere, and
neither it nor the docs cite documents a user does not have. (Its first command and sample
output are run by tests/integration/test_boot.py, its container recipe by test_container.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def flag_rows() -> list[tuple[list[str], str]]:
    rows = []
    for line in section(README, "Flags and defaults").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`-"):
            rows.append((re.findall(r"`(-[-\w]+)", cells[0]), cells[1]))
    return rows


def build_flags() -> dict[str, str]:
    """Each flag of `osbuilder build` and its help as --help shows it (defaults included)."""
    import argparse

    from osbuilder.cli import make_parser

    parser = make_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    build = commands.choices["build"]
    formatter = build._get_formatter()
    return {flag: " ".join(formatter._expand_help(action).split())
            for action in build._actions for flag in action.option_strings if action.help}


def test_the_flags_table_matches_help():
    helps = build_flags()
    rows = flag_rows()
    assert len(rows) >= 20
    for flags, default in rows:
        for flag in flags:
            assert flag in helps, f"{flag} is not a build flag"
        shown = helps[flags[0]]
        if default == "required":
            assert shown.endswith("(required)"), f"{flags[0]}: {shown!r}"
        elif default not in ("none", "one is required", "the recipe's", "the host's"):
            assert f"default: {default.strip('`')}" in shown, f"{flags[0]}: README says {default!r}; --help {shown!r}"
        else:  # said in the help's own words, or no default at all
            assert "default: " not in shown or default in shown, f"{flags[0]}: {shown!r}"


def test_readme_links_and_anchors_exist():
    for target in re.findall(r"\]\(([^)#\s]+)(?:#([^)\s]+))?\)", README):
        path, anchor = target
        if path.startswith("http"):
            continue
        assert (REPO / path).exists(), path
        if anchor:
            assert anchor in anchors(REPO / path), f"{path}#{anchor}"
    for anchor in re.findall(r"\]\(#([^)\s]+)\)", README):
        assert anchor in anchors(REPO / "README.md"), anchor


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", path.read_text(), re.M):
        found.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return found


@pytest.mark.parametrize("document", ["README.md", *sorted(p.relative_to(REPO).as_posix()
                                                          for p in (REPO / "docs").glob("*.md"))])
def test_no_document_cites_what_a_user_does_not_have(document):
    text = (REPO / document).read_text()
    for unavailable in ("reference section", "reference.md", "../shared", "design notes"):
        assert unavailable not in text.lower(), f"{document} cites {unavailable!r}"


def test_the_readme_keeps_what_its_readers_need_and_is_short():
    headings = re.findall(r"^## (.+)$", README, re.M)
    for needed in ("Quick start with a real agent", "Commands", "Flags and defaults", "Exit codes", "Deploying to Kata",
                   "Replacing Kata's osbuilder", "The build cache", "The builder container", "Troubleshooting"):
        assert needed in headings, needed
    assert README.count("\n") < 450
    setup_lines = [line for line in README.splitlines()[:8] if line.startswith("./setup.sh")]
    assert len(setup_lines) == 2 and setup_lines[1] == "./setup.sh && .venv/bin/pytest"


def test_the_dockerfile_gives_the_readme_s_container_recipe():
    """One recipe: every command of the README's container blocks is in the Dockerfile's comment."""
    dockerfile = (REPO / "Dockerfile").read_text()
    commented = {line[1:].strip() for line in dockerfile.splitlines() if line.startswith("#")}
    container = section(README, "The builder container")
    blocks = re.findall(r"```sh\n(.*?)```", container, re.S)
    assert len(blocks) == 2
    for block in blocks:
        for line in block.strip().splitlines():
            assert line.strip() in commented, f"the Dockerfile's comment lacks: {line}"
