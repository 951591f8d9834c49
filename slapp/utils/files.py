"""Files that appear whole or not at all.

Every output of slapp (manifests, output JSON, plots) is written to a
temporary file in the destination's directory and renamed over the
destination, so a crash or an error never leaves a partial file, and a reader
sees the old file or the new one.
"""
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def stage_bytes(path: str | Path, content: bytes) -> Path:
    """Write ``content`` to a new temporary file beside ``path`` and return it.

    The caller renames it into place with ``os.replace`` once everything else
    it depends on has succeeded (e.g. a database commit), or deletes it.

    Parameters
    ----------
    path : str or Path
        The final destination; its directory must exist.
    content : bytes
        The whole file.

    Returns
    -------
    Path
        The temporary file, with the permissions the umask gives a new file
        (``mkstemp``'s 0600 would hide outputs from the rest of the lab).
    """
    path = Path(path).absolute()
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
    except BaseException:
        os.unlink(temporary)
        raise
    return Path(temporary)


def write_bytes_atomically(path: str | Path, content: bytes) -> None:
    """Replace ``path`` with ``content`` in one step.

    Parameters
    ----------
    path : str or Path
        The destination; its directory must exist.
    content : bytes
        The whole file.
    """
    temporary = stage_bytes(path, content)
    try:
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def json_bytes(document: Any) -> bytes:
    """``document`` as indented JSON text with a final newline, UTF-8 encoded."""
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def write_json_atomically(path: str | Path, document: Any) -> None:
    """Replace ``path`` with ``document`` as indented JSON, in one step."""
    write_bytes_atomically(path, json_bytes(document))
