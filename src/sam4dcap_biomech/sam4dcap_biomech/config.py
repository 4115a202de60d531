"""The single source of defaults: `config/sam4dcap.yaml`, in ROS 2 parameter-file layout.

The same file feeds `ros2 launch` (as a params file), the in-process graph runner and the CLI.
Every parameter's trailing comment is its documentation and, optionally, its constraint:

    cutoff_hz: 6.0   # Low-pass cutoff of the coordinates [Hz]. range=[0.5, 30.0]
    backend: blazepose   # Body estimator backend. choices=[blazepose, sam3d]

`load_config()` parses values and comments once into `ParamSpec`s; nodes build their
`ParameterDescriptor`s from them, and the CLI validates overrides with the same rules.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from .errors import Sam4dcapError

_RANGE = re.compile(r"range=\[\s*([^,\]]+)\s*,\s*([^\]]+)\]")
_CHOICES = re.compile(r"choices=\[([^\]]*)\]")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None

    @property
    def type_name(self) -> str:
        return type(self.default).__name__

    def validate(self, value: Any, *, node: str = "") -> Any:
        """Return `value` coerced to the default's type, or raise naming the parameter."""
        where = f"{node}.{self.name}" if node else self.name
        d = self.default
        try:
            if isinstance(d, bool):
                if isinstance(value, str) and value.lower() in ("true", "false"):
                    value = value.lower() == "true"
                if not isinstance(value, bool):
                    raise TypeError
            elif isinstance(d, int):
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise TypeError
                value = int(value)
            elif isinstance(d, float):
                if isinstance(value, bool):
                    raise TypeError
                value = float(value)
            elif isinstance(d, str):
                if not isinstance(value, str):
                    raise TypeError
            elif isinstance(d, list):
                if not isinstance(value, (list, tuple)):
                    raise TypeError
                value = list(value)
        except (TypeError, ValueError):
            raise Sam4dcapError(f"parameter {where}={value!r}: expected {self.type_name}") from None
        if (self.min is not None or self.max is not None) and (
                isinstance(value, bool) or not isinstance(value, (int, float))):
            raise Sam4dcapError(f"parameter {where}={value!r}: expected a number in [{self.min}, {self.max}]")
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            raise Sam4dcapError(f"parameter {where}={value!r} out of range [{self.min}, {self.max}]")
        if self.choices is not None and value not in self.choices:
            raise Sam4dcapError(f"parameter {where}={value!r}: choose one of {', '.join(self.choices)}")
        return value


@dataclass(frozen=True)
class Config:
    path: Path
    nodes: Mapping[str, Mapping[str, ParamSpec]]

    def specs(self, node: str) -> Mapping[str, ParamSpec]:
        if node not in self.nodes:
            raise Sam4dcapError(f"{self.path}: no section {node!r} (have: {', '.join(self.nodes)})")
        return self.nodes[node]

    def params(self, node: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Validated parameter values of one node: file defaults with `overrides` on top."""
        specs = self.specs(node)
        values = {name: spec.default for name, spec in specs.items()}
        for name, value in (overrides or {}).items():
            if name not in specs:
                raise Sam4dcapError(f"unknown parameter {node}.{name} (see {self.path})")
            values[name] = specs[name].validate(value, node=node)
        return values


def repo_root() -> Path | None:
    """The source checkout this module runs from (editable installs), if any."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "config" / "sam4dcap.yaml").is_file() and (parent / "src").is_dir():
            return parent
    return None


def default_config_path() -> Path:
    """SAM4DCAP_CONFIG, else the checkout's config/, else the installed share/ copy."""
    env = os.environ.get("SAM4DCAP_CONFIG")
    if env:
        return Path(env)
    root = repo_root()
    if root is not None:
        return root / "config" / "sam4dcap.yaml"
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("sam4dcap_perception")) / "config" / "sam4dcap.yaml"
    except Exception as exc:  # noqa: BLE001 - any failure means "not found" here
        raise Sam4dcapError("cannot find config/sam4dcap.yaml: set SAM4DCAP_CONFIG") from exc


def _parse_comment(text: str) -> tuple[str, float | None, float | None, tuple[str, ...] | None]:
    # Only the end-of-line comment: ruamel attaches the full-line comments that precede the
    # next key to this one too.
    text = text.lstrip().split("\n", 1)[0].strip().lstrip("#").strip()
    lo = hi = None
    choices = None
    m = _RANGE.search(text)
    if m:
        lo, hi = float(m.group(1)), float(m.group(2))
        text = _RANGE.sub("", text)
    m = _CHOICES.search(text)
    if m:
        choices = tuple(c.strip() for c in m.group(1).split(",") if c.strip())
        text = _CHOICES.sub("", text)
    return text.strip(), lo, hi, choices


def _plain(value: Any) -> Any:
    """ruamel's round-trip scalars (ScalarBoolean is an int!) to plain Python types."""
    from ruamel.yaml.scalarbool import ScalarBoolean

    if isinstance(value, (bool, ScalarBoolean)):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> Config:
    from ruamel.yaml import YAML

    p = Path(path)
    if not p.is_file():
        raise Sam4dcapError(f"config file not found: {p}")
    try:
        doc = YAML(typ="rt").load(p.read_text())
    except Exception as exc:  # noqa: BLE001
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise Sam4dcapError(f"{p}: not valid YAML{where} ({problem})") from None
    nodes: dict[str, dict[str, ParamSpec]] = {}
    for node, section in (doc or {}).items():
        params = (section or {}).get("ros__parameters")
        if params is None:
            raise Sam4dcapError(f"{p}: section {node!r} has no ros__parameters")
        specs = {}
        for name, value in params.items():
            comment = ""
            tok = params.ca.items.get(name)
            if tok and len(tok) > 2 and tok[2] is not None:
                comment = tok[2].value
            desc, lo, hi, choices = _parse_comment(comment)
            if not desc:
                raise Sam4dcapError(f"{p}: parameter {node}.{name} has no description comment")
            spec = ParamSpec(str(name), _plain(value), desc, lo, hi, choices)
            try:  # the file's own values obey the ranges its comments document
                spec.validate(spec.default, node=str(node))
            except Sam4dcapError as exc:
                raise Sam4dcapError(f"{p}: {exc}") from None
            specs[str(name)] = spec
        nodes[str(node)] = specs
    return Config(path=p, nodes=nodes)


def load_config(path: str | os.PathLike | None = None) -> Config:
    p = Path(path) if path is not None else default_config_path()
    return _load(str(p.resolve()), p.stat().st_mtime if p.exists() else 0.0)
