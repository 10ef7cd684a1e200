"""Target folders of the SWAS level-1 products: one folder per target name.

The mapping ``target_folder(name) -> folder`` is

* **safe as a path** on POSIX, macOS and Windows filesystems: ASCII letters,
  digits and ``. + - _ ~`` only, lower case, at most 64 characters, never
  ``.``/``..``, never starting with ``.`` or ``-``, never ending with ``.``,
  never a Windows device name (``CON``, ``NUL``, ``COM1``, ...);
* **deterministic** (a function of the name alone, so a re-run or a later run
  on more data sorts into the same folder);
* **injective** (distinct names give distinct folders), also on
  case-insensitive filesystems:

  - a name in the mission's canonical form (no lower-case letters, only
    ``A-Z 0-9 . + - _``, not starting with ``.``/``-``, not ending with ``.``,
    not a device name, at most 64 characters) maps to itself in lower case:
    ``'OMC-1' -> 'omc-1'``, ``'SGRA-150' -> 'sgra-150'``. Two such names with
    the same lower case are the same name, so this part is injective;
  - any other name (lower-case letters, ``/``, spaces, other printable or
    non-ASCII characters, ...) maps to a readable slug plus ``~`` and 10 hex
    digits of the SHA-256 of the exact name:
    ``'G34.3+0.15/A' -> 'g34.3+0.15_a~<hash>'`` (one folder, not two),
    ``'sgra' -> 'sgra~<hash>'``. Canonical folders never contain ``~``, so the
    two families cannot meet; within the second family a collision would need
    a 40-bit hash collision, which ``write_target_index`` detects and refuses.

The mapping is recorded, so it is reversible: every folder holds
``target.json`` (the exact original OBJECT), and ``targets.tsv`` at the top of
the output folder lists ``folder<TAB>object`` for every target folder there.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from reduce.errors import ReduceError
from reduce.io.atomic import atomic_write_bytes

INDEX_NAME = "target.json"  #: per-folder record of the original target name
TOP_INDEX_NAME = "targets.tsv"  #: folder<TAB>object for every target folder under the output folder
MAPPING_VERSION = "skyreduce-target-folder-1"

_CANONICAL = re.compile(r"[A-Z0-9.+\-_]+")
_UNSAFE = re.compile(r"[^a-z0-9.+\-_]")
_MAX_LEN = 64
_SLUG_LEN = 48
_HASH_LEN = 10
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def _reserved(folder: str) -> bool:
    """True for Windows device names (also with an extension, ``nul.txt``)."""
    return folder.split(".", 1)[0] in _RESERVED


def _is_canonical(name: str) -> bool:
    return (
        0 < len(name) <= _MAX_LEN
        and _CANONICAL.fullmatch(name) is not None
        and name[0] not in ".-"
        and not name.endswith(".")
        and not _reserved(name.lower())
    )


def target_folder(name: str) -> str:
    """The folder name (one path component) of target ``name``; see the module doc for the rules."""
    if not isinstance(name, str):
        raise TypeError(f"target name must be a str, got {type(name).__name__}")
    if _is_canonical(name):
        return name.lower()
    slug = _UNSAFE.sub("_", name.lower())[:_SLUG_LEN].rstrip(".")
    if not slug or slug[0] in ".-":
        slug = "_" + slug
    if _reserved(slug):
        slug = "_" + slug
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]
    return f"{slug}~{digest}"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data, fsync=True)


def _index_bytes(name: str, folder: str) -> bytes:
    record = {"folder": folder, "mapping": MAPPING_VERSION, "object": name}
    return (json.dumps(record, sort_keys=True, ensure_ascii=True, indent=1) + "\n").encode("ascii")


def write_target_index(out_dir, name: str) -> Path:
    """Create ``out_dir/<target_folder(name)>/`` with its ``target.json``; returns the folder.

    Raises ReduceError if the folder already records a different name (a hash
    collision: never silently mixes two targets). Rewrites nothing that is
    already right, so re-runs leave the index bytes unchanged.
    """
    folder = target_folder(name)
    path = Path(out_dir) / folder
    path.mkdir(parents=True, exist_ok=True)
    index = path / INDEX_NAME
    data = _index_bytes(name, folder)
    if index.exists():
        try:
            recorded = json.loads(index.read_text("ascii"))["object"]
        except (OSError, ValueError, KeyError) as exc:
            raise ReduceError(f"{index}: unreadable target index ({exc}); remove it to re-create it") from exc
        if recorded != name:
            raise ReduceError(
                f"{index}: target folder {folder!r} already holds target {recorded!r}, not {name!r} "
                "(folder-name collision); products not written")
        if index.read_bytes() == data:
            return path
    _atomic_write_bytes(index, data)
    return path


def read_target_index(out_dir) -> dict[str, str]:
    """{folder: original target name} of every target folder under ``out_dir`` (from the ``target.json`` files)."""
    out = {}
    for index in sorted(Path(out_dir).glob(f"*/{INDEX_NAME}")):
        out[index.parent.name] = json.loads(index.read_text("ascii"))["object"]
    return out


def target_name(folder) -> str:
    """The original target name of a target folder (reads its ``target.json``)."""
    return json.loads((Path(folder) / INDEX_NAME).read_text("ascii"))["object"]


def write_top_index(out_dir) -> Path:
    """Rewrite ``out_dir/targets.tsv`` (``folder<TAB>object`` per line, sorted; names JSON-quoted when they
    hold a tab, a newline, a quote or non-ASCII characters, so every line parses back)."""
    lines = ["# folder\tobject (target name as scheduled; JSON-quoted if it contains odd characters)"]
    for folder, name in read_target_index(out_dir).items():
        plain = name.isascii() and name.isprintable() and "\t" not in name and not name.startswith('"')
        lines.append(f"{folder}\t{name if plain else json.dumps(name)}")
    path = Path(out_dir) / TOP_INDEX_NAME
    data = ("\n".join(lines) + "\n").encode("ascii")
    if not (path.exists() and path.read_bytes() == data):
        _atomic_write_bytes(path, data)
    return path
