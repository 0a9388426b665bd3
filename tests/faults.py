"""Fault injection for tests: run the command, check one-line failures, break the disk.

- `run_cli(*args)` runs `python -m mnistlab` in a subprocess; `call_cli(capsys, *args)` calls
  `mnistlab.cli.main` in-process (much faster). Both give a CliResult (returncode, stdout,
  stderr), a plain tuple.
- `assert_one_line_failure(result, *fragments)`: exit status 1, stderr exactly one line
  `mnistlab: error: ...` holding every fragment, no traceback.
- `snapshot(folder)` / `assert_no_new_files(before, folder)` / `assert_unchanged(before, folder)`:
  what a failed command left behind, hidden temporary files included.
- `fail_writes(monkeypatch, ...)` (in-process) and `run_cli(..., write_error=...)` (subprocess)
  make the project's atomic writes fail part-way with an OSError such as ENOSPC.
- `run_cli_on_disk(mount, kind, *args)`: the command against a real tmpfs that is full or
  read-only, mounted in a private mount namespace (`unshare -m`, as root). `need_real_disk()`
  skips when that cannot be set up here, and fails under CI=true so CI never silently skips.
- `unwritable_paths(tmp_path)`: paths no file can be written at without any mount: under a
  regular file, under /proc.
"""

import errno
import fnmatch
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest

ERROR_PREFIX = "mnistlab: error:"
WRITE_FAULT_ENV = "MNISTLAB_TEST_WRITE_FAULT"  # "ERRNO_NAME[:AFTER[:GLOB]]", for run_cli
TESTS_DIR = Path(__file__).resolve().parent
CLI_TIMEOUT_S = 300


class CliResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


# ----------------------------------------------------------------------------- running


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    write_error: str | None = None,
    timeout: float = CLI_TIMEOUT_S,
) -> CliResult:
    """`python -m mnistlab ARGS` in a subprocess (PYTHONPATH and the rest of the environment
    inherited, `env` added on top). `write_error` ("ENOSPC", "EIO:2", "EROFS:0:*.png")
    makes the atomic writes of matching files fail, after AFTER good ones."""
    full_env = _child_env(env)
    if write_error is not None:
        full_env[WRITE_FAULT_ENV] = write_error
        command = [sys.executable, str(Path(__file__).resolve()), "--with-write-fault", *args]
    else:
        command = [sys.executable, "-m", "mnistlab", *args]
    done = subprocess.run(
        command,
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def _child_env(extra: dict[str, str] | None) -> dict[str, str]:
    """This environment plus `extra`, PYTHONPATH made absolute (the child may run elsewhere)."""
    env = {**os.environ, **(extra or {})}
    if env.get("PYTHONPATH"):
        parts = env["PYTHONPATH"].split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) for p in parts if p)
    return env


def call_cli(capsys: pytest.CaptureFixture, *args: str) -> CliResult:
    """`mnistlab.cli.main(ARGS)` in this process, its output captured by capsys."""
    from mnistlab.cli import main

    capsys.readouterr()  # drop what earlier steps of the test printed
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # --help, or a parser that still exits by itself
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return CliResult(code, out, err)


def assert_one_line_failure(result: tuple[int, str, str], *must_contain: str) -> str:
    """Exit status 1 and exactly one stderr line `mnistlab: error: ...` holding every fragment
    (no traceback); returns that line."""
    code, _out, err = result
    assert "Traceback" not in err, err
    assert code == 1, f"exit status {code}, expected 1; stderr: {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"expected one stderr line, got {err!r}"
    line = lines[0]
    assert line.startswith(ERROR_PREFIX + " "), line
    assert len(line) > len(ERROR_PREFIX) + 10, f"the message says nothing: {line!r}"
    for fragment in must_contain:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


# ----------------------------------------------------------------------------- leftovers


def snapshot(folder: str | os.PathLike) -> dict[str, str]:
    """Every entry beneath a folder (hidden ones too) -> 'dir', 'link:TARGET' or its SHA-256.

    A folder that does not exist gives {}.
    """
    folder = Path(folder)
    found: dict[str, str] = {}
    if not folder.exists():
        return found
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                found[rel] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                found[rel] = "dir"
            elif path.is_file():
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                found[rel] = "special"
    return found


def assert_no_new_files(before: dict[str, str], folder: str | os.PathLike) -> None:
    """Nothing beneath `folder` that was not in the snapshot `before` (temp files included)."""
    new = sorted(set(snapshot(folder)) - set(before))
    assert not new, f"left behind in {folder}: {new}"


def assert_unchanged(before: dict[str, str], folder: str | os.PathLike) -> None:
    """No new, deleted or changed entry beneath `folder` since the snapshot `before`."""
    after = snapshot(folder)
    assert_no_new_files(before, folder)
    gone = sorted(set(before) - set(after))
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    assert not gone and not changed, f"in {folder}: deleted {gone}, changed {changed}"


