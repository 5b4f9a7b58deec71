"""The README and the runbook stay true: every setting documented, every command they name real."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main

from invoiceiq.cli import app
from invoiceiq.config import Settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, ROOT / "docs" / "RUNBOOK.md", ROOT / "docs" / "TESTING_CHECKLIST.md"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Inline code and fenced blocks: where the docs spell out commands to run.
_CODE = re.compile(r"```[a-z]*\n(.*?)```|`([^`\n]+)`", re.DOTALL)
# `invoiceiq` then its sub-command words (lower case); arguments and options follow.
_COMMAND = re.compile(r"\binvoiceiq((?: [a-z][a-z-]*)+)((?: [^\s`\"']+)*)")
_MAKE = re.compile(r"\bmake ([a-z]+)\b")


def code_in(path: Path) -> list[str]:
    return [block or span for block, span in _CODE.findall(path.read_text())]


def commands_in(path: Path) -> list[tuple[list[str], list[str]]]:
    """(sub-command path, options) of every `invoiceiq …` command the document shows."""
    found = []
    for code in code_in(path):
        for words, rest in _COMMAND.findall(code):
            tokens = [token.strip("[]").split("=")[0] for token in rest.split()]
            options = [token for token in tokens if token.startswith("--")]
            found.append((words.split(), options))
    return found


def resolve(path: list[str]) -> Any:
    """The command at `path`; words past a leaf command are its arguments.

    Typer's groups are not click's own classes, so a group is whatever has sub-commands.
    """
    command: Any = typer.main.get_command(app)
    for word in path:
        if not hasattr(command, "commands"):
            break
        sub = command.commands.get(word)
        assert sub is not None, f"`invoiceiq {' '.join(path)}`: no command {word!r}"
        command = sub
    assert not hasattr(command, "commands"), f"`invoiceiq {' '.join(path)}` is incomplete"
    return command


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_every_invoiceiq_command_in_the_docs_exists_with_its_options(doc: Path) -> None:
    commands = commands_in(doc)
    assert commands or doc.name == "TESTING_CHECKLIST.md"
    for path, options in commands:
        command = resolve(path)
        known = {name for param in command.params for name in param.opts + param.secondary_opts}
        unknown = set(options) - known - {"--help"}
        assert not unknown, f"`invoiceiq {' '.join(path)}` has no option {sorted(unknown)}"


def test_a_wrong_command_would_be_caught() -> None:
    with pytest.raises(AssertionError, match="no command 'requeue'"):
        resolve(["outbox", "requeue"])


def test_the_readme_gives_the_two_quick_start_commands() -> None:
    text = README.read_text()
    assert "```sh\nmake run\n```" in text
    assert "```sh\nmake test\n```" in text


def test_every_make_target_the_docs_name_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = {match for match in re.findall(r"^([a-z]+):", makefile, re.MULTILINE)}
    for doc in DOCS:
        named = {target for code in code_in(doc) for target in _MAKE.findall(code)}
        assert named <= targets, f"{doc.name} names missing make targets {named - targets}"


def test_the_configuration_table_lists_every_setting() -> None:
    text = README.read_text()
    rows = set(re.findall(r"^\| `([A-Z_]+)` \|", text, re.MULTILINE))
    assert rows == {name.upper() for name in Settings.model_fields}


def test_the_readme_shows_the_simulator_screenshot() -> None:
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README.read_text())
    assert "docs/images/simulator.png" in images
    for image in images:
        assert (ROOT / image).read_bytes().startswith(PNG_SIGNATURE), image


def test_the_readme_keeps_a_performance_section_fed_by_make_bench() -> None:
    text = README.read_text()
    section = text.split("\n## Performance\n", 1)[1].split("\n## ", 1)[0]
    assert "`make bench`" in section


def test_the_readme_explains_going_live() -> None:
    text = README.read_text()
    going_live = text.split("\n## Going live\n", 1)[1]
    for needed in (
        "invoiceiq whatsapp register-webhook",
        "src/invoiceiq/templates/*.json",
        "{BASE_URL}/payments/stk/callback/{MPESA_CALLBACK_SECRET}",
        "MPESA_TRANSACTION_TYPE=CustomerBuyGoodsOnline",
        "MPESA_PARTY_B",
        "settlement model",
        "PostgreSQL",
    ):
        assert needed in going_live, needed


CHECKLIST = ROOT / "docs" / "TESTING_CHECKLIST.md"
_TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def checklist_items() -> list[str]:
    """Each `- [ ]` item with its continuation lines."""
    items: list[str] = []
    for line in CHECKLIST.read_text().splitlines():
        if line.startswith("- [ ]"):
            items.append(line)
        elif items and line.startswith("  "):
            items[-1] += "\n" + line
    return items


def test_every_checklist_item_names_its_test_or_says_it_has_none() -> None:
    items = checklist_items()
    assert len(items) > 40
    for item in items:
        assert "Automated:" in item or "Not automated" in item or "not automated" in item, item


def test_every_test_the_checklist_names_exists() -> None:
    references = _TEST_REFERENCE.findall(CHECKLIST.read_text())
    assert len(references) > 40
    missing = [
        f"{path}::{name}"
        for path, name in references
        if not (ROOT / path).exists()
        or not re.search(rf"^(async )?def {name}\(", (ROOT / path).read_text(), re.MULTILINE)
    ]
    assert not missing, f"the checklist names tests that do not exist: {missing}"
