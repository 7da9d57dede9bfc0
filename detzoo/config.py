"""Config files: plain-data Python files with mmdetection-style ``_base_`` inheritance.

A config file is parsed, never executed: it may only hold top-level ``NAME = value``
assignments whose values are literals (str, int, float, bool, None, lists, tuples,
``{...}`` dicts, unary minus) or ``dict(key=value, ...)`` calls built from the same.
Lists and tuples are kept as written (a tuple stays a tuple); on merge both are
replaced whole, like every non-dict value.

A ``_base_`` entry is a path relative to the file, or ``zoo://NAME``: the zoo config that
``load_config(NAME)`` loads (looked up under ``config_root()``), so a user's own config can
build on a zoo config wherever detzoo is installed.
"""

from __future__ import annotations

import ast
import copy
import difflib
import inspect
import keyword
import os
import pprint
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from detzoo.errors import UserError

_SCALARS = (str, int, float, bool, type(None))
SECTIONS = ("model", "data", "optim", "schedule", "runtime")  # a config's top-level keys, each a dict
ZOO_BASE = "zoo://"  # _base_ = "zoo://NAME": the zoo config of that name


class ConfigError(UserError, ValueError):
    """A config file, override or config section is invalid."""


def config_root() -> Path:
    """Directory searched for configs given by bare name: ``$DETZOO_CONFIG_ROOT`` or the
    zoo that ships in the package, ``detzoo/configs``."""
    env = os.environ.get("DETZOO_CONFIG_ROOT")
    return Path(env) if env else Path(__file__).resolve().parent / "configs"


def load_config(path_or_name: str | Path) -> dict:
    """Load a config file (path, or bare name looked up under ``config_root()``) with its bases merged."""
    text = str(path_or_name)
    if Path(text).name == text and not text.endswith(".py"):
        path = _find_by_name(text)
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        path = path.resolve()
    cfg = merge({}, _load(path, ()))
    try:
        check_sections(cfg)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return cfg


def check_sections(cfg: Mapping) -> None:
    """Raise ``ConfigError`` for a section of ``SECTIONS`` that ``cfg`` holds and that is not
    a dict (``schedule`` may also be a preset's name): what every entry point reads first."""
    for key in SECTIONS:
        value = cfg.get(key, {})
        if key == "schedule" and not isinstance(value, (dict, str)):
            raise ConfigError(f"schedule must be a dict or a schedule's name, got {value!r}")
        if key != "schedule":
            check_dict(key, value)


