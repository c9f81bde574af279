#!/usr/bin/env python3
"""Lists the import circles between the files of a Rust crate.

An edge a.rs -> b.rs is a `use` path (or a `crate::`/`super::`/`self::` path in code) in a.rs
that names an item of the module kept in b.rs. The module tree is read from the `mod`
declarations (with `#[path]`), starting at src/lib.rs or src/main.rs. Prints every strongly
connected component of more than one file, with the edges inside it; exits 1 if there is one.

    scripts/check-import-cycles.py firmware/vantage-core [--edges] [--production]

`--production` leaves out `#[cfg(test)]` code (test modules, test-only files and imports).
"""
import os
import re
import sys

TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<line>//[^\n]*)
    |(?P<str>b?"(?:\\.|[^"\\])*")
    |(?P<char>b?'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'\n])')
    |(?P<life>'[A-Za-z_]\w*)
    |(?P<ident>(?:r\#)?[A-Za-z_]\w*)
    |(?P<num>\d[\w.]*)
    |(?P<path>::)
    |(?P<punct>.)""",
    re.X | re.S,
)
RAW = re.compile(r'b?r(#*)"')


def tokens(text):
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            continue
        raw = RAW.match(text, i)
        if raw and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = text.find('"' + raw.group(1), raw.end())
            out.append(("str", text[raw.end():end]))
            i = end + 1 + len(raw.group(1))
            continue
        m = TOKEN.match(text, i)
        kind = m.lastgroup
        if kind == "str":
            out.append(("str", m.group()[m.group().index('"') + 1:-1]))
        elif kind not in ("ws", "line"):
            out.append((kind, m.group()))
        i = m.end()
    return out


class Crate:
    def __init__(self, root):
        self.src = os.path.join(root, "src")
        self.modules = {}  # module path (tuple) -> file
        self.uses = []  # (file, module path, [segments], test only)
        self.test_files = set()
        top = next(p for p in ("lib.rs", "main.rs") if os.path.exists(os.path.join(self.src, p)))
        self.load(os.path.join(self.src, top), (), True)

    def load(self, file, mpath, mod_rs, test=False):
        self.modules[mpath] = file
        if test:
            self.test_files.add(file)
        toks = tokens(open(file, encoding="utf-8").read())
        own_dir = os.path.dirname(file) if mod_rs else os.path.splitext(file)[0]
        # Frames: (module path, directory for its children, brace depth that closes it).
        frames = [(mpath, own_dir, -1)]
        depth, i, pending_path = 0, 0, None
        # cfg(test) items: `pending_test` until the item's `{` or `;`; `test_until`: the
        # depths at which the test-only blocks close.
        pending_test, test_until = False, []
        while i < len(toks):
            kind, val = toks[i]
            in_test = test or bool(test_until)
            if val == "#" and i + 3 < len(toks) and toks[i + 1][1] == "[" and toks[i + 2][1] == "cfg":
                j, words = i + 3, []
                while toks[j][1] != "]":
                    words.append(toks[j][1])
                    j += 1
                if "test" in words and "not" not in words:
                    pending_test = True
                i = j + 1
                continue
            if val == "#" and i + 4 < len(toks) and toks[i + 1][1] == "[" and toks[i + 2][1] == "path":
                pending_path = toks[i + 4][1]
            if kind == "ident" and val == "mod" and i + 2 < len(toks) and toks[i + 1][0] == "ident":
                name, after = toks[i + 1][1], toks[i + 2][1]
                cur, cdir, _ = frames[-1]
                if after == ";":
                    if pending_path:
                        child = os.path.join(os.path.dirname(file) if len(frames) == 1 else cdir, pending_path)
                    else:
                        child = os.path.join(cdir, name + ".rs")
                        if not os.path.exists(child):
                            child = os.path.join(cdir, name, "mod.rs")
                    is_mod_rs = os.path.basename(child) == "mod.rs" or pending_path is not None
                    self.load(child, cur + (name,), is_mod_rs and os.path.basename(child) == "mod.rs",
                              in_test or pending_test)
                    pending_path, pending_test = None, False
                    i += 3
                    continue
                if after == "{":
                    self.modules[cur + (name,)] = file
                    frames.append((cur + (name,), os.path.join(cdir, name), depth))
                    if pending_test:
                        test_until.append(depth)
                    depth += 1
                    pending_path, pending_test = None, False
                    i += 3
                    continue
            if val == "{":
                if pending_test:
                    test_until.append(depth)
                    pending_test = False
                depth += 1
            elif val == "}":
                depth -= 1
                if len(frames) > 1 and frames[-1][2] == depth:
                    frames.pop()
                if test_until and test_until[-1] == depth:
                    test_until.pop()
            elif val == ";":
                pending_test = False
                pending_path = None
            elif (kind == "ident" and val in ("fn", "struct", "enum", "impl", "use")):
                pending_path = None
            if kind == "ident" and val == "use":
                j = i + 1
                while toks[j][1] != ";":
                    j += 1
                for segs in expand(toks[i + 1:j]):
                    self.uses.append((file, frames[-1][0], segs, in_test or pending_test))
                pending_test = False
                i = j + 1
                continue
            if kind == "ident" and val in ("crate", "super", "self") and i + 1 < len(toks) and toks[i + 1][0] == "path":
                prev = toks[i - 1][1] if i else ""
                if prev != "::" and prev != "pub" and not (prev == "(" and i >= 2 and toks[i - 2][1] == "pub"):
                    segs, j = [val], i + 1
                    while j + 1 < len(toks) and toks[j][0] == "path" and toks[j + 1][0] == "ident":
                        segs.append(toks[j + 1][1])
                        j += 2
                    self.uses.append((file, frames[-1][0], segs, in_test))
                    i = j
                    continue
            i += 1

    def resolve(self, mpath, segs):
        segs = [s for s in segs if s != "*"]
        if not segs:
            return None
        head, rest = segs[0], segs[1:]
        if head == "crate":
            cur = ()
        elif head in ("super", "self"):
            cur = mpath
            while True:
                if head == "super":
                    cur = cur[:-1]
                if rest and rest[0] in ("super", "self"):
                    head, rest = rest[0], rest[1:]
                    continue
                break
        elif mpath + (head,) in self.modules:
            cur, rest = mpath + (head,), rest
        else:
            return None  # another crate, or a name in scope
        for seg in rest:
            if cur + (seg,) in self.modules:
                cur = cur + (seg,)
            else:
                break
        return self.modules[cur]


def expand(toks):
    """The paths of a use tree: `a::{b, c::{d as e}}` -> [a,b], [a,c,d]."""
    pos = 0

    def tree(prefix):
        nonlocal pos
        segs = list(prefix)
        while pos < len(toks):
            kind, val = toks[pos]
            if val == "{":
                pos += 1
                out = []
                while pos < len(toks) and toks[pos][1] != "}":
                    out += tree(segs)
                    if pos < len(toks) and toks[pos][1] == ",":
                        pos += 1
                pos += 1
                return out
            if kind == "ident" and val == "as":
                pos += 2
                return [segs]
            if val in (",", "}"):
                return [segs]
            if kind == "ident" or val == "*":
                segs.append(val)
            pos += 1
        return [segs]

    return tree([])


def sccs(nodes, edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    root = args[0] if args else "."
    crate = Crate(root)
    edges = {}
    production = "--production" in sys.argv
    for file, mpath, segs, test in crate.uses:
        if production and (test or file in crate.test_files):
            continue
        target = crate.resolve(mpath, segs)
        if target and target != file:
            edges.setdefault(file, set()).add(target)
    rel = lambda f: os.path.relpath(f, crate.src)
    if "--edges" in sys.argv:
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f"{rel(a)} -> {rel(b)}")
    files = set(crate.modules.values()) - (crate.test_files if production else set())
    circles = [sorted(c) for c in sccs(files, edges) if len(c) > 1]
    for c in sorted(circles, key=len, reverse=True):
        print(f"circle of {len(c)} files:")
        for f in c:
            inside = sorted(rel(t) for t in edges.get(f, ()) if t in c)
            print(f"  {rel(f)} -> {', '.join(inside)}")
    print(f"{len(files)} files, {sum(map(len, edges.values()))} edges, {len(circles)} circles")
    return 1 if circles else 0


if __name__ == "__main__":
    sys.exit(main())
