#!/usr/bin/env python3
"""Checks that the modules of every crate in the workspace form layers that
only point down.

For each crate root it reads every source file, tests and comments included
(a test that imports a higher layer, or a doc comment that names one, ties
the layers together just the same for a reader), collects the
`crate::`, `super::` and `self::` paths it uses, resolves each to the
top-level module it names, and builds the graph "module -> modules it
imports". It fails (exit status 1) when

* the graph has a cycle, or
* a module imports a module of a higher layer than its own (LAYERS below), or
* a top-level module is missing from LAYERS (so a new module must be placed).

`--graph` prints the graph; `--self-test` runs the checker on tiny synthetic
trees to show that it can fail.
"""
import os
import re
import sys
import tempfile

# Per crate root (relative to the workspace): the layers, bottom first. A
# module may import modules of its own layer or of lower layers.
LAYERS = {
    "broker/src/lib.rs": [
        # foundations: the codec, the envelope format, the flash store, streams
        ["protocol", "framed", "envelope", "storage", "transport"],
        # values every layer passes around; configuration types
        ["message", "message_age", "config"],
        # per-client state: sessions and mailboxes
        ["session"],
        # core services on sessions: fan-out, plug-in seams, counters
        ["router", "hooks", "counters"],
        ["auth"],
        # the broker: shared state and its verbs
        ["broker"],
        ["policy"],
        # the two producers/consumers of the broker: cloud links, client connections
        ["bridge"],
        ["connection"],
        # listeners and observability
        ["server", "sys"],
        ["metrics"],
        # the operator's HTTP endpoint (metrics, API, page); config importers
        ["http", "import"],
        # the entry point that wires everything (the binary calls it)
        ["run"],
    ],
    "client/src/lib.rs": [
        ["error", "options", "tls", "outbox"],
        ["link"],
        ["client"],
        ["cli"],
    ],
    "firmware-sim/src/main.rs": [
        ["mqtt", "sensors", "report"],
        # the scenario file's types
        ["scenario"],
        ["reading", "faults"],
        ["verify"],
        ["device"],
    ],
    "firmware-sim/src/bin/edgemq-bench/main.rs": [
        ["proc_stats", "conn", "loss"],
        # the publishing and subscribing tasks, on the end-to-end accounting
        ["traffic"],
        ["scenarios"],
    ],
    "tests/src/lib.rs": [],
}

# Files of a library's src/ that belong to the binary beside it (declared
# with `mod` in its main.rs), not to the library's module graph.
BINARY_ONLY = {"broker/src/cli.rs"}

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def expand_use_tree(tree):
    """`a::{b, c::{d, e}}` -> [["a","b"], ["a","c","d"], ["a","c","e"]]."""
    tree = re.sub(r"\s+", "", tree)
    out = []

    def parse(s, prefix):
        # split s at top-level commas
        depth, start, parts = 0, 0, []
        for i, ch in enumerate(s):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(s[start:i])
                start = i + 1
        parts.append(s[start:])
        for part in parts:
            if not part:
                continue
            brace = part.find("{")
            if brace >= 0 and part.endswith("}"):
                head = [p for p in part[:brace].split("::") if p]
                parse(part[brace + 1:-1], prefix + head)
            else:
                part = part.split(" as ")[0]
                out.append(prefix + [p for p in re.split(r"::|as", part) if p][:1] + [p for p in part.split("::")[1:] if p])

    parse(tree, [])
    return out


def module_path(src_dir, path):
    rel = os.path.relpath(path, src_dir)
    parts = rel[:-3].split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


def resolve(mod_path, segments):
    """Absolute top-level module named by a path used in module `mod_path`."""
    if not segments:
        return None
    if segments[0] == "crate":
        rest = segments[1:]
        return rest[0] if rest else None
    base = list(mod_path)
    i = 0
    while i < len(segments) and segments[i] in ("super", "self"):
        if segments[i] == "super":
            if not base:
                return None
            base.pop()
        i += 1
    if i == 0:
        return None
    full = base + segments[i:]
    return full[0] if full else None


