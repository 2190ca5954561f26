"""One directory of exported model files, shared by runs and processes, bounded in size.

An export (ONNX, run by ONNX Runtime or OpenVINO) takes seconds to a minute and 50-130 MB, and depends
only on the model (config and weights), the input size, the batch size and the exporter. Each file is
kept under a name hashed from all of those (`cache_key`), in `$SPARSEINST_CACHE_DIR`, else
`$XDG_CACHE_HOME/sparseinst`, else `~/.cache/sparseinst`:

- written atomically: to a hidden temporary name in the same directory, renamed into place once complete.
  A reader never sees half a file; two processes writing the same entry both rename a complete file (the
  last one stays); a process killed while writing leaves only its temporary file, which a later write
  removes once its owner is gone (or after an hour).
- least recently used out first: every use touches the file; after a write the oldest files are removed
  until at most `max_entries` files and `max_bytes` bytes remain (the newest always stays).
- nothing goes to the system's temporary folder, so a stopped process (SIGTERM, SIGKILL) leaves nothing
  there.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import torch

from .defaults import CACHE_DIR_VARIABLE, CACHE_MAX_BYTES, CACHE_MAX_ENTRIES

TEMP_PREFIX = ".tmp~"        # .tmp~<host>~<pid>~<token>~<name>: hidden, ends like the entry (e.g. ".onnx")
STALE_TEMP_SECONDS = 3600   # a temporary file this old is abandoned, whoever wrote it


def default_cache_dir() -> Path:
    """$SPARSEINST_CACHE_DIR, else $XDG_CACHE_HOME/sparseinst, else ~/.cache/sparseinst."""
    if os.environ.get(CACHE_DIR_VARIABLE):
        return Path(os.environ[CACHE_DIR_VARIABLE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sparseinst"


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of a model's preset, config and every state-dict tensor (name, dtype, shape and bytes).

    Two models with this fingerprint export to the same file. About 0.25 s for r50_giam's 132 MB.
    """
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    digest.update(json.dumps({"preset": getattr(model, "preset", None), "config": config}, sort_keys=True,
                             default=str).encode())
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy())
    return digest.hexdigest()


def cache_key(**fields) -> str:
    """A short hash of `fields` (JSON-serialisable): equal fields, equal key."""
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class ExportCache:
    """Exported files in one directory, least recently used removed beyond `max_entries`/`max_bytes`.

    >>> cache = ExportCache()                      # the default directory
    >>> path = cache.get_or_create("r18_giam_640x864_<key>.onnx", lambda tmp: export_onnx(model, tmp, size))
    """

    def __init__(self, directory: str | os.PathLike | None = None, max_entries: int = CACHE_MAX_ENTRIES,
                 max_bytes: int = CACHE_MAX_BYTES):
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(f"the export cache needs room for one file, got max_entries={max_entries}, "
                             f"max_bytes={max_bytes}")
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
        self.max_entries, self.max_bytes = max_entries, max_bytes

    def __repr__(self) -> str:
        return f"ExportCache({str(self.directory)!r}, max_entries={self.max_entries}, max_bytes={self.max_bytes})"

    def entries(self) -> list[Path]:
        """The complete files, most recently used first."""
        if not self.directory.is_dir():
            return []
        files = []
        for path in self.directory.iterdir():
            if path.name.startswith(".") or not path.is_file():
                continue
            try:
                files.append((path.stat().st_mtime_ns, path))
            except FileNotFoundError:   # removed by another process meanwhile
                continue
        return [path for _, path in sorted(files, reverse=True)]

    def get(self, name: str) -> Path | None:
        """The entry `name`, marked as just used, or None when there is none."""
        path = self.directory / name
        try:
            os.utime(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return path

    def get_or_create(self, name: str, write: Callable[[Path], object]) -> Path:
        """The entry `name`; when missing, `write(temporary_path)` creates it, then it is renamed into place."""
        path = self.get(name)
        if path is not None:
            return path
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RuntimeError(f"cannot create the export cache {self.directory} ({error}); set "
                               f"{CACHE_DIR_VARIABLE} to a writable folder") from error
        temporary = self.directory / f"{TEMP_PREFIX}{socket.gethostname()}~{os.getpid()}~{uuid.uuid4().hex[:8]}~{name}"
        try:
            write(temporary)
            with open(temporary, "rb") as file:   # on disk before it gets its name: no empty entry after a power cut
                os.fsync(file.fileno())
            os.replace(temporary, self.directory / name)
        finally:
            temporary.unlink(missing_ok=True)
        self.evict(keep=name)
        return self.directory / name

    def evict(self, keep: str | None = None) -> list[Path]:
        """Remove the least recently used entries beyond the limits (never `keep`), and abandoned temporary
        files; returns the entries removed."""
        self._remove_abandoned_temporaries()
        removed, count, size = [], 0, 0
        for path in self.entries():
            try:
                nbytes = path.stat().st_size
            except FileNotFoundError:
                continue
            if path.name != keep and (count + 1 > self.max_entries or size + nbytes > self.max_bytes):
                path.unlink(missing_ok=True)
                removed.append(path)
                continue
            count, size = count + 1, size + nbytes
        return removed

    def _remove_abandoned_temporaries(self) -> None:
        host = socket.gethostname()
        now = time.time()
        for path in self.directory.glob(f"{TEMP_PREFIX}*"):
            _, owner_host, pid, *_ = path.name.split("~", 4) + ["", ""]
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            owner_gone = owner_host == host and pid.isdigit() and not _alive(int(pid))
            if owner_gone or age > STALE_TEMP_SECONDS:
                path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process
        return True
    return True
