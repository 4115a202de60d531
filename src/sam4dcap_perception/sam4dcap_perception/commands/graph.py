"""sam4dcap graph (not implemented yet)."""

from sam4dcap_biomech.errors import Sam4dcapError


def add_arguments(parser):
    pass


def run(args) -> int:
    raise Sam4dcapError("'sam4dcap graph' is not implemented yet")
