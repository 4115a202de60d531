"""config/sam4dcap.yaml is the one source of defaults: no core function repeats a parameter of
the YAML with another default value, and the YAML's own values obey the ranges it documents."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import sam4dcap_biomech
import sam4dcap_perception
from sam4dcap_biomech.config import load_config

# Code parameter name -> the YAML parameter it stands for, where the names differ.
ALIASES = {"prior_spread_m": "ground_prior_spread_m", "offline_cutoff_hz": "offline_filter_cutoff_hz",
           "max_jump": "track_max_jump", "relock_s": "track_relock_s", "height_m": "subject_height_m",
           "mass_kg": "subject_mass_kg", "min_duration_s": "static_min_duration_s",
           "max_speed_m_s": "static_max_speed_m_s"}
# Same name, another quantity (checked by hand): function -> parameter.
NOT_THE_YAML_PARAMETER = {
    "sam4dcap_perception.body_geometry.fit_plane": "prior_spread_m",  # only with a prior plane (default none)
    "sam4dcap_perception.virtual_markers._stance_ground_stats": "max_speed_m_s",  # a foot's stance speed
}
# Parameters whose YAML meaning differs per node (a per-call window, not the node's setting).
NOT_SETTINGS = {"start_s", "end_s", "source", "frame_id", "realtime", "model_path", "output_dir", "person_id",
                "world_frame", "topics", "enabled", "device", "backend", "trial_name",
                # one name, two solvers: StreamingIK's per-frame cap vs camera_fit's whole-trial LM
                "max_iterations"}


def _core_modules():
    for pkg in (sam4dcap_biomech, sam4dcap_perception):
        for info in pkgutil.iter_modules(pkg.__path__):
            if info.name in ("nodes", "test", "commands", "graph_runner", "cli", "__main__"):
                continue
            yield importlib.import_module(f"{pkg.__name__}.{info.name}")


def _yaml_values() -> dict[str, set]:
    values: dict[str, set] = {}
    config = load_config()
    for node, specs in config.nodes.items():
        for name, spec in specs.items():
            if isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool):
                values.setdefault(name, set()).add(float(spec.default))
    return values


def test_code_defaults_do_not_differ_from_the_yaml():
    yaml_values = _yaml_values()
    clashes = []
    for module in _core_modules():
        for _, obj in inspect.getmembers(module, lambda o: inspect.isfunction(o) or inspect.isclass(o)):
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            func = obj.__init__ if inspect.isclass(obj) else obj
            try:
                params = inspect.signature(func).parameters.values()
            except (TypeError, ValueError):
                continue
            for p in params:
                key = ALIASES.get(p.name, p.name)
                if key in NOT_SETTINGS or key not in yaml_values:
                    continue
                if NOT_THE_YAML_PARAMETER.get(f"{module.__name__}.{obj.__qualname__}") == p.name:
                    continue
                d = p.default
                if d is inspect.Parameter.empty or d is None or isinstance(d, bool) or not isinstance(d, (int, float)):
                    continue
                if float(d) not in yaml_values[key]:
                    clashes.append(f"{module.__name__}.{obj.__qualname__}({p.name}={d}) vs the YAML's {key}="
                                   f"{sorted(yaml_values[key])}")
    assert not clashes, "code defaults that differ from config/sam4dcap.yaml:\n" + "\n".join(clashes)


def test_every_yaml_value_obeys_its_documented_range():
    config = load_config()   # load_config itself refuses values outside their range/choices
    checked = 0
    for node, specs in config.nodes.items():
        for spec in specs.values():
            if spec.min is not None:
                assert spec.min <= spec.default <= spec.max, (node, spec)
                checked += 1
    assert checked > 20


@pytest.mark.parametrize("old, new, name", [
    ("offline_filter_cutoff_hz: 6.0", "offline_filter_cutoff_hz: 0.01", "offline_filter_cutoff_hz"),
    ("min_markers: 8", "min_markers: 2", "min_markers"),
])
def test_yaml_value_outside_its_range_is_refused(tmp_path, old, new, name):
    from sam4dcap_biomech.config import repo_root
    from sam4dcap_biomech.errors import Sam4dcapError

    text = (repo_root() / "config" / "sam4dcap.yaml").read_text()
    path = tmp_path / "c.yaml"
    path.write_text(text.replace(old, new))
    with pytest.raises(Sam4dcapError, match=f"{name}.*out of range"):
        load_config(path)
