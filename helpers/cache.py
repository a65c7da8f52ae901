"""Train-or-load: trained models and generated datasets cached on disk, safely.

A cache entry is one file: a magic tag, the SHA-256 of the payload, then the payload (``torch.save``
bytes, so tensors, arrays, state dicts and plain containers all fit). Writes go to a temporary file in
the same folder, are flushed to disk and renamed over the target, so an interruption leaves either the
old entry or the new one, never half of one. A file whose checksum does not match (truncated, corrupted)
is reported, deleted and rebuilt, never loaded.

The entry's name is a hash of the key (config, seed, …) and of the source code it depends on (by default
the whole ``helpers`` package), so a change of code never serves a stale result.

:func:`cached_step` is how a study module caches one step: the key is built from the very arguments that make the
call, with the device type and the torch version, so a key cannot drift from the call it describes.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import io
import json
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from helpers.paths import cache_dir, write_atomic

MAGIC = b"WBCACHE1"
_PACKAGE = Path(__file__).resolve().parent
_DIGEST_SIZE = hashlib.sha256().digest_size


class CorruptCacheError(RuntimeError):
    """A cache file exists but fails its checksum or cannot be decoded."""


def code_version(modules: Iterable[ModuleType] | None = None) -> str:
    """SHA-256 (hex, 16 chars) of the source files a result depends on.

    ``modules=None`` hashes every file of ``helpers``; otherwise the given modules and every ``helpers`` module
    they import, directly or through others (see :func:`dependency_files`). A study module's ``SPEC`` (its
    notebook's presets) is left out: a cached step receives the preset values it uses as arguments, which are in
    its key, so editing another preset value of the same notebook does not retrain it.
    """
    files = sorted(_PACKAGE.rglob("*.py")) if modules is None else dependency_files(modules)
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(_PACKAGE.parent) if path.is_relative_to(_PACKAGE.parent) else path.name)
                      .encode())
        digest.update(_without_spec(path.read_text()).encode())
    return digest.hexdigest()[:16]


def _without_spec(source: str) -> str:
    """``source`` without its top-level ``SPEC = ...`` assignment (lines removed), if it has one."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "SPEC" for t in node.targets):
            lines = source.splitlines(keepends=True)
            return "".join(lines[:node.lineno - 1] + lines[node.end_lineno:])
    return source


def dependency_files(modules: Iterable[ModuleType] = (), sources: Iterable[str] = ()) -> list[Path]:
    """The source files of ``modules`` and of every ``helpers`` module they import, transitively, sorted.

    ``sources`` are more Python texts (a notebook's code cells) whose ``helpers`` imports count the same way.
    """
    seen: set[Path] = set()
    pending = [Path(module.__file__).resolve() for module in modules]
    for source in sources:
        pending += _imported_helpers_files(source)
    while pending:
        path = pending.pop()
        if path not in seen:
            seen.add(path)
            pending += _imported_helpers_files(path.read_text())
    return sorted(seen)


def _imported_helpers_files(source: str) -> list[Path]:
    """The files of the ``helpers`` modules that ``source`` imports (absolute imports only)."""
    files = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        files += [found for name in names if (found := _module_file(name)) is not None]
    return files


def _module_file(dotted: str) -> Path | None:
    """The file of module ``helpers.x.y`` (a module or a package's ``__init__``); None for anything else."""
    parts = dotted.split(".")
    if parts[0] != "helpers":
        return None
    candidate = _PACKAGE.joinpath(*parts[1:])
    for path in (candidate.with_suffix(".py"), candidate / "__init__.py"):
        if path.is_file():
            return path.resolve()
    return None


def cache_key(key: str | Mapping[str, Any], modules: Iterable[ModuleType] | None = None) -> str:
    """File stem for ``key``: a readable name plus a hash of the key and the code version.

    Args:
        key: a name, or a mapping of everything the result depends on (its ``"name"`` entry, when present,
            starts the file name).
        modules: modules whose source the result depends on (default: the whole ``helpers`` package).
    """
    name = key if isinstance(key, str) else str(key.get("name", "entry"))
    text = json.dumps(key, sort_keys=True, default=_to_json)
    digest = hashlib.sha256(f"{text}|{code_version(modules)}".encode()).hexdigest()[:20]
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:60]
    return f"{slug}-{digest}"


def state_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (16 hex digits) of a state dict's names and values: names a trained model in another entry's key."""
    digest = hashlib.sha256()
    for name, value in sorted(state.items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def save(obj: Any, path: Path) -> None:
    """Write ``obj`` to ``path`` atomically, with a checksum."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    write_atomic(path, MAGIC + hashlib.sha256(payload).digest() + payload)


def load(path: Path) -> Any:
    """Read an entry written by :func:`save`; raise :class:`CorruptCacheError` if it fails its checksum."""
    raw = Path(path).read_bytes()
    header = len(MAGIC) + _DIGEST_SIZE
    if len(raw) < header or not raw.startswith(MAGIC):
        raise CorruptCacheError(f"{path}: not a cache file or truncated header")
    payload = raw[header:]
    if hashlib.sha256(payload).digest() != raw[len(MAGIC):header]:
        raise CorruptCacheError(f"{path}: checksum mismatch (truncated or corrupted)")
    # Our own files, verified above: full unpickling is safe and needed for numpy arrays and dicts.
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)


