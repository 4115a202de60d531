"""Deterministic, fully populated instances of any ROS 2 message class (test helper).

Every field gets a non-default value derived from (type name, field, seed), so a field that a
transport drops or corrupts makes the round-tripped message compare unequal. Values are exactly
representable in their wire type (float32 values are multiples of 1/8, strings carry non-ASCII
UTF-8) so `==` after a round trip is exact.
"""

from __future__ import annotations

import importlib
import zlib

from rosidl_parser.definition import (AbstractNestedType, AbstractString, AbstractWString, BasicType,
                                      NamespacedType)

SEQUENCE_LENGTH = 3

_INT_RANGES = {
    "int8": (-128, 127), "uint8": (0, 255), "int16": (-2**15, 2**15 - 1), "uint16": (0, 2**16 - 1),
    "int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1), "int64": (-2**63, 2**63 - 1),
    "uint64": (0, 2**64 - 1), "octet": (0, 255), "char": (0, 255),
}


def _class_of(t: NamespacedType):
    return getattr(importlib.import_module(".".join(t.namespaces)), t.name)


def _basic(type_name: str, k: int):
    if type_name == "boolean":
        return k % 2 == 1
    if type_name in ("float", "float32"):
        return (k % 4000) / 8.0 - 250.0
    if type_name in ("double", "float64", "long double"):
        return k * 1.0e-3 - 12.345678901234
    if type_name in ("octet", "byte"):
        return bytes([k % 256])
    lo, hi = _INT_RANGES.get(type_name, (0, 127))
    # Reach the extremes of the range on some fields: sign/width bugs show up there.
    return (lo, hi, lo + k % (hi - lo))[k % 3]


def _value(t, k: int, label: str):
    if isinstance(t, BasicType):
        return _basic(t.typename, k)
    if isinstance(t, (AbstractString, AbstractWString)):
        return f"{label}-{k}-ü✓"
    if isinstance(t, NamespacedType):
        return sample(_class_of(t), seed=k)
    if isinstance(t, AbstractNestedType):
        n = getattr(t, "size", None) or SEQUENCE_LENGTH
        n = min(n, getattr(t, "maximum_size", n) or n)
        return [_value(t.value_type, k * 31 + i + 1, label) for i in range(n)]
    raise TypeError(f"no sample rule for {t!r}")


def sample(msg_cls, seed: int = 0):
    """An instance of `msg_cls` with every field (recursively) set to a deterministic value."""
    msg = msg_cls()
    base = zlib.crc32(msg_cls.__name__.encode()) % 10007 + 97 * seed
    for i, (field, t) in enumerate(zip(msg_cls.get_fields_and_field_types(), msg_cls.SLOT_TYPES)):
        setattr(msg, field, _value(t, base + 17 * i + 1, field))
    return msg
