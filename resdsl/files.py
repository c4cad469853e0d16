"""Every file resdsl writes, and the regular files it reads, go through here.

Writing: the new content goes to a fresh temporary file created beside the target
(``O_CREAT | O_EXCL | O_NOFOLLOW``: never an existing file, never through a link),
is flushed to disk, and is renamed over the target. The target is looked at first:
a symbolic link, a FIFO, a device or a folder standing where the file should be is
refused with an error that names it, so nothing is ever written through a link
planted in a run folder, and a full disk leaves the old file whole instead of a
truncated one. (Even if a link appears between the look and the rename, the rename
replaces the link itself, never what it points to.)

Appending (``metrics.csv``) opens the file with ``O_APPEND | O_NOFOLLOW`` and
writes only if what it opened is a regular file.

Reading: only regular files, opened without blocking (a FIFO with no writer would
wait forever) and checked on the open descriptor, at most a stated number of bytes.

This module never imports torch; writers that produce their content with a library
(``torch.save``, matplotlib, safetensors) pass a function that writes to a binary
file object.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from resdsl.errors import SpecError

#: The longest file name (one path component) that POSIX systems accept, in bytes.
NAME_MAX = 255

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

_FILE_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


class WriteError(SpecError):
    """A file that cannot be written where asked: a link or special file in its place, a full disk, no permission."""


class TooLarge(Exception):
    """A regular file larger than the bound its reader was given; ``size`` is its size in bytes."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class NotRegularFile(Exception):
    """What stands at a path is not a regular file; ``kind`` says what it is."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def kind_of(mode: int) -> str:
    """'a symbolic link', 'a named pipe (FIFO)', ... for a st_mode that is not a regular file's."""
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "not a regular file")


def _refuse_unless_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise NotRegularFile(kind_of(mode))


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


# ---------------------------------------------------------------------------
# Reading.


def read_regular_file(path: str | Path, limit: int) -> bytes:
    """A regular file's bytes, at most `limit` + 1 of them; anything else raises NotRegularFile unread.

    Links are followed (a spec may be a link to one); what they lead to must be a
    regular file. A file whose size is over the bound raises TooLarge before a byte
    is read (a 6 GB sparse file costs nothing); one that grows, or that reports no size
    (/proc), is read up to `limit` + 1 bytes, and a caller that gets more than `limit`
    back knows it is over its bound.
    """
    _refuse_unless_regular(os.stat(path).st_mode)  # a socket cannot even be opened
    descriptor = os.open(path, os.O_RDONLY | _O_NONBLOCK | _O_BINARY | _O_CLOEXEC)
    try:
        status = os.fstat(descriptor)
        _refuse_unless_regular(status.st_mode)
        if status.st_size > limit:
            raise TooLarge(status.st_size)
        chunks, wanted = [], limit + 1
        while wanted > 0 and (chunk := os.read(descriptor, min(wanted, 1 << 20))):
            chunks.append(chunk)
            wanted -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(descriptor)


# ---------------------------------------------------------------------------
# Writing.


def check_target(path: str | Path) -> Path:
    """Raise WriteError unless `path` is absent or a regular file (not a link to one), and its name fits.

    Called before any work that ends in writing `path`, and again just before the
    rename that puts the new content there.
    """
    path = Path(path)
    if "\x00" in str(path):
        raise WriteError("a path cannot contain a NUL character", file=repr(str(path)))
    if len(os.fsencode(path.name)) > NAME_MAX:
        raise WriteError(f"cannot write: the file name is longer than {NAME_MAX} bytes", file=_short(path))
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError as error:  # a parent that is a file, a name too long for the whole path
        raise WriteError(f"cannot write: {_reason(error)}", file=_short(path)) from None
    if not stat.S_ISREG(mode):
        raise WriteError(
            f"refusing to write: {kind_of(mode)} stands where the file should be",
            file=_short(path),
            hint="remove it, or choose another path",
        )
    return path


