#!/usr/bin/env python3
"""Checks that the source files and tests the docs name exist.

Finds every reference of the form `crate/tests/file.rs::test_name` or
`crate/src/file.rs::test_name` (and plain `crate/src/file.rs`,
`crate/tests/file.rs`, `crate/benches/file.rs` paths) in ARCHITECTURE.md,
README.md, SECURITY.md and docs/guarantees.md. Fails (exit 1, listing them) when a named file does not exist or
holds no `fn test_name`. A reference may chain module names
(`file.rs::tests::name`); the last one is the function looked for.

Usage: python3 scripts/check-docs.py   (from anywhere in the repository)
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["ARCHITECTURE.md", "README.md", "SECURITY.md", "docs/guarantees.md", "docs/ourdb.md",
        "docs/lifecycle.md", "docs/decisions.md", "docs/protocol.md"]

REFERENCE = re.compile(
    r"(?<![\w/.-])"
    r"(?P<path>[a-z][a-z0-9_]*/(?:src|tests|benches|examples)/[A-Za-z0-9_/]+\.rs)"
    r"(?P<names>(?:::[A-Za-z_][A-Za-z0-9_]*)*)"
)


def workspace_members() -> set:
    """Top-level folders that hold a crate (a Cargo.toml)."""
    return {p.parent.name for p in ROOT.glob("*/Cargo.toml")}


def check(doc: str, members: set) -> tuple:
    """Returns (number of references checked, list of problems) for one doc."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    problems = []
    checked = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        for m in REFERENCE.finditer(line):
            path = m.group("path")
            if path.split("/", 1)[0] not in members:
                problems.append(f"{doc}:{line_no}: {path}: no crate folder of that name")
                continue
            checked += 1
            file = ROOT / path
            if not file.is_file():
                problems.append(f"{doc}:{line_no}: {path}: no such file")
                continue
            names = [n for n in m.group("names").split("::") if n]
            if not names:
                continue
            name = names[-1]
            source = file.read_text(encoding="utf-8")
            if not re.search(rf"\bfn\s+{re.escape(name)}\b", source):
                problems.append(f"{doc}:{line_no}: {path}::{m.group('names')[2:]}: no `fn {name}` in {path}")
    return checked, problems


def main() -> int:
    members = workspace_members()
    total = 0
    problems = []
    for doc in DOCS:
        if not (ROOT / doc).is_file():
            problems.append(f"{doc}: missing")
            continue
        checked, found = check(doc, members)
        total += checked
        problems.extend(found)
    if problems:
        print(f"check-docs: {len(problems)} broken reference(s):")
        for p in problems:
            print(f"  {p}")
        return 1
    print(f"check-docs: {total} references to files and tests in {', '.join(DOCS)}: all exist")
    return 0


if __name__ == "__main__":
    sys.exit(main())
