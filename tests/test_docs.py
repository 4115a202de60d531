"""The docs' generated tables match their single sources (config YAML, graph.py)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gen_doc_tables", ROOT / "scripts" / "gen_doc_tables.py")
gen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen)


@pytest.mark.parametrize("key", sorted(gen.TABLES))
def test_generated_table_is_current(key):
    path, make = gen.TABLES[key]
    begin, end = gen.markers(key)
    text = path.read_text()
    assert begin in text and end in text, f"{path.name} lacks the {key} markers"
    current = text.split(begin, 1)[1].split(end, 1)[0].strip()
    assert current == make().strip(), f"{path.name} {key} table is stale: run scripts/gen_doc_tables.py --write"


def documented_modules(doc):
    """{package: [module paths]} named in the first column of the module map's tables.

    A row's first cell lists backticked modules; a name with a folder (`nodes/ik_node`) sets the
    folder for the bare names after it in that cell (`nodes/ik_node`, `id_node` -> nodes/id_node).
    """
    found = {}
    section = doc.split("## Module map", 1)[1].split("\n## ", 1)[0]
    package = None
    for line in section.splitlines():
        if line.startswith("### "):
            package = line.split()[1]
            found[package] = []
        elif package and line.startswith("| `"):
            folder = ""
            for name in line.split("|")[1].split(","):
                name = name.strip().strip("`")
                if "/" in name:
                    folder = name.rpartition("/")[0] + "/"
                    found[package].append(name)
                else:
                    found[package].append(folder + name)
    return found


def test_architecture_names_every_module():
    """docs/architecture.md's module map has one row entry per module of both packages, no more."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    documented = documented_modules(doc)
    assert set(documented) == {"sam4dcap_biomech", "sam4dcap_perception"}, sorted(documented)
    for pkg, names in documented.items():
        base = ROOT / "src" / pkg / pkg
        actual = {str(py.relative_to(base).with_suffix("")) for py in base.rglob("*.py") if py.name != "__init__.py"}
        assert len(names) == len(set(names)), f"{pkg}: modules listed twice: {sorted(n for n in names if names.count(n) > 1)}"
        missing, stale = sorted(actual - set(names)), sorted(set(names) - actual)
        assert not missing, f"{pkg}: modules missing from docs/architecture.md's module map: {missing}"
        assert not stale, f"{pkg}: docs/architecture.md's module map lists modules that do not exist: {stale}"


def test_module_check_can_fail():
    """The parser reads first cells only: a module named in a description does not count."""
    doc = ("## Module map\n### sam4dcap_biomech (x)\n| module | what |\n|---|---|\n"
           "| `trc`, `nodes/ik_node`, `id_node` | uses `id` and `storage` |\n## Topics\n")
    assert documented_modules(doc) == {"sam4dcap_biomech": ["trc", "nodes/ik_node", "nodes/id_node"]}
