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
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format_version") != version:
        found = data.get("format_version") if isinstance(data, dict) else None
        raise error(f"{path}: field 'format_version' is {found!r}; this version of qtransformer reads {version}")
    return data


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