def check_dict(section: str, cfg: Any) -> None:
    """Raise ``ConfigError`` where the section ``cfg`` is not a dict (``--set optim=None``)."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{section} must be a dict, got {cfg!r}")


def merge(base: dict, child: dict) -> dict:
    """Return ``base`` updated by ``child``: dicts merge key by key, other values are replaced.

    A child dict holding ``_delete_=True`` replaces the base dict instead of merging into it.
    Inputs are not mutated and the result shares no mutable objects with them.
    """
    child = dict(child)
    out = {} if child.pop("_delete_", False) else copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict):
            sub = out.get(key)
            out[key] = merge(sub if isinstance(sub, dict) else {}, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(cfg: dict, overrides: Sequence[str], *, given_by: str = "--set") -> dict:
    """Return a copy of ``cfg`` with ``a.b.c=VALUE`` items applied: VALUE is a Python
    literal, or else (and for a literal other than a string, dict or None) a string where
    the key holds a string or None. It must be of the kind the key holds (``_fits``): a
    number for a number, a list or tuple for a list or tuple... A dict merges into the
    dict the key holds, key by key and checked alike, keys the dict lacks added (as
    mmengine merges), unless it holds ``_delete_=True``: then it replaces it. Anything else
    (``optim.lr=abc``, ``optim.lr="'abc'"``, ``data.images_per_gpu=[2]``, an unknown dotted
    key) is a ``ConfigError`` naming the key and the value, after ``given_by`` and the item."""
    out = copy.deepcopy(cfg)
    for item in overrides:
        try:
            _apply(out, item)
            check_sections(out)
        except ConfigError as e:
            raise ConfigError(f"{given_by} {item!r}: {e}") from None
    return out


def _apply(cfg: dict, item: str) -> None:
    """Apply one ``a.b.c=VALUE`` item of ``apply_overrides`` to ``cfg`` in place."""
    dotted, sep, text = item.partition("=")
    if not sep or not all(dotted.split(".")):
        raise ConfigError("expected KEY.PATH=VALUE, e.g. optim.lr=0.01")
    keys = dotted.split(".")
    node = cfg
    for depth, key in enumerate(keys):
        where = ".".join(keys[:depth])
        if not isinstance(node, dict):
            raise ConfigError(f"{where!r} is a {type(node).__name__}, not a dict, so it has no key {key!r}")
        if key not in node:
            raise ConfigError(_unknown_key(where, key, node))
        if depth < len(keys) - 1:
            node = node[key]
    node[keys[-1]] = _new_value(dotted, node[keys[-1]], _parse_value(dotted, text, node[keys[-1]]))


def check_keys(section: str, cfg: Mapping, allowed: Iterable[str]) -> None:
    """Raise ``ConfigError`` for the first key of ``cfg`` not in ``allowed`` (``section`` prefixes the message),
    or where ``cfg`` is not a dict at all (``--set optim=None``)."""
    check_dict(section or "the config", cfg)
    allowed = list(allowed)
    for key in cfg:
        if key not in allowed:
            raise ConfigError(_unknown_key(section, key, allowed))


def check_not_none(section: str, cfg: Mapping, keys: Iterable[str]) -> None:
    """Raise ``ConfigError`` for the first of ``keys`` that ``cfg`` sets to None: keys that
    take no None, which ``--set`` would let through (``_fits`` lets None replace any value)."""
    for key in keys:
        if key in cfg and cfg[key] is None:
            raise ConfigError(f"{_dotted(section, key)} may not be None")


def check_signature(section: str, cfg: Mapping, fn: Callable, *, exclude: Iterable[str] = ()) -> None:
    """Check ``cfg`` against the keyword parameters of ``fn`` (minus ``exclude``): unknown and
    missing keys, and None for a parameter whose annotation and default do not admit it
    (``--set model.neck.out_channels=None``: ``_fits`` lets None replace any value)."""
    exclude = set(exclude)
    params = inspect.signature(fn).parameters.values()
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in exclude]
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        check_keys(section, cfg, [p.name for p in named])
    missing = [_dotted(section, p.name) for p in named if p.default is p.empty and p.name not in cfg]
    if missing:
        name = getattr(fn, "__qualname__", repr(fn))
        raise ConfigError(f"missing required key(s) {', '.join(map(repr, missing))} for {name}")
    for p in named:
        if p.name not in cfg or p.annotation is p.empty:
            continue
        value = cfg[p.name]
        if value is None and not _admits_none(p):
            raise ConfigError(f"{_dotted(section, p.name)} may not be None; it takes {_annotation(p)}")
        if value is not None and not _admits_kind(value, _annotation(p)):
            raise ConfigError(f"{_dotted(section, p.name)}: {value!r} ({_kind(value)}) is not a valid value; "
                              f"it takes {_annotation(p)}")


def _annotation(p: inspect.Parameter) -> str:
    """A parameter's annotation as written (a string under ``from __future__ import annotations``)."""
    return p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation)


# the kinds (``_kind``) an annotation's outer type takes; any other type (Size, Callable, ...) is not checked
_ANNOTATION_KINDS = {
    "int": ("number",), "float": ("number",), "bool": ("bool",), "str": ("str",),
    "Sequence": ("sequence",), "list": ("sequence",), "tuple": ("sequence",),
    "Mapping": ("dict",), "dict": ("dict",),
}


