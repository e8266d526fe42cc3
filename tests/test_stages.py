"""The stage table (minigpt4/stages.py) is the one place that names the stages: every layer that treats stages
differently knows each stage from its entry, and no module outside the table and the recipes branches on a
stage's name."""

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

from minigpt4 import protocol, stages
from minigpt4.cli import parse_args
from minigpt4.config import reference
from minigpt4.experiments import definitions
from minigpt4.preflight import CHECKS

ROOT = Path(__file__).resolve().parent.parent
SCRIPT_CALL = re.compile(r"script_main\(\s*\"(\w+)\"")


@pytest.mark.parametrize("name", stages.NAMES)
def test_the_cli_runs_each_stage_from_its_scripts_and_recipe(name):
    stage = stages.get(name)
    assert stage.scripts
    for script in stage.scripts:
        assert SCRIPT_CALL.findall((ROOT / script).read_text(encoding="utf-8")) == [name], script
    recipe = importlib.import_module(stage.recipe)
    assert list(inspect.signature(recipe.main).parameters) == ["cfg", "stage"]
    assert set(stage.checks) <= set(CHECKS), f"{name}: checks not in preflight.CHECKS"
    assert stage.evaluate_as is None or not stages.get(stage.evaluate_as).trains


def test_every_script_that_runs_a_stage_is_in_the_table():
    listed = {s for stage in stages.STAGES.values() for s in stage.scripts}
    calling = {p.name for p in ROOT.glob("*.py") if SCRIPT_CALL.search(p.read_text(encoding="utf-8"))}
    assert calling == listed


@pytest.mark.parametrize("name", stages.NAMES)
def test_help_config_lists_the_keys_of_each_stage(name, capsys):
    stage = stages.get(name)
    assert set(stage.key_groups) <= set(reference.KEY_GROUPS)
    with pytest.raises(SystemExit) as done:
        parse_args("x", ["--help-config"], name)
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"config keys {' / '.join(stage.scripts)} reads:")
    shown = {line.split()[0] for line in out.splitlines()[1:-1]}
    for group, keys in reference.KEY_GROUPS.items():  # a group names keys, or sections (model.lora_config)
        listed = all(any(s == k or s.startswith(k + ".") for s in shown) for k in keys)
        assert listed == (group in stage.key_groups), (name, group)
    assert f"{stage.label} = `{stage.scripts[0]}`" in reference.reference_markdown()  # docs/CONFIG.md's legend


@pytest.mark.parametrize("name", stages.NAMES)
def test_the_protocol_and_the_experiment_layer_know_each_stage(name):
    stage = stages.get(name)
    assert stage.protocol in protocol.SECTIONS
    methods = [s.method for s in definitions.ALL_STEPS.values() if s.stage == name]
    assert methods, f"steps.yaml has no step of stage {name}"
    for dataset in protocol.load():
        got = protocol.settings(dataset, name, methods[0])
        section = protocol.load()[dataset][stage.protocol]
        assert set(stage.protocol_keys or section) <= set(got)
    assert name in definitions.BUDGET_KINDS
    for budget in definitions.BUDGETS.values():
        assert isinstance(budget[name], list)


def stage_names_in_code(source):
    """(line, what) for each place the code spells a stage name: comparisons (branching) and any other string
    constant equal to one; docstrings are left out."""
    tree = ast.parse(source)
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                for c in ast.walk(side):
                    if isinstance(c, ast.Constant) and c.value in stages.NAMES:
                        found.append((node.lineno, f"compares with {c.value!r}"))
        elif isinstance(node, ast.Constant) and node.value in stages.NAMES and id(node) not in docstrings:
            found.append((node.lineno, f"spells {node.value!r}"))
    return sorted(set(found))


def test_no_module_outside_the_table_and_the_recipes_names_a_stage():
    own = {ROOT / "minigpt4" / "stages.py"} | {ROOT / (s.recipe.replace(".", "/") + ".py")
                                               for s in stages.STAGES.values()}
    bad = [f"{p.relative_to(ROOT)}:{line}: {what}" for p in sorted((ROOT / "minigpt4").rglob("*.py")) if p not in own
           for line, what in stage_names_in_code(p.read_text(encoding="utf-8"))]
    assert not bad, "read the stage's entry in minigpt4/stages.py instead:\n" + "\n".join(bad)


def test_the_name_check_sees_what_it_looks_for():
    found = stage_names_in_code('"""collab"""\nif stage == "collab":\n    pass\nok = s in ("llm", "x")\n'
                                'short = {"eval": "e"}\nx = stage.llm\n')
    assert [line for line, _ in found] == [2, 2, 4, 4, 5]
