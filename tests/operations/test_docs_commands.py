"""Every `loom ...` command line in the README and docs/*.md names a real command and only flags (and choices)
its argparse parser has, so the docs cannot drift from the CLI.

Command lines are read from fenced code blocks (with `\\` continuations joined) and from inline code spans,
written as `loom <command>` or `python -m operations.cli <command>`. Each command's parser is the one its
`main(argv)` builds: `ArgumentParser.parse_known_args` is intercepted the moment `main` asks it to parse,
so the parser is read exactly as the command line would meet it (subcommands included).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import re
from pathlib import Path

import pytest

from operations.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
_SPAN = re.compile(r"`([^`\n]+)`")
_START = re.compile(r"(?:^|[\s(;&|])(?:loom|\S*python3?\S* -m operations\.cli)\s+(?=[a-z])")
_SUBSTITUTION = re.compile(r"\$\([^()]*\)")
_SEPARATORS = {"|", "||", "&&", ";", "&"}


class _Parsed(Exception):
    def __init__(self, parser):
        self.parser = parser


@functools.lru_cache(maxsize=None)
def parser_of(command: str) -> argparse.ArgumentParser:
    """The argparse parser `loom <command>` uses."""
    module = importlib.import_module(COMMANDS[command][0])
    original = argparse.ArgumentParser.parse_known_args

    def capture(self, *args, **kwargs):
        raise _Parsed(self)

    argparse.ArgumentParser.parse_known_args = capture
    try:
        module.main([])
    except _Parsed as parsed:
        return parsed.parser
    finally:
        argparse.ArgumentParser.parse_known_args = original
    raise AssertionError(f"loom {command}: main() returned without parsing its arguments")


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


def logical_lines(text: str) -> list[str]:
    """Code block lines (continuations joined, comments dropped; diagrams skipped) and inline code spans."""
    lines = []
    for info, block in _FENCE.findall(text):
        if info.strip() == "mermaid":  # a diagram names commands on its arrows, not command lines
            continue
        for line in block.replace("\\\n", " ").splitlines():
            lines.append(re.sub(r"\s#\s.*$", "", line))
    prose = _FENCE.sub("", text)
    lines += _SPAN.findall(prose)
    return lines


def command_lines() -> list[tuple[str, str]]:
    """(where, "command flags...") for every loom command line in the docs."""
    found = []
    for doc in DOCS:
        for line in logical_lines(doc.read_text(encoding="utf-8")):
            line = _SUBSTITUTION.sub("VALUE", line)
            for match in _START.finditer(line):
                found.append((f"{doc.relative_to(ROOT)}: {line.strip()}", line[match.end():]))
    return found


def problems_of(tokens: list[str]) -> list[str]:
    """What is wrong with one command line's tokens (command, flags, values); [] when it matches the CLI."""
    words = []
    for token in tokens:
        if token in _SEPARATORS or token.startswith("#") or token.startswith("`"):
            break
        words.append(token.strip("\"',.:)"))
    if not words:
        return []
    command, rest = words[0], words[1:]
    if command not in COMMANDS:
        return [f"no command {command!r}"]
    parser = parser_of(command)
    subs = subparsers(parser)
    if subs and rest and not rest[0].startswith("-") and rest[0] not in ("...", "…"):
        wanted = rest.pop(0).split("|")
        missing = [name for name in wanted if name not in subs]
        if missing:
            return [f"loom {command} has no subcommand {missing} (it has {sorted(subs)})"]
        parsers = [subs[name] for name in wanted]
    else:
        parsers = [parser]
    problems = []
    for sub in parsers:
        known = options(sub)
        for i, word in enumerate(rest):
            if not word.startswith("--") or word == "--":
                continue
            flag, _, inline_value = word.partition("=")
            action = known.get(flag)
            if action is None:
                problems.append(f"{sub.prog} has no flag {flag}")
                continue
            value = inline_value or (rest[i + 1] if i + 1 < len(rest) else "")
            if action.choices and re.fullmatch(r"[a-z0-9][a-z0-9._-]*", value) and action.nargs != 0:
                if value not in [str(choice) for choice in action.choices]:
                    problems.append(f"{sub.prog} {flag}: {value!r} is not one of {list(action.choices)}")
    return problems


LINES = command_lines()


def test_the_docs_have_command_lines_to_check():
    commands = {rest.split()[0] for _, rest in LINES if rest.split()}
    # deploy.md walks through these; a parser that finds none of them has stopped reading the docs
    assert {"prepare", "stage-base", "launch", "rollout", "preflight"} <= commands, sorted(commands)
    assert len(LINES) >= 30


@pytest.mark.parametrize("where,rest", LINES, ids=[f"{i}" for i in range(len(LINES))])
def test_each_documented_command_line_matches_the_cli(where, rest):
    problems = problems_of(rest.split())
    assert not problems, f"{where}\n  " + "\n  ".join(problems)


def test_every_command_exposes_its_parser():
    """The interception works for every command, so a documented line can always be checked."""
    for command in COMMANDS:
        assert isinstance(parser_of(command), argparse.ArgumentParser), command


@pytest.mark.parametrize("line,problem", [
    ("launch --image-uri x --wiat", "has no flag --wiat"),
    ("stage-base --dtype fp16", "'fp16' is not one of"),
    ("index bulid --model m", "has no subcommand"),
    ("lanch --wait", "no command 'lanch'"),
    ("rollout --strategy sideways", "'sideways' is not one of"),
])
def test_a_wrong_line_is_caught(line, problem):
    assert any(problem in p for p in problems_of(line.split())), problems_of(line.split())
