"""The small JSON files of a run (stage metrics, adapter manifests, the data report): read with an error that names the
file, written atomically. A file cut mid-write (a full disk, a session killed while writing) gave a bare
``JSONDecodeError`` that named no file; a temporary file in the same folder, then ``os.replace``, leaves either the
old file or the new one (review, 2026-12-07)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_json(path: Path, error: type[Exception] = ValueError) -> dict[str, Any]:
    """``path``'s JSON object; ``error`` (the caller's own type) naming the file when it is unreadable, not JSON or
    not an object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise error(f"{path}: not readable as JSON ({exc}): cut while it was written, or altered") from exc
    if not isinstance(value, dict):
        raise error(f"{path}: not a JSON object")
    return value


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` to ``path`` (indented, ``default=str``) through a temporary file in the same folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # opened as usual: the umask's mode, not mkstemp's 0600
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(json.dumps(value, indent=1, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
