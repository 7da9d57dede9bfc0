"""``UserError``: the base of the errors that bad input causes (a file, a config value, an
annotation, an argument), as opposed to bugs.

The ``detzoo`` command prints a ``UserError`` as one line, ``detzoo CMD: error: MESSAGE``,
and exits with 2; its message names the culprit (file, key, annotation id). Every check of
input raises one where it finds the fault: ``ConfigError`` (``detzoo.config``),
``NonFiniteLossError`` (``detzoo.engine.hooks``) and the classes below. Anything else that
escapes a command is a bug and shows its traceback, except an ``OSError`` that the
operating system raised about a file (permissions, a folder where a file should be), which
is shown as one line too. Each class also derives from the standard exception a Python
caller would expect (``DataError`` is a ``ValueError``, ``MissingFileError`` a
``FileNotFoundError``, ``CheckpointError`` a ``RuntimeError``).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input; the message says what is wrong and names the file, key or id at fault."""


class InputError(UserError, ValueError):
    """A command-line argument, or a value given to a function in its place, is invalid."""


class DataError(UserError, ValueError):
    """An annotation file, one of its entries, an image file, a proposals file, a results
    file or a training log is invalid; the message names the file and the entry."""


class MissingFileError(UserError, FileNotFoundError):
    """A file that the input names does not exist."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file is unreadable, refused, or fails its hash check."""


class OutputError(UserError):
    """Writing would replace a file that is not this run's to replace: one of its inputs,
    another of its outputs, or another run's (a work dir in use, or holding a checkpoint)."""


class DiskFullError(UserError, OSError):
    """The device has no space left for a file being written; the file is left as it was."""