class Checkpoint:
    """Resumable state of a long training, stored beside its cache entry.

    The training loop calls :meth:`save` every so often with everything it needs to continue (model and
    optimiser state, step, generator state) and :meth:`load` at its start.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> Any | None:
        """The last saved state, or ``None`` when there is none or it is corrupt (then it is removed)."""
        return _load_or_discard(self.path)

    def save(self, state: Any) -> None:
        save(state, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def load_or_train(
    key: str | Mapping[str, Any],
    train_fn: Callable[..., Any],
    *,
    resumable: bool = False,
    modules: Iterable[ModuleType] | None = None,
    directory: Path | None = None,
) -> Any:
    """Return the cached result for ``key``, or compute it with ``train_fn`` and cache it.

    Args:
        key: what the result depends on (see :func:`cache_key`); include the config and the seed.
        train_fn: builds the result; called as ``train_fn()``, or ``train_fn(checkpoint)`` with a
            :class:`Checkpoint` when ``resumable`` (an interrupted run then resumes where it stopped).
        resumable: pass a checkpoint to ``train_fn``.
        modules: the code the result depends on (default: the whole ``helpers`` package).
        directory: cache folder (default ``cache/``).
    """
    folder = Path(directory) if directory is not None else cache_dir()
    stem = cache_key(key, modules)
    path = folder / f"{stem}.pt"
    cached = _load_or_discard(path)
    if cached is not None:
        print(f"cache: loaded {path.name}")
        return cached
    print(f"cache: building {path.name}")
    if resumable:
        checkpoint = Checkpoint(folder / f"{stem}.ckpt")
        result = train_fn(checkpoint)
    else:
        result = train_fn()
    if result is None:
        raise ValueError("train_fn returned None: nothing to cache")
    save(result, path)
    if resumable:
        checkpoint.clear()
    return result


def cached_step(name: str, fn: Callable[..., Any], /, *, resumable: bool = False, device: str | None = None,
                directory: Path | None = None, **kwargs: Any) -> Any:
    """``fn(**kwargs)``, from the cache when this exact call ran before on this device type and torch version.

    The key is ``name``, a fingerprint of every keyword argument (:func:`fingerprint`), the device type, the torch
    version, and the source of ``fn``'s module with every ``helpers`` module it imports. So the key is the call:
    nothing can be passed to ``fn`` that the key leaves out.

    Args:
        name: a readable name for the entry (starts its file name).
        fn: a module-level function (a closure or lambda is refused: what it captures would be left out of the key).
        resumable: also pass ``checkpoint=`` (a :class:`Checkpoint`), so an interrupted step resumes.
        device: passed on as ``device=``; its type (``cpu``, ``cuda``), not its index, enters the key.
        directory: cache folder (default ``cache/``).
        **kwargs: ``fn``'s arguments: plain values, tensors, arrays, modules, dataclasses, configs.

    Raises:
        ValueError: ``fn`` captures variables or is not a plain function.
        TypeError: an argument has no reproducible fingerprint.
    """
    if not inspect.isfunction(fn) or fn.__code__.co_freevars or fn.__name__ == "<lambda>":
        raise ValueError(f"cached_step({name!r}) needs a module-level function, got {fn!r}: a closure or lambda would "
                         "hide what it captures from the cache key")
    key = {"name": name, "function": f"{fn.__module__}.{fn.__qualname__}", "args": fingerprint(kwargs),
           "device": torch.device(device).type if device is not None else "cpu", "torch": torch.__version__}
    call = dict(kwargs)
    if device is not None:
        call["device"] = device

    def run(checkpoint: Checkpoint | None = None) -> Any:
        return fn(**call) if checkpoint is None else fn(checkpoint=checkpoint, **call)

    return load_or_train(key, run, resumable=resumable, modules=[inspect.getmodule(fn)], directory=directory)


def fingerprint(value: Any) -> Any:
    """A JSON-able summary of ``value`` that changes whenever the value does.

    Tensors and arrays become the SHA-256 of their dtype, shape and bytes; an ``nn.Module`` its class and state
    dict; a dataclass its class and fields; an object with ``as_dict()`` that dict; containers recurse.

    Raises:
        TypeError: a value of any other kind (say what it depends on by passing its parts instead).
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (torch.Tensor, np.ndarray)):
        array = value.detach().cpu().contiguous().numpy() if isinstance(value, torch.Tensor) else value
        digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
        return {"array": digest.hexdigest()[:20]}
    if isinstance(value, torch.nn.Module):
        return {"module": type(value).__qualname__, "state": state_fingerprint(value.state_dict())}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"dataclass": type(value).__qualname__,
                "fields": {f.name: fingerprint(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if hasattr(value, "as_dict"):
        return fingerprint(value.as_dict())
    if isinstance(value, Mapping):
        return {str(k): fingerprint(v) for k, v in sorted(value.items(), key=lambda item: str(item[0]))}
    if isinstance(value, (list, tuple)):
        return [fingerprint(v) for v in value]
    if isinstance(value, (Path, torch.device)):
        return str(value)
    if isinstance(value, torch.dtype):
        return str(value)
    raise TypeError(f"no reproducible fingerprint for a {type(value).__name__}: pass its parts to the cached step")


def _load_or_discard(path: Path) -> Any | None:
    if not path.exists():
        return None
    try:
        return load(path)
    except (CorruptCacheError, EOFError, RuntimeError, OSError) as error:
        warnings.warn(f"discarding unreadable cache file: {error}", stacklevel=3)
        path.unlink(missing_ok=True)
        return None


def _to_json(value: Any) -> Any:
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (Path, torch.device)):
        return str(value)
    raise TypeError(f"cache key holds a value that cannot be hashed reproducibly: {value!r}")
