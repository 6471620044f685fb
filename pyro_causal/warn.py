"""Warnings attributed to the user's line, however deep in the package they are raised."""
from __future__ import annotations

import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_at_caller(message: str, category: type = UserWarning) -> None:
    """``warnings.warn`` attributed to the caller of the outermost ``pyro_causal`` frame on the
    stack: the user's call, also through decorators and helpers (whose depth differs between
    entry points) and through wrappers other tools put between the package's functions."""
    frame, level, outermost = sys._getframe(1), 2, 2  # stacklevel 1 is this function, 2 its caller
    while frame is not None:
        if os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
            outermost = level
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=outermost + 1)
