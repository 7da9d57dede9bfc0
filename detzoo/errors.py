"""``UserError``: the base of the errors that bad input causes (a file, a config value, an
annotation), as opposed to bugs.

The ``detzoo`` command prints a ``UserError`` as one line, ``detzoo CMD: error: MESSAGE``,
and exits with 2; its message names the culprit (file, key, annotation id). Anything else
that escapes a command is a bug and shows its traceback. ``ConfigError``,
``CheckpointError``, ``DataError`` and ``NonFiniteLossError`` derive from it; see
``detzoo.cli.main`` for the few standard exceptions also reported as one line.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input; the message says what is wrong and names the file, key or id at fault."""
