"""The documentation stays true to the code: the config reference is generated, every link lands, every command is named."""

import argparse
import re
from pathlib import Path

from conftest import REPO
from noisefloor import config_docs
from noisefloor.cli import build_parser

README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 200
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")


def pages() -> list[Path]:
    """README.md and the docs pages; docs/incoming-*.md are drafts still to be folded in."""
    return [README] + sorted(p for p in DOCS.glob("*.md") if not p.name.startswith("incoming-"))


def prose_lines(path: Path) -> list[str]:
    """The lines of a Markdown file outside fenced code blocks (a '#' in a shell comment is no heading)."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(path):
        heading = re.match(r"#{1,6} (.*)", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return found


def test_configuration_page_is_generated_from_the_config_field_descriptions():
    page = DOCS / "configuration.md"
    assert page.exists() and page.read_text() == config_docs.render(), (
        "docs/configuration.md differs from the config's field descriptions; regenerate it with "
        "`python -m noisefloor.config_docs > docs/configuration.md`")


def test_every_relative_link_in_the_readme_and_docs_resolves():
    broken = []
    for page in pages():
        for line in prose_lines(page):
            for target in LINK.findall(line):
                if re.match(r"[a-z]+:", target):
                    continue  # https:, mailto:: not ours to check offline
                file_part, _, anchor = target.partition("#")
                resolved = (page.parent / file_part).resolve() if file_part else page
                if not resolved.exists():
                    broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
                elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                    broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_checker_sees_a_broken_link_and_githubs_anchors(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# `noisefloor sweep --command`: your own trainer\n## Setup\n## Setup\n```\n# not a heading\n```\n"
                    "[a](p.md#setup-1) [b](missing.md) [`c`](p.md)\n")
    assert anchors(page) == {"noisefloor-sweep---command-your-own-trainer", "setup", "setup-1"}
    assert LINK.findall(prose_lines(page)[-1]) == ["p.md#setup-1", "missing.md", "p.md"]


def test_readme_is_short_and_names_every_command():
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, "README.md grew past a few screens: move the detail into docs/"
    (subcommands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [name for name in subcommands.choices if f"noisefloor {name}" not in text]
    assert not missing, f"README.md does not name these commands of `noisefloor --help`: {missing}"
