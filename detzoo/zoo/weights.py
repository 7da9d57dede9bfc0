"""Published weights by zoo model name: look the name up in the zoo, fetch the file into a
cache, check its sha256 or md5, convert it from its toolbox's format to a detzoo checkpoint.

``detzoo.load_model(NAME, pretrained=True)`` and a zoo model name in place of a checkpoint
file (``detzoo test CONFIG NAME``, ``load_model(config, checkpoint=NAME)``) come here.

* Lookup: ``detzoo.zoo.metafile.find_model`` (the model index under the config root), whose
  ``Weights`` give the URL, the file's check and its format.
* Cache: ``$DETZOO_CACHE``, else ``~/.cache/detzoo``. Files named by their hash keep their
  published names (``<name>-<sha256[:8]>.pth``), which the hash makes unique. Detectron names
  every file ``model_final.pkl`` and publishes its md5 at ``<URL>.md5sum``: such a file is
  cached as ``<zoo model name>-model_final.pkl``, its md5 file beside it as
  ``<zoo model name>-model_final.pkl.md5sum``. Files are checked on every use
  (``detzoo.download.fetch_checkpoint``); a file failing the check is removed. A
  download that fails says which URL to fetch and the path to put it at (and the md5 file's),
  so working offline is putting the files there by hand.
* Conversion: every time, in memory. The converters rename keys and move a few rows, a
  small fraction of the time that reading the file takes, so a second, converted copy in
  the cache would only add a file whose hash nobody published. ``detzoo convert`` uses the
  same ``detzoo.zoo.converters.convert_checkpoint``.
"""

from __future__ import annotations

from pathlib import Path

from detzoo.download import cache_dir, fetch_checkpoint
from detzoo.engine.checkpoint import load_checkpoint
from detzoo.errors import CheckpointError, MissingFileError
from detzoo.zoo.converters import CONVERTERS, convert_checkpoint, detect_format
from detzoo.zoo.metafile import ZooError, find_model


def read_weights(checkpoint: str | Path) -> tuple[dict, Path, Path | None]:
    """The detzoo checkpoint that ``checkpoint`` names, the file it was read from, and its
    zoo model's config (None for a file).

    ``checkpoint`` is a checkpoint file, or, when no such file exists and it is a bare name,
    a zoo model whose published weights are fetched into ``cache_dir()``, checked and converted.
    """
    path = Path(checkpoint)
    name = str(checkpoint)
    if path.is_file() or path.name != name:
        return load_checkpoint(path), path, None
    try:
        model = find_model(name)
    except ZooError as e:
        raise MissingFileError(f"checkpoint {name!r} is neither a file nor a zoo model: {e}") from e
    if model.weights is None:
        raise CheckpointError(f"zoo model {name} has no published weights ({model.metafile} lists none)")
    weights = model.weights
    local = fetch_checkpoint(weights.url, cache_dir=cache_dir(), sha256=weights.sha256, md5_url=weights.md5,
                             cache_prefix="" if weights.sha256 is not None else f"{model.name}-")
    return convert_checkpoint(load_checkpoint(local), weights.format), local, model.config


def read_detector(checkpoint: str | Path) -> dict:
    """A trained detector to start a training from (``runtime.load_from``): a zoo model
    name (its published weights, fetched and converted), or a checkpoint file of detzoo or of
    the toolboxes it converts, whose format is told from its keys (``detect_format``)."""
    state, path, _ = read_weights(checkpoint)
    if path.is_file() and path == Path(checkpoint):  # a file: in any toolbox's layout
        source_format = detect_format(state)
        if source_format is None:
            raise CheckpointError(f"{path} is not a detector checkpoint of detzoo, {', '.join(CONVERTERS)} "
                                  "(its keys fit none of their layouts)")
        if source_format != "detzoo":
            state = convert_checkpoint(state, source_format)
    return state