def unwritable_paths(tmp_path: Path) -> dict[str, Path]:
    """Paths at which no file can be created, with no privileges or mounts needed."""
    blocker = tmp_path / "a-regular-file"
    blocker.write_text("not a folder\n")
    return {
        "under-a-file": blocker / "out",
        "under-proc-file": Path("/proc/version/out"),
        "in-proc-self": Path("/proc/self/mnistlab-out"),
    }


# ----------------------------------------------------------------------------- injected errors


class _FailingFile:
    """A binary file whose write stores half the data, then raises OSError(code)."""

    def __init__(self, file: Any, code: int) -> None:
        self._file, self._code = file, code

    def write(self, data: bytes) -> int:
        self._file.write(bytes(data)[: len(data) // 2])
        self._file.flush()
        raise OSError(self._code, os.strerror(self._code))

    def __enter__(self) -> "_FailingFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


class _OsWithWriteFault:
    """Stands in for `os` in the module that holds atomic_write_bytes: writes of matching
    files store half their bytes, then raise OSError(code).

    atomic_write_bytes writes a temporary file `.<name>.XXXX.tmp` beside its target, opened
    with os.open or os.fdopen; the failure lands mid-write, after that file exists, as when
    a disk fills up.
    """

    def __init__(self, code: int, after: int, pattern: str) -> None:
        self.code, self.remaining, self.pattern = code, after, pattern
        self.failures = 0
        self._failing_fds: set[int] = set()

    def _should_fail(self, path: str) -> bool:
        if not fnmatch.fnmatch(_target_name(path), self.pattern):
            return False
        if self.remaining > 0:
            self.remaining -= 1
            return False
        self.failures += 1
        return True

    def fdopen(self, fd: int, *args: Any, **kwargs: Any) -> Any:
        file = os.fdopen(fd, *args, **kwargs)
        if self._should_fail(os.readlink(f"/proc/self/fd/{fd}")):
            return _FailingFile(file, self.code)
        return file

    def open(self, path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = os.open(path, flags, *args, **kwargs)
        if flags & (os.O_WRONLY | os.O_RDWR) and self._should_fail(os.fsdecode(path)):
            self._failing_fds.add(fd)
        return fd

    def write(self, fd: int, data: Any) -> int:
        if fd in self._failing_fds:
            os.write(fd, bytes(data)[: len(data) // 2])
            raise OSError(self.code, os.strerror(self.code))
        return os.write(fd, data)

    def close(self, fd: int) -> None:
        self._failing_fds.discard(fd)
        os.close(fd)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


# Modules that may hold the project's atomic_write_bytes (the first one found is patched).
WRITER_MODULES = ("mnistlab.fileio",)


def _writer_module() -> Any:
    import importlib

    for name in WRITER_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        writer = getattr(module, "atomic_write_bytes", None)
        if writer is not None and writer.__module__ == name:
            return module
    raise RuntimeError(f"no atomic_write_bytes defined in any of {WRITER_MODULES}")


def _target_name(temp_path: str) -> str:
    """`report.md` from a temporary name `.report.md.k3j2.tmp` (else the name itself)."""
    name = Path(temp_path).name
    if name.startswith(".") and name.endswith(".tmp"):
        return name[1:].rsplit(".", 2)[0]
    return name


def _parse_errno(name: str | int) -> int:
    if isinstance(name, int):
        return name
    code = getattr(errno, name, None)
    if not isinstance(code, int):
        raise ValueError(f"unknown errno name {name!r}")
    return code


def install_write_fault(
    code: str | int = "ENOSPC", after: int = 0, match: str = "*"
) -> _OsWithWriteFault:
    """Make mnistlab's atomic writes of files matching `match` fail after `after` good ones.

    Permanent for this process: use fail_writes (monkeypatch) in-process.
    """
    fault = _OsWithWriteFault(_parse_errno(code), after, match)
    _writer_module().os = fault
    return fault


def fail_writes(
    monkeypatch: pytest.MonkeyPatch, code: str | int = "ENOSPC", after: int = 0, match: str = "*"
) -> _OsWithWriteFault:
    """install_write_fault undone at the end of the test; `.failures` counts failed writes."""
    fault = _OsWithWriteFault(_parse_errno(code), after, match)
    monkeypatch.setattr(_writer_module(), "os", fault)
    return fault


def _main_with_write_fault(argv: list[str]) -> int:
    """The command with the write fault from $MNISTLAB_TEST_WRITE_FAULT installed."""
    parts = os.environ[WRITE_FAULT_ENV].split(":", 2)
    code, after, match = parts + ["0", "*"][len(parts) - 1 :]
    install_write_fault(code, int(after), match)
    from mnistlab.cli import main

    return main(argv)


# ----------------------------------------------------------------------------- real disks


@functools.cache
def real_disk_problem() -> str | None:
    """Why a tmpfs cannot be mounted in a private mount namespace here (None: it can)."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "needs Linux"
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    for tool in ("unshare", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    with tempfile.TemporaryDirectory() as probe:
        try:
            done = subprocess.run(
                ["unshare", "-m", "--propagation", "private", "mount", "-t", "tmpfs"]
                + ["-o", "size=16k", "tmpfs", probe],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"unshare -m failed ({e})"
        if done.returncode != 0:
            return f"cannot mount a tmpfs in a new mount namespace ({done.stderr.strip()})"
    return None


def need_real_disk() -> None:
    """Skip the test when real-disk faults cannot be set up; under CI=true, fail instead."""
    problem = real_disk_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"real-disk fault tests cannot run: {problem}")
    pytest.skip(f"real-disk fault tests cannot run: {problem}")


class DiskResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str
    before: dict[str, str]  # snapshot of the mount just before the command ran
    after: dict[str, str]  # and just after, both taken while it was still mounted


DISK_KINDS = ("full", "ro", "tmpfs")


def run_cli_on_disk(
    mount: str | os.PathLike,
    kind: str,
    *args: str,
    files: dict[str, bytes] | None = None,
    size: str = "256k",
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> DiskResult:
    """`python -m mnistlab ARGS` with a fresh tmpfs of `size` mounted at `mount`.

    `files` (relative path -> bytes) are put on it first; then for kind "full" the rest of
    it is filled by one file `.filler`, for "ro" it is remounted read-only, for "tmpfs" left
    as it is. The mount lives in a private namespace: the host never sees it, and it is gone
    when the command ends, so compare the result's `before` and `after` snapshots.
    """
    if kind not in DISK_KINDS:
        raise ValueError(f"kind must be one of {DISK_KINDS}")
    need_real_disk()
    mount = Path(mount).resolve()
    mount.mkdir(parents=True, exist_ok=True)
    spec = {
        "mount": str(mount),
        "kind": kind,
        "size": size,
        "files": {k: v.hex() for k, v in (files or {}).items()},
        "args": list(args),
        "cwd": str(cwd) if cwd is not None else None,
        "env": _child_env(env),
    }
    with tempfile.TemporaryDirectory() as scratch:
        spec_path, result_path = Path(scratch) / "spec.json", Path(scratch) / "result.json"
        spec_path.write_text(json.dumps(spec))
        command = ["unshare", "-m", "--propagation", "private", sys.executable]
        command += [str(Path(__file__).resolve()), "--on-disk", str(spec_path), str(result_path)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
        if not result_path.is_file():
            raise RuntimeError(f"the disk set-up failed: {done.stderr.strip()}")
        result = json.loads(result_path.read_text())
    return DiskResult(
        result["returncode"], result["stdout"], result["stderr"], result["before"], result["after"]
    )


def assert_disk_untouched(result: DiskResult) -> None:
    """No new entry on the disk after the command (the filler and seeded files excepted)."""
    new = sorted(set(result.after) - set(result.before))
    assert not new, f"left behind on the disk: {new}"


def _on_disk(spec_path: str, result_path: str) -> int:
    """Inside the namespace: mount, seed, break the disk, run the command, snapshot."""
    spec = json.loads(Path(spec_path).read_text())
    mount = spec["mount"]
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={spec['size']}", "tmpfs", mount], check=True
    )
    for rel, hexdata in spec["files"].items():
        path = Path(mount) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes.fromhex(hexdata))
    if spec["kind"] == "full":
        _fill(Path(mount) / ".filler")
    elif spec["kind"] == "ro":
        subprocess.run(["mount", "-o", "remount,ro", mount], check=True)
    before = snapshot(mount)
    done = subprocess.run(
        [sys.executable, "-m", "mnistlab", *spec["args"]],
        env=spec["env"],
        cwd=spec["cwd"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=CLI_TIMEOUT_S,
    )
    after = snapshot(mount)
    result = {
        "returncode": done.returncode,
        "stdout": done.stdout,
        "stderr": done.stderr,
        "before": before,
        "after": after,
    }
    Path(result_path).write_text(json.dumps(result))
    return 0


def _fill(path: Path) -> None:
    """Write zeros until the filesystem refuses: it is then full."""
    chunk = b"\0" * 4096
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    # a partial last page can still be free: take single bytes until that fails too
    with open(path, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0")
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise


if __name__ == "__main__":
    if sys.argv[1:2] == ["--on-disk"]:
        raise SystemExit(_on_disk(sys.argv[2], sys.argv[3]))
    if sys.argv[1:2] == ["--with-write-fault"]:
        raise SystemExit(_main_with_write_fault(sys.argv[2:]))
    raise SystemExit("usage: faults.py --on-disk SPEC RESULT | --with-write-fault ARGS...")


# ----------------------------------------------------------------------------- interrupted runs


@contextmanager
def interrupted_in_epoch(epoch: int, work_batches: int = 0) -> Iterator[None]:
    """Training in the block stops with KeyboardInterrupt in `epoch`, as Ctrl-C would, after
    `work_batches` of its batches (work that is then lost); the block must be stopped so."""
    from mnistlab.training import trainer as train

    original = train.train_epoch

    def stop(parts, loader, at, progress=False, max_batches=None):
        if at == epoch:
            if work_batches:
                original(parts, loader, at, max_batches=work_batches)
            raise KeyboardInterrupt
        return original(parts, loader, at, progress, max_batches)

    train.train_epoch = stop
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        train.train_epoch = original
