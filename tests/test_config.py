"""config/sam4dcap.yaml is the single source of defaults: it parses, documents every
parameter and validates overrides (the README's table of it: tests/test_docs.py)."""

from pathlib import Path

import pytest

from sam4dcap_biomech.config import load_config
from sam4dcap_biomech.errors import Sam4dcapError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "sam4dcap.yaml"


def test_every_parameter_has_a_description_and_a_sane_default():
    config = load_config(CONFIG)
    assert config.nodes, "no node sections"
    for node, specs in config.nodes.items():
        for name, spec in specs.items():
            assert len(spec.description) > 8, f"{node}.{name}: description too short"
            # The default itself must satisfy the declared range/choices.
            assert spec.validate(spec.default, node=node) == spec.default


def test_overrides_are_validated_with_the_declared_rules():
    config = load_config(CONFIG)
    node, name, spec = next((n, k, s) for n, specs in config.nodes.items()
                            for k, s in specs.items() if s.max is not None)
    with pytest.raises(Sam4dcapError, match=f"{node}.{name}"):
        config.params(node, {name: spec.max + 1})
    with pytest.raises(Sam4dcapError, match="unknown parameter"):
        config.params(node, {"no_such_parameter": 1})
    node, name, spec = next((n, k, s) for n, specs in config.nodes.items()
                            for k, s in specs.items() if s.choices)
    with pytest.raises(Sam4dcapError, match="choose one of"):
        config.params(node, {name: "not-a-choice"})


def test_missing_description_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("n:\n  ros__parameters:\n    x: 1\n")
    with pytest.raises(Sam4dcapError, match="n.x has no description"):
        load_config(bad)