def write_file(
    path: str | Path,
    content: bytes | str | Callable[[BinaryIO], object],
    *,
    encoding: str = "utf-8",
    durable: bool = True,
) -> Path:
    """Write `content` (bytes, text, or a function writing to a binary file) to `path`, atomically.

    The old file stays whole until the new one is complete on disk; a new file gets
    the old one's permissions, or the usual ones (0666 less the umask).
    """
    path = check_target(path)
    folder = path.parent
    temporary = folder / f".{_stem_for_temporary(path.name)}.{secrets.token_hex(6)}.tmp"
    try:
        descriptor = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_BINARY | _O_CLOEXEC, 0o666
        )
    except OSError as error:
        raise WriteError(f"cannot write: {_reason(error)}", file=_short(path)) from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            if callable(content):
                guarded = _GuardedFile(handle)
                try:
                    content(guarded)
                except Exception:
                    if guarded.failure is None:
                        raise
                # The library's own error (torch's RuntimeError) hides the file's: report the file's.
                if guarded.failure is not None:
                    raise guarded.failure
            else:
                handle.write(content.encode(encoding) if isinstance(content, str) else content)
            handle.flush()
            with contextlib.suppress(OSError):
                os.fchmod(handle.fileno(), stat.S_IMODE(os.stat(path).st_mode))
            if durable:
                os.fsync(handle.fileno())
        check_target(path)
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise WriteError(f"cannot write: {_reason(error)}", file=_short(path)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if durable:
        _sync_folder(folder)
    return path


class _GuardedFile(io.BufferedIOBase):
    """A binary file handed to a library that writes it (torch.save, torch.export.save, matplotlib).

    The first OSError of a write (a full disk, a file-size limit) is kept, and that write
    and every later one report success without writing: a library that wraps the error in
    its own (torch's RuntimeError) or that writes again while cleaning up (torch's zip
    writer finishes the archive in its destructor, and aborts the process if that write
    fails) then runs to its end, and write_file reports the kept error as a WriteError.
    No ``fileno``: a library that finds one writes around the guard.
    """

    def __init__(self, handle: BinaryIO) -> None:
        super().__init__()
        self._handle = handle
        self.failure: OSError | None = None

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._handle.seekable()

    def write(self, data: bytes) -> int:  # type: ignore[override]
        size = memoryview(data).nbytes
        if self.failure is None:
            try:
                self._handle.write(data)
            except OSError as error:
                self.failure = error
        return size

    def flush(self) -> None:
        if self.failure is None:
            try:
                self._handle.flush()
            except OSError as error:
                self.failure = error

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def close(self) -> None:
        self.flush()  # the handle itself is write_file's to close
        super().close()


def append_file(path: str | Path, content: bytes | str, *, encoding: str = "utf-8") -> None:
    """Append to an existing regular file (never through a link, never to a FIFO or device)."""
    path = Path(path)
    data = content.encode(encoding) if isinstance(content, str) else content
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | _O_NOFOLLOW | _O_NONBLOCK | _O_BINARY | _O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise WriteError(
                "refusing to write: a symbolic link stands where the file should be", file=_short(path)
            ) from None
        if error.errno == errno.ENXIO:  # a FIFO without a reader
            raise WriteError(
                "refusing to write: a named pipe (FIFO) stands where the file should be", file=_short(path)
            ) from None
        raise WriteError(f"cannot write: {_reason(error)}", file=_short(path)) from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise WriteError(f"refusing to write: {kind_of(mode)} stands where the file should be", file=_short(path))
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    except OSError as error:
        raise WriteError(f"cannot write: {_reason(error)}", file=_short(path)) from None
    finally:
        os.close(descriptor)


def make_folder(path: str | Path) -> Path:
    """Create a folder (and its parents) or accept an existing one; a file or device in its place is an error."""
    path = Path(path)
    if any(len(os.fsencode(part)) > NAME_MAX for part in path.parts):
        raise WriteError(f"cannot create the folder: a name in it is longer than {NAME_MAX} bytes", file=_short(path))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise WriteError("cannot use as a folder: a file stands there", file=_short(path)) from None
    except OSError as error:
        raise WriteError(f"cannot create the folder: {_reason(error)}", file=_short(path)) from None
    if not path.is_dir():
        raise WriteError("cannot use as a folder: a file stands there", file=_short(path))
    return path


# ---------------------------------------------------------------------------
# Locking a folder.


class FolderLock:
    """An exclusive lock on a folder, held through a ``.lock`` file in it until released (or the process ends)."""

    def __init__(self, descriptor: int | None) -> None:
        self._descriptor = descriptor

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing drops the flock
            self._descriptor = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def lock_folder(folder: str | Path, what: str = "folder") -> FolderLock:
    """Take `folder`'s lock without waiting; WriteError if another process holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no flock; runs are not guarded there
        return FolderLock(None)
    path = Path(folder) / ".lock"
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC, 0o644)
    except OSError as error:
        kind = "a symbolic link stands where it should be" if error.errno == errno.ELOOP else _reason(error)
        raise WriteError(f"cannot lock the {what}: {kind}", file=_short(path)) from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise WriteError(f"cannot lock the {what}: {kind_of(mode)} stands where the lock file should be",
                             file=_short(path))  # fmt: skip
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise WriteError(
            f"another process is using this {what}",
            file=_short(Path(folder)),
            hint="wait for it to finish, or choose another folder",
        ) from None
    except OSError as error:
        os.close(descriptor)
        raise WriteError(f"cannot lock the {what}: {_reason(error)}", file=_short(path)) from None
    except BaseException:
        os.close(descriptor)
        raise
    return FolderLock(descriptor)


# ---------------------------------------------------------------------------


def _stem_for_temporary(name: str) -> str:
    """The start of `name`, short enough that the temporary's name stays within NAME_MAX bytes."""
    stem = name
    while len(os.fsencode(stem)) > 100:
        stem = stem[:-1]
    return stem or "file"


def _short(path: Path) -> str:
    """A path as an error shows it: a 10,000-character name would bury the message."""
    text = str(path)
    return text if len(text) <= 300 else text[:200] + "..." + text[-80:]


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (where the OS lets a folder be opened and synced)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _O_CLOEXEC)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def regular_files(paths: Iterator[Path]) -> Iterator[Path]:
    """The paths that are regular files (links followed), skipping FIFOs, devices and folders without opening them."""
    for path in paths:
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.stat(path).st_mode):
                yield path


__all__ = [
    "NAME_MAX",
    "FolderLock",
    "NotRegularFile",
    "TooLarge",
    "WriteError",
    "append_file",
    "check_target",
    "kind_of",
    "lock_folder",
    "make_folder",
    "read_regular_file",
    "regular_files",
    "write_file",
]