def crate_files(root_file):
    src_dir = os.path.dirname(root_file)
    root_name = os.path.basename(root_file)
    is_bin_dir = os.path.basename(src_dir) != "src"
    files = []
    for dirpath, dirnames, filenames in os.walk(src_dir):
        if not is_bin_dir and os.path.relpath(dirpath, src_dir).split(os.sep)[0] == "bin":
            continue
        for f in filenames:
            if not f.endswith(".rs"):
                continue
            p = os.path.join(dirpath, f)
            if p == root_file:
                continue
            if os.path.dirname(p) == src_dir and f in ("lib.rs", "main.rs"):
                continue
            if os.path.relpath(p) in BINARY_ONLY or p in BINARY_ONLY:
                continue
            files.append(p)
    return src_dir, sorted(files)


def module_graph(root_file):
    src_dir, files = crate_files(root_file)
    graph = {}
    for path in files:
        mp = module_path(src_dir, path)
        top = mp[0]
        graph.setdefault(top, set())
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        paths = []
        for m in re.finditer(r"\buse\s+((?:crate|super|self)\b[^;]*);", text):
            paths.extend(expand_use_tree(m.group(1)))
        for m in re.finditer(r"(?<![:\w])((?:crate|super|self)(?:::(?:super|" + IDENT + r"))+)", text):
            paths.append(m.group(1).split("::"))
        for segs in paths:
            target = resolve(mp, segs)
            if target and target != top:
                graph[top].add(target)
    # keep only edges to modules of this crate
    names = set(graph)
    for m in graph:
        graph[m] = {t for t in graph[m] if t in names}
    return graph


def find_cycles(graph):
    """Strongly connected components with more than one module."""
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sccs


def check(root_file, layers, show_graph=False, name=None):
    name = name or root_file
    graph = module_graph(root_file)
    errors = []
    level = {}
    for i, layer in enumerate(layers):
        for m in layer:
            level[m] = i
    if show_graph:
        print(f"== {name}")
        for m in sorted(graph):
            print(f"  {m} -> {', '.join(sorted(graph[m])) or '-'}")
    for comp in find_cycles(graph):
        errors.append(f"{name}: import cycle among {', '.join(comp)}")
    if layers:
        for m in sorted(graph):
            if m not in level:
                errors.append(f"{name}: module `{m}` is in no layer (add it to LAYERS in scripts/check-layers.py)")
                continue
            for t in sorted(graph[m]):
                if t in level and level[t] > level[m]:
                    errors.append(f"{name}: upward import: `{m}` (layer {level[m]}) uses `{t}` (layer {level[t]})")
    return errors


def self_test():
    """The checker must fail on a cycle and on an upward import."""
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "src")
        os.makedirs(os.path.join(src, "b"))
        files = {
            "lib.rs": "mod a; mod b; mod c;",
            "a.rs": "use crate::b::Thing;\n",
            "b/mod.rs": "mod inner;\n",
            "b/inner.rs": "use super::super::c::{X, y::Z};\n",
            # A test and a comment count like code: c -> a, c -> b.
            "c.rs": "/// See `crate::b`.\nfn f() {}\n#[cfg(test)]\nmod tests { use crate::a::g; }\n",
        }
        for f, body in files.items():
            with open(os.path.join(src, f), "w") as fh:
                fh.write(body)
        root = os.path.join(src, "lib.rs")
        g = module_graph(root)
        assert g == {"a": {"b"}, "b": {"c"}, "c": {"a", "b"}}, g
        errs = check(root, [["a", "b", "c"]], name="synthetic")
        assert any("cycle among a, b, c" in e for e in errs), errs
        # break the cycle: now only the layer rule can fail
        with open(os.path.join(src, "c.rs"), "w") as fh:
            fh.write("fn f() {}\n")
        assert check(root, [["a", "b", "c"]], name="synthetic") == []
        errs = check(root, [["a"], ["b"], ["c"]], name="synthetic")
        assert errs == [
            "synthetic: upward import: `a` (layer 0) uses `b` (layer 1)",
            "synthetic: upward import: `b` (layer 1) uses `c` (layer 2)",
        ], errs
        assert check(root, [["c"], ["b"], ["a"]], name="synthetic") == []
        errs = check(root, [["c"], ["b"]], name="synthetic")
        assert errs == ["synthetic: module `a` is in no layer (add it to LAYERS in scripts/check-layers.py)"], errs
    print("check-layers self-test: ok")


def main():
    if "--self-test" in sys.argv:
        self_test()
        return 0
    show = "--graph" in sys.argv
    ws = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    errors = []
    for root, layers in LAYERS.items():
        errors.extend(check(os.path.join(ws, root), layers, show_graph=show, name=root))
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"check-layers: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    print("check-layers: no cycles, no upward imports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
