"""The base of every error a user can act on (bad params, bad data, a stale output, ...)."""

from __future__ import annotations

__all__ = ["SibnetError"]


class SibnetError(Exception):
    """An error whose message says what is wrong and what would fix it.

    The ``sibnet`` command prints its message on one line (``sibnet <stage>: error: ...``) and
    exits 2, without a traceback. Each kind subclasses it beside its builtin base (for
    instance ``ParamsError(ValueError, SibnetError)``), so the command line needs to import none
    of the modules that raise them.
    """
