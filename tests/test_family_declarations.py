"""Families are data: the README's family table, the refusal list and every node's tooltips name exactly the
families the adapters declare (issue 21, "the recipe holds")."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from mca_ctrl.mca_attention.adapters import ADAPTERS, FAMILY_NAMES, REFUSED, REFUSED_FAMILIES, SUPPORTED_FAMILIES
from mca_ctrl.nodes import NODE_CLASS_MAPPINGS

README = Path(__file__).resolve().parents[1] / "README.md"
DECLARED = {name: adapter for adapter in ADAPTERS for name in adapter.FAMILIES.values()}
# The words users know for families no adapter declares, besides REFUSED's names: a tooltip naming one is stale.
OTHER_NAMES = ("SD3", "SD1.5", "SD2.1", "Kontext", "Krea")


def family_table() -> list[list[str]]:
    """The rows of the README's family table (under "Model families and the layer setting")."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Model families and the layer setting"):]
    lines = [line for line in section.split("\n\n")[2].splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def node_texts() -> list[tuple[str, str]]:
    """(where, text) for every node description, tooltip and output tooltip."""
    texts = []
    for name, node in NODE_CLASS_MAPPINGS.items():
        texts.append((f"{name} description", getattr(node, "DESCRIPTION", "")))
        texts += [(f"{name} output", tip) for tip in getattr(node, "OUTPUT_TOOLTIPS", ())]
        for group in node.INPUT_TYPES().values():
            for input_name, spec in group.items():
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                texts.append((f"{name}.{input_name}", options.get("tooltip", "")))
    return texts


def test_the_readme_table_has_one_row_per_declared_family():
    rows = family_table()
    assert [row[0] for row in rows] and {row[0] for row in rows} == set(DECLARED), "README table vs adapters"
    for name, kind, sites, _ in rows:
        adapter = DECLARED[name]
        assert kind == adapter.KIND and sites == adapter.SITES[name], f"README row {name}"


def test_every_architecture_module_is_found_by_the_registry():
    """A family is one file: each module of ``adapters/`` (but the interface and the hook body) adds its adapter(s)
    without an edit to the registry."""
    import pkgutil

    import mca_ctrl.mca_attention.adapters as adapters

    modules = {info.name for info in pkgutil.iter_modules(adapters.__path__)} - set(adapters.SHARED_MODULES)
    assert modules and {adapter.__module__.rsplit(".", 1)[1] for adapter in ADAPTERS} == modules


def test_the_refusal_list_and_the_supported_list_come_from_the_declarations():
    assert set(REFUSED.values()).isdisjoint(DECLARED), "a family is either declared or refused"
    assert all(name in SUPPORTED_FAMILIES for name in DECLARED)
    assert REFUSED_FAMILIES.replace(", ", ",").split(",") == list(dict.fromkeys(REFUSED.values()))
    readme = " ".join(README.read_text(encoding="utf-8").split())
    assert f"(today: {REFUSED_FAMILIES})" in readme, "the README's refused list is REFUSED's"
    for adapter in ADAPTERS:
        assert set(adapter.SITES) == set(adapter.FAMILIES.values()), f"{adapter.__name__}: a site count per family"
        assert adapter.KIND and adapter.PRESET_SOURCE and adapter.LATENT.channels > 0


def _mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.]*\d)", text) is not None


@pytest.mark.parametrize("where, text", node_texts())
def test_no_tooltip_names_a_family_no_adapter_declares(where, text):
    text = text.replace(REFUSED_FAMILIES, "")  # the model input's "Not yet: ..." clause is REFUSED itself
    stale = [name for name in (*dict.fromkeys(FAMILY_NAMES.values()), *OTHER_NAMES)
             if name not in DECLARED and _mentions(text, name)]
    assert not stale, f"{where} names {stale}, which no adapter declares: {text}"


def test_every_declared_family_is_named_where_users_choose_a_model():
    model_tooltip = NODE_CLASS_MAPPINGS["MCA_AttentionPatch"].INPUT_TYPES()["required"]["model"][1]["tooltip"]
    site_tooltip = NODE_CLASS_MAPPINGS["MCA_AttentionPatch"].INPUT_TYPES()["required"]["salq_first_site"][1]["tooltip"]
    for name, adapter in DECLARED.items():
        assert name in model_tooltip and f"{name} {adapter.SITES[name]}" in site_tooltip
