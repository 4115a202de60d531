"""Errors that users can fix: the CLI prints them as one line and exits non-zero."""


class Sam4dcapError(ValueError):
    """Bad input or configuration, with a message that names the problem and the fix."""


class MissingDependencyError(Sam4dcapError):
    """An optional backend's package, weights or device (e.g. CUDA) is not available."""
