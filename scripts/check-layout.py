#!/usr/bin/env python3
"""Checks the source layout the house rules ask for.

1. Inside each crate, the modules' `use crate::…` (and `super::…`) lines form
   no loop: a module may name its own children and anything below it, never
   a module that names it back.
2. No source file under `*/src/` is longer than 500 lines unless its first
   lines say why, with a line comment that starts `//! Long:` or `// Long:`.

Exit 0 when both hold, 1 with every loop and long file named otherwise.
"""
import os
import re
import sys

LIMIT = 500
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def crates():
    for name in sorted(os.listdir(ROOT)):
        src = os.path.join(ROOT, name, "src")
        if os.path.isfile(os.path.join(ROOT, name, "Cargo.toml")) and os.path.isdir(src):
            yield name, src


def module_of(src, path):
    """`a::b` for src/a/b.rs or src/a/b/mod.rs; `` for lib.rs/main.rs."""
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel in (["lib"], ["main"]):
        return ""
    if rel and rel[0] == "bin":
        return None  # binaries are their own roots
    return "::".join(rel)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def test_blocks_removed(text):
    """Drops `#[cfg(test)] mod … { … }` bodies: tests may import anything."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def uses(module, text, modules):
    """The modules of this crate that `module` names in use lines or paths."""
    found = set()
    parent = module.rsplit("::", 1)[0] if "::" in module else ""
    for m in re.finditer(r"\b(crate|super)((?:::\w+)+)", text):
        parts = m.group(2).split("::")[1:]
        base = [] if m.group(1) == "crate" else (parent.split("::") if parent else [])
        path = base + parts
        # the longest prefix that is a module of the crate
        for n in range(len(path), 0, -1):
            cand = "::".join(path[:n])
            if cand in modules:
                found.add(cand)
                break
    # a brace group `use crate::{a, b::c}` names several
    for m in re.finditer(r"\buse\s+crate::\{([^;]*)\};", text, flags=re.S):
        for item in re.split(r"[,\s{}]+", m.group(1)):
            head = item.split("::")[0]
            if head in modules:
                found.add(head)
    found.discard(module)
    # naming an ancestor (its `pub use` items) or a descendant is not a loop
    return {f for f in found if not module.startswith(f + "::") and not f.startswith(module + "::") and f != ""}


def cycles(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main():
    failures = []
    for crate, src in crates():
        files = {}
        for dirpath, _, names in os.walk(src):
            for n in names:
                if n.endswith(".rs"):
                    p = os.path.join(dirpath, n)
                    mod = module_of(src, p)
                    if mod is not None:
                        files[mod] = p
        graph = {}
        for mod, path in files.items():
            with open(path, encoding="utf-8") as f:
                raw = f.read()
            lines = raw.count("\n") + 1
            head = raw.splitlines()[:15]
            if lines > LIMIT and not any(re.match(r"\s*//!?\s*Long:", l) for l in head):
                failures.append(f"{os.path.relpath(path, ROOT)}: {lines} lines, over {LIMIT}, and no `//! Long:` reason at its top")
            text = strip_comments(test_blocks_removed(raw))
            graph[mod] = uses(mod, text, set(files))
        for comp in cycles(graph):
            edges = [f"{a} -> {b}" for a in comp for b in sorted(graph[a]) if b in comp]
            failures.append(f"{crate}: modules import each other in a loop: {', '.join(comp)} ({'; '.join(edges)})")
    for f in failures:
        print(f)
    if failures:
        return 1
    print("layout: no module loops, no unexplained long files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
