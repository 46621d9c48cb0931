"""Import offline-RL datasets from other formats: D4RL arrays, robomimic HDF5 and Minari datasets.

Each reader turns its source into per-episode dicts and builds the dataset with
`EpisodeDataset.from_episodes`, so the usual validation runs; `import_dataset` then saves it, and
nothing is written when a check fails. Every bad input raises `ImportSourceError` (a `DatasetError`)
with a one-line message naming the file, the episode, the field and the fix.

One module per format (d4rl.py, robomimic.py, minari.py); common.py holds what they share: the error,
the result, the checks, and the rules every reader applies (its docstring lists them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..store import EpisodeStore
from .common import INSTALL_HINT, ImportResult, ImportSourceError
from .d4rl import read_d4rl
from .minari import read_minari
from .robomimic import read_robomimic

FORMATS = ("d4rl", "robomimic", "minari")
READERS = {"d4rl": read_d4rl, "robomimic": read_robomimic, "minari": read_minari}


def import_dataset(
    source, fmt: str, out, env_id: Optional[str] = None, source_label: Optional[str] = None, images: bool = True
) -> ImportResult:
    """Read `source` in format `fmt` and save it as a dataset folder at `out` (nothing written on failure).
    `images=False` skips image observations (robomimic, Minari; D4RL files hold none)."""
    if fmt not in READERS:
        raise ImportSourceError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    extra = {} if fmt == "d4rl" else {"images": images}
    result = READERS[fmt](source, env_id=env_id, source=source_label, **extra)
    EpisodeStore.create(Path(out), result.dataset)
    return result


__all__ = ["FORMATS", "INSTALL_HINT", "ImportResult", "ImportSourceError", "import_dataset", "read_d4rl", "read_minari", "read_robomimic"]