def _admits_kind(value: Any, annotation: str) -> bool:
    """Whether a config value (not None) fits the outer type of a parameter's ``annotation``
    (``int | None``, ``Sequence[int]``, ``tuple[float, float]``): a number for ``int`` /
    ``float`` (an ``int`` must be integral), a list or tuple for a sequence type, a dict for
    a mapping. Annotations naming other types admit anything."""
    if annotation.startswith("Optional[") and annotation.endswith("]"):
        annotation = annotation[len("Optional["):-1]
    kinds = []
    for part in _top_level(annotation):
        head = part.split("[", 1)[0].strip().rsplit(".", 1)[-1]  # collections.abc.Sequence[str]: Sequence
        if head == "None":
            continue
        if head not in _ANNOTATION_KINDS:
            return True
        kinds.append(head)
    kind = _kind(value)
    if "int" in kinds and "float" not in kinds and isinstance(value, float):
        return False
    return any(kind in _ANNOTATION_KINDS[k] for k in kinds)


def _top_level(annotation: str) -> list[str]:
    """The ``|``-separated parts of an annotation, outside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(annotation):
        depth += (char == "[") - (char == "]")
        if char == "|" and depth == 0:
            parts.append(annotation[start:i])
            start = i + 1
    return [*parts, annotation[start:]]


def _admits_none(p: inspect.Parameter) -> bool:
    """Whether ``p`` (annotated) takes None: defaulting to None, or annotated ``... | None``,
    ``Optional[...]`` or ``Any``."""
    if p.default is None:
        return True
    return any(word in _annotation(p) for word in ("None", "Optional", "Any"))


def dump_config(cfg: dict) -> str:
    """Config file text (sorted ``key = value`` lines) that ``load_config`` reads back to an equal dict."""
    lines = []
    for key in sorted(cfg, key=str):
        if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
            raise ConfigError(f"dump_config: top-level key {key!r} is not a valid Python name")
        lines.append(f"{key} = {pprint.pformat(cfg[key], width=100, compact=True, sort_dicts=False)}\n")
        _parse(lines[-1], f"<dump_config key {key!r}>")  # fail now, not at load time, on non-plain data
    return "".join(lines)


def _find_by_name(name: str) -> Path:
    root = config_root()
    if not root.is_dir():
        raise ConfigError(f"cannot look up config '{name}': config root {root} is not a directory "
                          "(set DETZOO_CONFIG_ROOT or pass a file path)")
    files = sorted(root.rglob("*.py"))
    hits = [f for f in files if f.stem == name]
    if len(hits) > 1:
        raise ConfigError(f"config name '{name}' is ambiguous, several files match: "
                          + ", ".join(map(str, hits)))
    if not hits:
        raise ConfigError(f"no config named '{name}' under {root}"
                          + _did_you_mean(name, sorted({f.stem for f in files}), n=3))
    return hits[0].resolve()


def _load(path: Path, chain: tuple[Path, ...]) -> dict:
    if path in chain:
        raise ConfigError("_base_ cycle: " + " -> ".join(map(str, (*chain, path))))
    try:
        source = path.read_bytes().decode()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start})") from None
    own = _parse(source, str(path))
    bases = own.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, (list, tuple)) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path string or a list of them, got {bases!r}")
    cfg: dict = {}
    for base in bases:
        cfg = merge(cfg, _load(_base_path(path, base), (*chain, path)))
    # a file without bases keeps its _delete_ marks: they apply where it is merged as a
    # base (a fragment in a _base_ list replacing what the bases before it set);
    # load_config's final merge drops any left
    return merge(cfg, own) if bases else own


def _base_path(path: Path, base: str) -> Path:
    """The file a ``_base_`` entry of ``path`` names: ``zoo://NAME`` or a path relative to ``path``."""
    if base.startswith(ZOO_BASE):
        try:
            return _find_by_name(base.removeprefix(ZOO_BASE))
        except ConfigError as exc:
            raise ConfigError(f"{path}: _base_ {base!r}: {exc}") from exc
    base_path = (path.parent / base).resolve()
    if not base_path.is_file():
        raise ConfigError(f"{path}: _base_ file {base!r} not found (looked for {base_path})")
    return base_path


