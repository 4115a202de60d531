"""config/sam4dcap.yaml is the single source of defaults: it parses, documents every
parameter and validates overrides (the README's table of it: tests/test_docs.py)."""

import dataclasses
from pathlib import Path

import pytest

from sam4dcap_biomech.config import load_config
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.settings import (HEIGHT_RANGE_M, MASS_RANGE_KG, IDSettings, IKSettings, StaticWindowSettings,
                                       Subject, check_height_m, check_mass_kg)

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


def test_subject_limits_are_the_documented_ranges():
    """One validator per quantity: its limits are the ranges the YAML documents for it."""
    config = load_config(CONFIG)
    heights = [specs[n] for specs in config.nodes.values() for n in specs if n == "subject_height_m"]
    masses = [specs[n] for specs in config.nodes.values() for n in specs if n == "subject_mass_kg"]
    assert heights and masses
    assert all((s.min, s.max) == HEIGHT_RANGE_M for s in heights)
    assert all((s.min, s.max) == MASS_RANGE_KG for s in masses)
    assert check_height_m("1.8") == 1.8 and check_mass_kg(70) == 70.0
    for bad in (175, 0.2, float("nan"), "tall"):
        with pytest.raises(Sam4dcapError, match="--height"):
            check_height_m(bad, name="--height")
    with pytest.raises(Sam4dcapError, match="outside 10..300 kg"):
        Subject(height_m=1.7, mass_kg=700)


def test_settings_come_from_the_config_sections():
    config = load_config(CONFIG)
    ik, still, ident = (IKSettings.from_config(config), StaticWindowSettings.from_config(config),
                        IDSettings.from_config(config))
    assert ik.accuracy == config.params("ik_node")["accuracy"]
    assert ik.min_markers == config.params("ik_node")["min_markers"]
    assert still.max_speed_m_s == config.params("ik_node")["static_max_speed_m_s"]
    assert ident.delay_s == config.params("id_node")["delay_s"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ik.min_markers = 3
