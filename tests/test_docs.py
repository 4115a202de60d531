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


def test_architecture_names_every_module():
    """docs/architecture.md's module map mentions every module of both packages."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = []
    for pkg in ("sam4dcap_biomech", "sam4dcap_perception"):
        for py in sorted((ROOT / "src" / pkg / pkg).rglob("*.py")):
            if py.name != "__init__.py" and f"{py.stem}" not in doc:
                missing.append(str(py.relative_to(ROOT)))
    assert not missing, f"modules missing from docs/architecture.md: {missing}"