def _parse(source: str, filename: str) -> dict:
    """Evaluate the top-level ``NAME = value`` assignments of a config source without executing it."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise ConfigError(f"{filename}:{exc.lineno}: syntax error: {exc.msg}") from exc
    pairs = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            continue  # docstring
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            raise _not_allowed(filename, stmt)
        pairs.append((stmt.targets[0].id, stmt.value))
    return _evaluate_pairs(filename, pairs)


def _evaluate_pairs(filename: str, pairs: Iterable[tuple[Any, ast.expr]]) -> dict:
    out = {}
    for key, node in pairs:
        if key in out:
            raise ConfigError(f"{filename}:{node.lineno}: key {key!r} is given twice")
        out[key] = _evaluate(filename, node)
    return out


def _evaluate(filename: str, node: ast.expr) -> Any:
    """Value of a literal / ``dict(...)`` expression; anything else is a ``ConfigError``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, _SCALARS):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _evaluate(filename, node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value
    if isinstance(node, ast.List):
        return [_evaluate(filename, elt) for elt in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_evaluate(filename, elt) for elt in node.elts)
    if isinstance(node, ast.Dict) and all(isinstance(k, ast.Constant) and isinstance(k.value, _SCALARS)
                                          for k in node.keys):
        return _evaluate_pairs(filename, ((k.value, v) for k, v in zip(node.keys, node.values)))
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict"
            and not node.args and all(kw.arg for kw in node.keywords)):
        return _evaluate_pairs(filename, ((kw.arg, kw.value) for kw in node.keywords))
    raise _not_allowed(filename, node)


def _not_allowed(filename: str, node: ast.AST) -> ConfigError:
    snippet = ast.unparse(node).splitlines()[0][:60]
    return ConfigError(f"{filename}:{node.lineno}: {snippet!r} ({type(node).__name__}) is not allowed in a config; "
                       "only NAME = <literal or dict(key=value, ...)> assignments are")


def _parse_value(key: str, text: str, current: Any) -> Any:
    """The value ``text`` given for ``key``, which holds ``current``."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if current is None or isinstance(current, str):
            return text
        raise ConfigError(f"{text!r} is not a valid value for {key}, which holds {type(current).__name__} "
                          f"{current!r}; give a Python literal, e.g. {key}={current!r}") from None
    if isinstance(current, str) and not isinstance(value, (str, dict, type(None))):
        return text  # a file or folder named 2017
    return value


def _kind(value: Any) -> str:
    """What ``_fits`` compares: None, bool, number, str, sequence or dict (else the type's name)."""
    if value is None or isinstance(value, bool):
        return repr(value) if value is None else "bool"
    for kind, types in (("number", (int, float)), ("str", str), ("sequence", (list, tuple)), ("dict", dict)):
        if isinstance(value, types):
            return kind
    return type(value).__name__


def _fits(value: Any, current: Any) -> bool:
    """Whether ``value`` may replace ``current``: of the same kind, None for anything or
    anything for None, and a dict for a str or a str for a dict (a named preset or its
    spec, as ``schedule`` takes)."""
    kinds = {_kind(value), _kind(current)}
    return len(kinds) == 1 or "None" in kinds or kinds == {"str", "dict"}


def _new_value(key: str, current: Any, value: Any) -> Any:
    """``value`` for ``key`` (which holds ``current``) after ``_fits``; a dict merged into
    the dict there unless it holds ``_delete_=True``."""
    if isinstance(current, dict) and isinstance(value, dict):
        if value.get("_delete_"):
            return merge({}, value)
        merged = dict(current)
        for sub, sub_value in value.items():  # a key the section lacks is added (its constructor checks it)
            merged[sub] = _new_value(f"{key}.{sub}", current[sub], sub_value) if sub in current else sub_value
        return merged
    if not _fits(value, current):
        raise ConfigError(f"{value!r} ({_kind(value)}) is not a valid value for {key}, which holds "
                          f"{_kind(current)} {current!r}")
    return value


def _dotted(section: str, key: Any) -> str:
    return f"{section}.{key}" if section else str(key)


def _did_you_mean(word: Any, candidates: Iterable[str], n: int = 1) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=n)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


def _unknown_key(section: str, key: Any, valid: Iterable[Any]) -> str:
    valid = sorted(map(str, valid))
    return (f"unknown key {_dotted(section, key)!r}{_did_you_mean(key, valid)} "
            f"(valid keys: {', '.join(valid)})")
