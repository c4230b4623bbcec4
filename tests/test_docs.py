"""The reference pages stay true to the repository and the CLI: every relative link in README.md and docs/ leads
to a file that exists, and every ``--option`` a page names exists in the ``--help`` of the command it belongs to.

An option belongs to the command a page documents (:data:`PAGE_COMMANDS`), unless a code span or code-block line
names another first (``edgecifar export --int8``, or a span that starts with the command: ``export --tta``).
Pages that document no command (the index, data) are checked only where a command is named.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from click.testing import CliRunner

from conftest import ROOT
from edgecifar.cli import COMMANDS, main

DOCS = ROOT / "docs"
#: The command whose options a page documents; the device pages document bench's.
PAGE_COMMANDS = {"train.md": "train", "distributed.md": "train", "export.md": "export", "bench.md": "bench",
                 "predict.md": "predict", "devices": "bench"}
#: The pages that must name options (the brief of issue 25: one page per command).
COMMAND_PAGES = ("train.md", "export.md", "bench.md", "predict.md")

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_OPTION = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9_-]*")
_NAMES = "|".join(map(re.escape, COMMANDS))
#: Where code names a command: ``edgecifar CMD`` anywhere, and a code span that starts with ``CMD`` (not a code-block
#: line: ``export VAR=...`` there is the shell's).
_COMMAND = {"block": re.compile(rf"\bedgecifar\s+({_NAMES})\b"),
            "span": re.compile(rf"(?:\bedgecifar\s+|^\s*)({_NAMES})\b")}


def markdown_files() -> list[Path]:
    """README.md and every page under docs/."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def without_code(text: str) -> str:
    """Markdown with fenced blocks dropped and inline code spans blanked: a link is only a link outside code."""
    kept, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        kept.append("" if fenced else _INLINE_CODE.sub("`code`", line))
    return "\n".join(kept)


def relative_links(text: str) -> list[str]:
    """The targets of inline and reference links that point into the repository (no scheme, not an anchor alone),
    without their anchors."""
    prose = without_code(text)
    targets = _LINK.findall(prose) + _REFERENCE.findall(prose)
    local = [t for t in targets if not _SCHEME.match(t) and not t.startswith("#")]
    return [unquote(t.split("#", 1)[0].split("?", 1)[0]) for t in local]


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """The relative links of ``page`` whose target is not a file or folder inside ``root``."""
    broken = []
    for target in relative_links(page.read_text(encoding="utf-8")):
        path = (root / target.lstrip("/")) if target.startswith("/") else (page.parent / target)
        path = path.resolve()
        if not path.is_relative_to(root.resolve()) or not path.exists():
            broken.append(target)
    return broken


def code_segments(text: str):
    """(kind, text) pieces of a page, line by line: a code-block line whole ("block"), other lines split at
    backticks into "prose" and code spans ("span")."""
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            yield "block", line
            continue
        for i, piece in enumerate(line.split("`")):
            yield "span" if i % 2 else "prose", piece


def named_options(text: str, page_command: str | None) -> set[tuple[str, str]]:
    """(command, --option) for every option a page names: in code, the command named before it in the same span or
    line, else the page's own command; in prose, the page's command (None: not attributed, not returned)."""
    found = set()
    for kind, piece in code_segments(text):
        current = page_command
        named = _COMMAND[kind].finditer(piece) if kind in _COMMAND else ()
        commands = [(m.start(), "command", m.group(1)) for m in named]
        marks = sorted(commands + [(m.start(), "option", m.group(0)) for m in _OPTION.finditer(piece)])
        for _, kind, value in marks:
            if kind == "command":
                current = value
            elif current is not None:
                found.add((current, value))
    return found


def help_options(command: str) -> set[str]:
    """The options ``edgecifar COMMAND --help`` declares (its Options section's first column)."""
    result = CliRunner().invoke(main, [command, "--help"], terminal_width=120)
    assert result.exit_code == 0, result.output
    declared = set()
    in_options = False
    for line in result.output.splitlines():
        if line.strip() == "Options:":
            in_options = True
        elif in_options and re.match(r"^  -", line):
            declared.update(_OPTION.findall(re.split(r"\s{2,}", line.strip())[0]))
    return declared


def page_command(page: Path) -> str | None:
    relative = page.relative_to(DOCS)
    return PAGE_COMMANDS.get(relative.parts[0] if len(relative.parts) > 1 else relative.name)


# --------------------------------------------------------------------------- the checks themselves

def test_the_link_check_finds_a_missing_target_and_ignores_web_links_anchors_and_code(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "here.md").write_text("x")
    page = tmp_path / "docs" / "page.md"
    page.write_text("[ok](../here.md#part) [gone](../gone.md) [web](https://example.com/x.md) [anchor](#top)\n"
                    "`[in code](nowhere.md)`\n```\n[in a block](nowhere.md)\n```\n![image](missing.png)\n"
                    "[outside](../../etc/passwd)\n[ref]: also-gone.md\n")
    assert broken_links(page, tmp_path) == ["../gone.md", "missing.png", "../../etc/passwd", "also-gone.md"]


def test_the_option_check_gives_an_option_to_the_command_named_before_it():
    text = ("Use `--epochs` here; `edgecifar export RUN --int8` and `bench --device mcu` there.\n"
            "```sh\nedgecifar train r --resume  # then\nedgecifar predict x.jpg --top 5\nexport X=1 --seed\n```\n"
            "--quiet in prose")
    assert named_options(text, "train") == {("train", "--epochs"), ("export", "--int8"), ("bench", "--device"),
                                            ("train", "--resume"), ("predict", "--top"), ("train", "--seed"),
                                            ("train", "--quiet")}
    assert named_options(text, None) == {("export", "--int8"), ("bench", "--device"), ("train", "--resume"),
                                         ("predict", "--top")}


def test_help_options_are_read_from_the_options_column_of_help():
    options = help_options("train")
    assert {"--epochs", "--whiten-stem", "--no-whiten-stem", "--worker-timeout", "--help"} <= options
    assert "--no-such-option" not in options


# --------------------------------------------------------------------------- the pages

def test_every_relative_link_in_the_readme_and_docs_points_at_a_file_in_the_repository():
    pages = markdown_files()
    assert len(pages) > 10, "docs/ has its pages"
    assert sum(len(relative_links(p.read_text(encoding="utf-8"))) for p in pages) > 50
    broken = {str(p.relative_to(ROOT)): links for p in pages if (links := broken_links(p))}
    assert broken == {}


def test_every_option_a_docs_page_names_is_in_the_help_of_its_command():
    named = {page: named_options(page.read_text(encoding="utf-8"), page_command(page))
             for page in sorted(DOCS.rglob("*.md"))}
    for name in COMMAND_PAGES:
        assert any(cmd == PAGE_COMMANDS[name] for cmd, _ in named[DOCS / name]), f"docs/{name} names no option"
    helps = {cmd: help_options(cmd) for cmd in {cmd for found in named.values() for cmd, _ in found}}
    unknown = {f"{page.relative_to(ROOT)}: edgecifar {cmd} {option}"
               for page, found in named.items() for cmd, option in found if option not in helps[cmd]}
    assert unknown == set()
