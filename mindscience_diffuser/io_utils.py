"""Atomic writes: a file or a folder appears complete under its name, or not at all.

Both variants write to a hidden temporary sibling (same folder, so the final rename is atomic on
POSIX and Windows) and rename it over the target once the write has succeeded; on any failure
the temporary is removed and the previous target, if any, is left as it was.

The temporary is created the way ``open(path, "w")`` / ``os.mkdir(path)`` create a new target,
so the result carries the user's umask (``tempfile.mkstemp`` / ``mkdtemp`` would leave it
readable by the owner only); a file that replaces an existing one keeps that file's permission
bits, as writing it in place would, whatever mode the writer itself left on the temporary. An
``OSError`` names the path the caller gave, never the temporary.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]

_ATTEMPTS = 100


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{secrets.token_hex(4)}")


def _create_unique(path: Path, tag: str, create) -> Path:
    """A fresh hidden sibling of ``path``, made by ``create`` (which fails if it exists)."""
    for _ in range(_ATTEMPTS):
        candidate = _sibling(path, tag)
        try:
            create(candidate)
        except FileExistsError:
            continue
        except OSError as err:
            raise _renamed(err, candidate, path) from err
        return candidate
    raise FileExistsError(f"cannot create a temporary file next to {path}")


def _touch_new(path: Path) -> None:
    with open(path, "xb"):
        pass


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _renamed(err: OSError, temporary: Path, target: Path) -> OSError:
    """``err`` as the same kind of error about ``target`` (the path the caller knows)."""
    if err.errno is not None and err.filename is not None and str(temporary) in str(err.filename):
        filename = str(err.filename).replace(str(temporary), str(target))
        try:
            renamed = type(err)(err.errno, err.strerror, filename)
        except TypeError:
            renamed = OSError(err.errno, err.strerror, filename)
    else:
        message = str(err).replace(str(temporary), str(target))
        if str(target) not in message:
            message = f"cannot write {target}: {message}"
        try:
            renamed = type(err)(message)
        except TypeError:
            renamed = OSError(message)
    return renamed


@contextlib.contextmanager
def _staged(path: Path, create, commit) -> Iterator[Path]:
    """A temporary sibling made by ``create``, moved to ``path`` by ``commit(tmp, path)`` after the
    block; removed on any failure, and an ``OSError`` is re-raised naming ``path``."""
    tmp = _create_unique(path, "tmp", create)
    try:
        yield tmp
        commit(tmp, path)
    except OSError as err:
        raise _renamed(err, tmp, path) from err
    finally:
        _remove(tmp)


@contextlib.contextmanager
def atomic_file(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; write it; it becomes ``path`` when the block ends.

    An exception in the block (or in the rename) removes the temporary and leaves ``path`` as it
    was. The temporary exists (empty) when yielded; writers that replace it (``numpy.save``,
    ``safetensors``' ``save_file``, PIL's ``save``) are fine.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_file(folder / "notes.txt") as tmp:
    ...     _ = tmp.write_text("complete")
    >>> sorted(p.name for p in folder.iterdir()), (folder / "notes.txt").read_text()
    (['notes.txt'], 'complete')
    """
    path = Path(path)
    with _staged(path, _touch_new, os.replace) as tmp:
        # The mode open() gives a new file (umask applied), or the replaced file's.
        mode = stat.S_IMODE((path if path.exists() else tmp).stat().st_mode)
        yield tmp
        # Some writers swap in a file of their own (safetensors' save_file leaves 0o600).
        if stat.S_IMODE(tmp.stat().st_mode) != mode:
            os.chmod(tmp, mode)


def _swap_in(tmp: Path, path: Path) -> None:
    """Rename the folder ``tmp`` to ``path``, moving an existing ``path`` aside and deleting it after."""
    if not path.exists():
        os.rename(tmp, path)
        return
    old = _sibling(path, "old")
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except OSError:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(path: PathLike) -> Iterator[Path]:
    """Yield a new empty temporary folder next to ``path``; it becomes ``path`` when the block ends.

    An existing ``path`` is replaced as a whole (moved aside, the new folder renamed in, the old
    one deleted), so a crash leaves either the previous folder or the complete new one. The
    parent folder is created if needed. An exception removes the temporary folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _staged(path, os.mkdir, _swap_in) as tmp:
        yield tmp


def check_output_file(path: PathLike, what: str = "path") -> Path:
    """``path`` as a file the caller may write, checked before any work starts: not a folder, in a
    folder that exists and is writable. Raises ``IsADirectoryError`` / ``FileNotFoundError`` /
    ``PermissionError`` (``OSError``\\ s) whose messages start with ``what`` and the path."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder; give a file path")
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {path}: output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {path}: cannot write to the folder {folder} (permission denied)")
    return path
