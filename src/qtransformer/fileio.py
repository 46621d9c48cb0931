"""Atomic file-system helpers shared by datasets and checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def read_versioned_json(path: Path, version: int, error: type[Exception]) -> dict[str, Any]:
    """Read a JSON object whose 'format_version' must equal `version`; else raise `error` naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); the file is corrupted: restore it from a copy") from exc
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc}); it must be a readable JSON file") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc}); the file is corrupted: restore it from a copy") from exc
    except RecursionError as exc:
        raise error(f"{path}: nested too deeply to be read; the file is corrupted: restore it from a copy") from exc
    if not isinstance(data, dict) or data.get("format_version") != version:
        found = data.get("format_version") if isinstance(data, dict) else None
        raise error(f"{path}: field 'format_version' is {found!r}; this version of qtransformer reads {version}")
    return data


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(path: Path, flag: str) -> None:
    """Refuse, before any work is done, an output folder that is a file or that cannot be created or written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: {flag} names a file, not a folder; pass a folder (new or existing)")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise ValueError(f"{path}: {flag} lies under {base}, which is a file; pass a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"{path}: {flag}: {base} is not writable (permissions or a read-only file system); pass a folder you may write to")


def check_output_file(path: Path, flag: str) -> None:
    """Refuse, before any work is done, an output file path that is a folder or whose folder cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: {flag} names a folder; pass a file name such as {path / 'result.json'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{path}: {flag}: the file is not writable; pass another file name")
    check_output_dir(path.parent, f"the folder of {flag}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_temp_dir(prefix: str, parent: Path) -> Path:
    """A new uniquely named folder in `parent`, with the permissions of an ordinary new folder (0777
    less the umask: usually 0755), not tempfile's 0700, since it is renamed into place as a dataset,
    chunk or checkpoint that others on the machine may need to read."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, 0o777 & ~_umask())
    return path


def give_ordinary_mode(path: Path) -> None:
    """Set a file to the permissions of an ordinary new file (0666 less the umask: usually 0644); for
    writers that create files 0600 (safetensors)."""
    os.chmod(path, 0o666 & ~_umask())


def fsync_tree(root: Path) -> None:
    """Flush every file below `root` to disk."""
    for p in Path(root).rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, flush it, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def replace_dir(new: Path, final: Path) -> None:
    """Move folder `new` to `final`; an existing `final` is moved aside first and deleted only after."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(new, final)
        shutil.rmtree(old)
    else:
        os.replace(new, final)
