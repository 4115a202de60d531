"""sam4dcap process (not implemented yet)."""

from sam4dcap_biomech.errors import Sam4dcapError


def add_arguments(parser):
    pass


def run(args) -> int:
    raise Sam4dcapError("'sam4dcap process' is not implemented yet")
