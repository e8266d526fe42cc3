"""The package's import graph, read from the source: no cycles, and no module imports one of a higher layer.

Data flows one way (config -> rows -> prompts -> token batches -> scores -> metrics), so the layers below are
ordered the same way. A new module must be given a layer here (by its dotted name or a parent package's).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minigpt4"

# lowest first; a module may import its own layer or lower ones
LAYERS = [
    ["minigpt4.errors", "minigpt4.fileio", "minigpt4.registry", "minigpt4.stages"],
    ["minigpt4.config"],
    ["minigpt4.data", "minigpt4.metrics", "minigpt4.text_codes", "minigpt4.prompting", "minigpt4.encoders"],
    ["minigpt4.batching", "minigpt4.shared_prefix", "minigpt4.precision", "minigpt4.llm"],
    ["minigpt4.train", "minigpt4.tasks", "minigpt4.preflight"],
    ["minigpt4.recipes", "minigpt4.recommender", "minigpt4.cli", "minigpt4.protocol", "minigpt4.experiments",
     "minigpt4.summary", "minigpt4"],
]


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name):
    p = ROOT.joinpath(*name.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def imports(path):
    """The package modules a file imports (at any depth of the file: function-local imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("minigpt4"):
            subs = [f"{node.module}.{a.name}" for a in node.names if is_module(f"{node.module}.{a.name}")]
            # `from minigpt4 import registry` imports the module registry (and runs the package's __init__,
            # which imports nothing: the registry loads each kind's modules on first lookup)
            found.update(subs if subs and node.module == "minigpt4" else subs + [node.module])
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("minigpt4") and a.name != "minigpt4")
    return found


def graph():
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def layer(name):
    best = None  # the longest matching prefix decides
    for i, members in enumerate(LAYERS):
        for m in members:
            if (name == m or name.startswith(m + ".")) and (best is None or len(m) > len(best[1])):
                best = (i, m)
    return None if best is None else best[0]


def test_every_module_has_a_layer():
    missing = [m for m in graph() if layer(m) is None]
    assert not missing, f"give these modules a layer in tests/test_layering.py: {missing}"


def upward(g):
    return [f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
            for src, dsts in g.items() for dst in sorted(dsts)
            if dst != src and not src.startswith(dst + ".") and layer(dst) is not None and layer(dst) > layer(src)]


def cycles(g):
    g = {src: {d for d in dsts if d in g and d != src and not src.startswith(d + ".")} for src, dsts in g.items()}
    state, stack, found = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(g[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(g):
        if node not in state:
            visit(node)
    return found


def test_no_upward_import():
    assert not upward(graph()), "\n".join(upward(graph()))


def test_no_import_cycle():
    assert not cycles(graph()), "import cycles: " + "; ".join(" -> ".join(c) for c in cycles(graph()))


def test_the_checks_see_what_they_look_for(tmp_path):
    # the two defects this file was written for: prepare's output importing train/, and a two-module cycle
    assert upward({"minigpt4.data.prepare.output": {"minigpt4.train.run_dir"}, "minigpt4.train.run_dir": set()})
    assert not upward({"minigpt4.train.run_dir": {"minigpt4.data.prepare.output"}})
    assert cycles({"minigpt4.llm.collab_tokens": {"minigpt4.train.collab"},
                   "minigpt4.train.collab": {"minigpt4.llm.collab_tokens"}})
    assert not cycles({"minigpt4.llm.collab_tokens": set(), "minigpt4.train.collab": {"minigpt4.llm.collab_tokens"}})
    # imports inside functions count, and `from minigpt4 import registry` names the module
    src = tmp_path / "m.py"
    src.write_text("from minigpt4 import registry\n\ndef f():\n    from minigpt4.train.collab import pretrain\n")
    assert imports(src) == {"minigpt4.registry", "minigpt4.train.collab"}
