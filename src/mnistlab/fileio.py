"""Writing files so that nothing is ever half-written, and failures are one line.

Every file the tool writes goes through `atomic_write_bytes`: a temporary file beside the
target, then a rename. A reader sees the old file or the new one, never a torn one; a full
disk or a read-only folder leaves no temporary file behind and becomes a MnistlabError that
names the path and what to do.

A result of several files that must stay together (a report and its figures, a dataset's four
files) is built in a staging folder beside its target, `.<name>.<hex>.tmp`, locked with
`flock` for the life of the process that builds it, and moved into place in one rename
(`replace_folder`, `Staging`). A staging folder that a killed process left behind holds no
lock; the next process to stage the same target removes it (`remove_stale_staging`).
"""

import ctypes
import errno
import fcntl
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from mnistlab.errors import MnistlabError


class WriteError(MnistlabError):
    """A failed write: one line naming the path, with the reason kept for callers that say
    more about what was being written."""

    def __init__(self, path: Path, e: OSError | str) -> None:
        self.path = Path(path)
        self.reason = e if isinstance(e, str) else e.strerror or type(e).__name__
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


# ----------------------------------------------------------------------------- staging folders


def staging_pattern(target: Path) -> re.Pattern[str]:
    """The names of `target`'s staging folders: `.<name>.<8 hex digits>.tmp`."""
    return re.compile(re.escape(f".{Path(target).name}.") + r"[0-9a-f]{8}\.tmp")


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove the staging folders of `target` that no live process holds (a kill left them);
    returns those removed. Folders another process is still filling keep their lock and stay.
    """
    target = Path(target)
    pattern = staging_pattern(target)
    try:
        names = [n for n in os.listdir(target.parent) if pattern.fullmatch(n)]
    except OSError:  # no parent yet, or unreadable: nothing of ours can be there
        return []
    removed = []
    for name in names:
        path = target.parent / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: another process is staging into it right now
            os.close(fd)
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


class Staging:
    """A fresh staging folder `.<name>.<hex>.tmp` beside `target`, locked while in use.

    Use as a context manager: on leaving, the folder is removed unless `move_into_place`
    moved it (or its files) to `target`. Creating it may raise WriteError.
    """

    def __init__(self, target: Path) -> None:
        self.target = Path(target)
        self.path = self.target.parent / f".{self.target.name}.{secrets.token_hex(4)}.tmp"
        self._fd: int | None = None

    def __enter__(self) -> "Staging":
        try:
            os.mkdir(self.path)
        except OSError as e:
            raise WriteError(self.target, e) from None
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self.__exit__(None, None, None)
            raise WriteError(self.target, e) from None
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def move_into_place(self) -> None:
        """The staged folder becomes `target`: renamed where `target` does not exist, swapped
        with it in one atomic exchange where it does (the old content is then removed)."""
        target = self.target
        try:
            if not os.path.lexists(target):
                try:
                    os.rename(self.path, target)
                    return
                except OSError as e:  # another process made it meanwhile: swap with theirs
                    if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
            if not exchange(self.path, target):
                _swap_by_renames(self.path, target)
        except OSError as e:
            raise WriteError(target, e) from None
        # self.path now holds the old content; __exit__ removes it


def _swap_by_renames(staged: Path, target: Path) -> None:
    """Where no atomic exchange exists: target -> aside, staged -> target (undone on failure)."""
    aside = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    os.rename(target, aside)
    try:
        os.rename(staged, target)
    except OSError:
        os.rename(aside, target)
        raise
    os.rename(aside, staged)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux renameat2 with RENAME_EXCHANGE); False where
    this system or file system cannot, so that the caller falls back to two renames."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_folder(
    folder: Path, files: dict[Path, bytes], check: Callable[[Path], None] | None = None
) -> None:
    """Make `folder` hold exactly `files` (paths inside it), all or nothing.

    The files are written into a staging folder beside it, which then takes its place in one
    atomic exchange: at any moment, a kill included, `folder` is the complete old content or
    the complete new one. The old content is removed afterwards. A symbolic link to a folder
    is followed (the folder it names is replaced). `check(folder)`, when given, runs once the
    path is settled and before anything is written (to refuse a folder that is not ours to
    replace). On failure nothing new is left: neither the staging folder nor the parent
    folders this call created. Any failure to write is a WriteError naming `folder`.
    """
    given = Path(folder)
    # the folder by its own name ("." or "x/.." would name no sibling to stage in)
    folder = given.resolve() if given.is_symlink() else Path(os.path.abspath(given))
    if not folder.name:
        code = errno.EBUSY  # the root of the file system
        raise WriteError(given, OSError(code, os.strerror(code)))
    if os.path.lexists(folder) and not folder.is_dir():
        code = errno.ENOTDIR
        raise WriteError(given, NotADirectoryError(code, os.strerror(code)))
    if check is not None:
        check(folder)
    created = make_dirs(folder.parent)
    try:
        remove_stale_staging(folder)
        with Staging(folder) as staging:
            for path, data in files.items():
                relative = Path(path).relative_to(given)
                try:
                    atomic_write_bytes(staging.path / relative, data)
                except WriteError as e:
                    raise WriteError(folder / relative, e.reason) from None
            staging.move_into_place()
    except BaseException:
        remove_dirs(created)
        raise
