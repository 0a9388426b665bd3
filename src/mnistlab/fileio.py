"""Writing files so that nothing is ever half-written, and failures are one line.

Every file the tool writes goes through `atomic_write_bytes`: a temporary file beside the
target, then a rename. A reader sees the old file or the new one, never a torn one; a full
disk or a read-only folder leaves no temporary file behind and becomes a MnistlabError that
names the path and what to do.
"""

import errno
import os
import secrets
from pathlib import Path

from mnistlab.errors import MnistlabError


class WriteError(MnistlabError):
    """A failed write: one line naming the path, with the reason kept for callers that say
    more about what was being written."""

    def __init__(self, path: Path, e: OSError) -> None:
        self.path, self.reason = Path(path), e.strerror or type(e).__name__
        super().__init__(
            f"cannot write {path} ({self.reason}); free some space or choose a writable folder"
        )


def make_dirs(folder: Path) -> list[Path]:
    """mkdir -p that returns the folders it created (outermost first), for cleaning up.

    On failure the folders it made are removed again and the error names the folder.
    """
    folder = Path(folder)
    missing = []
    for parent in (folder, *folder.parents):
        if parent.is_dir():
            break
        missing.append(parent)
    made: list[Path] = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            if path.is_dir():  # another process made it meanwhile: theirs, not ours to remove
                continue
            # a file where a folder should be
            remove_dirs(made)
            code = errno.ENOTDIR
            raise WriteError(path, NotADirectoryError(code, os.strerror(code))) from None
        except OSError as e:
            remove_dirs(made)
            raise WriteError(path, e) from None
        made.append(path)
    return made


def remove_dirs(created: list[Path]) -> None:
    """Remove folders `make_dirs` created, innermost first, where they are still empty."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file.

    The temporary file is created with mode 0666 so the umask applies as for any new file
    (no process-wide umask juggling).
    """
    path = Path(path)
    created = make_dirs(path.parent)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        remove_dirs(created)
        raise WriteError(path, e) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        remove_dirs(created)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_files(files: dict[Path, bytes]) -> None:
    """Write several files, each atomically; if one fails, the new ones already written go.

    Folders the call created are removed again too, so a failed report or export leaves
    the disk as it was (files it replaced keep their new content: each is whole). Any
    failure to write is a WriteError.
    """
    created: list[Path] = []
    new: list[Path] = []
    try:
        for path, data in files.items():
            path = Path(path)
            created += make_dirs(path.parent)
            try:
                if not path.exists():
                    new.append(path)
            except OSError as e:  # exists() lets some errors through (EACCES on a parent)
                raise WriteError(path, e) from None
            atomic_write_bytes(path, data)
    except BaseException:
        for path in new:
            path.unlink(missing_ok=True)
        for folder in reversed(created):
            remove_dirs([folder])
        raise
