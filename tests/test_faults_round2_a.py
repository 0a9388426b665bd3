"""Round 2 of the fault sweep, part a: a failed `data fetch` that left folders and half a set
of files, values that passed the checks and then crashed (a [net] too big to build, rates
torch cannot hold, a `base` chain 3,000 deep), files left after a failure or a kill (`search
run` on a full disk or into another study's runs, `report` killed with SIGKILL), and a
malformed $MNISTLAB_MIRRORS.

Every refusal is one line (one MnistlabError from Python) naming the thing and what to do,
and nothing is left behind that was not there before.
"""

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faults import (
    assert_disk_untouched,
    assert_no_new_files,
    assert_one_line_failure,
    assert_unchanged,
    snapshot,
)

from mnistlab import api, config
from mnistlab.config import dumps_toml, load_config
from mnistlab.data import datasets as data
from mnistlab.data import fetch
from mnistlab.errors import MnistlabError
from mnistlab.models import build, netspec
from mnistlab.runs.report import write_report
from mnistlab.search import run as search_run
from mnistlab.search.space import Space, load_space

RUNS = Path(__file__).parent / "fixtures" / "runs"
NAMES = list(data.MNIST.sha256)  # fetched in this order


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No npm, mirrors or system folders: only the sources a test gives."""
    monkeypatch.setattr(fetch, "NPM_PACKAGES", {})
    monkeypatch.setattr(fetch, "SYSTEM_FOLDERS", {})
    monkeypatch.setenv(fetch.MIRRORS_ENV, "")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MNISTLAB_DATA", str(tmp_path / "no-data"))
    return tmp_path


# ----------------------------------------------------------------------------- data fetch


class FailsOnThird:
    """A source that supplies the first two files, then fails (or is interrupted)."""

    label = "a flaky source"

    def __init__(self, folder: Path, error: BaseException) -> None:
        self.folder, self.error, self.reads = folder, error, 0

    def read(self, spec, name: str) -> bytes:
        self.reads += 1
        if self.reads == 3:
            raise self.error
        return (self.folder / name).read_bytes()


def raw_of(root: Path) -> Path:
    return root / "MNIST" / "raw"


@pytest.mark.parametrize("there", ["nothing", "root", "MNIST", "MNIST/raw"])
@pytest.mark.parametrize(
    "error", [fetch.SourceError("connection reset"), KeyboardInterrupt()], ids=["fails", "ctrl-c"]
)
def test_a_fetch_failing_on_the_third_file_leaves_nothing(
    tmp_path, tiny_mnist, offline, there, error
):
    root = tmp_path / "root"
    if there != "nothing":
        (root / (there if there != "root" else "")).mkdir(parents=True)
    before = snapshot(tmp_path)
    source = FailsOnThird(tiny_mnist, error)
    with pytest.raises(type(error) if isinstance(error, KeyboardInterrupt) else MnistlabError):
        fetch.fetch("mnist", root=root, sources=[source])
    assert source.reads == 3
    # Not the two files that arrived, no staging folder, and only the folders it made go.
    assert_unchanged(before, tmp_path)


def test_a_set_that_fails_as_a_whole_leaves_nothing_from_the_cli(
    tmp_path, tiny_mnist, offline, cli
):
    (tiny_mnist / NAMES[2]).unlink()  # the --from folder lacks the third file
    root = tmp_path / "root"
    before = snapshot(tmp_path)
    result = cli("data", "fetch", "--from", str(tiny_mnist), "--data-dir", str(root))
    assert_one_line_failure(result, f"could not fetch {NAMES[2]}", "--from DIR")
    assert_unchanged(before, tmp_path)
    assert not root.exists()


def test_files_from_two_sources_land_together(tmp_path, tiny_mnist, offline):
    root = tmp_path / "root"
    first = FailsOnThird(tiny_mnist, fetch.SourceError("gone"))
    fetch.fetch("mnist", root=root, sources=[first, fetch.FolderSource(tiny_mnist)])
    assert sorted(p.name for p in raw_of(root).iterdir()) == sorted(NAMES)
    assert sorted(p.name for p in (root / "MNIST").iterdir()) == ["raw"]  # no staging left


def test_a_fetch_fills_gaps_in_a_raw_folder_that_holds_other_files(tmp_path, tiny_mnist, offline):
    raw = raw_of(tmp_path)
    raw.mkdir(parents=True)
    (raw / NAMES[0]).write_bytes((tiny_mnist / NAMES[0]).read_bytes())
    (raw / "notes.txt").write_text("mine\n")
    fetch.fetch("mnist", root=tmp_path, source_dir=tiny_mnist)
    assert sorted(p.name for p in raw.iterdir()) == sorted([*NAMES, "notes.txt"])
    assert sorted(p.name for p in raw.parent.iterdir()) == ["raw"]


def test_a_fetch_on_a_full_disk_leaves_nothing(tmp_path, tiny_mnist, real_disk):
    # The folders are made (a full tmpfs still takes them), the files fail: all of it goes.
    disk = tmp_path / "disk"
    args = ["data", "fetch", "--from", str(tiny_mnist), "--no-verify"]
    result = real_disk(
        disk, "full", *args, "--data-dir", str(disk / "data"), files={"data/kept": b"x"}
    )
    assert_one_line_failure(result[:3], str(raw_of(disk / "data")), "cannot write")
    assert_disk_untouched(result)


@pytest.mark.parametrize("files_there", [0, 4])
def test_a_staging_folder_left_by_a_kill_is_removed_by_the_next_fetch(
    tmp_path, tiny_mnist, offline, files_there
):
    raw = raw_of(tmp_path)
    if files_there:
        raw.mkdir(parents=True)
        for name in NAMES:
            (raw / name).write_bytes((tiny_mnist / name).read_bytes())
    left = tmp_path / "MNIST" / ".raw.0123abcd.tmp"
    left.mkdir(parents=True)
    (left / NAMES[0]).write_bytes(b"half a file")
    fetch.fetch("mnist", root=tmp_path, source_dir=tiny_mnist)
    assert sorted(p.name for p in (tmp_path / "MNIST").iterdir()) == ["raw"]
    assert sorted(p.name for p in raw.iterdir()) == sorted(NAMES)


def test_a_staging_folder_in_use_by_another_fetch_is_left_alone(tmp_path, tiny_mnist, offline):
    busy = tmp_path / "MNIST" / ".raw.89abcdef.tmp"
    busy.mkdir(parents=True)
    fd = os.open(busy, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as the fetch that staged it holds it
        fetch.fetch("mnist", root=tmp_path, source_dir=tiny_mnist)
        assert busy.is_dir()
    finally:
        os.close(fd)
    assert sorted(p.name for p in raw_of(tmp_path).iterdir()) == sorted(NAMES)


# ----------------------------------------------------------------------------- mirrors

BAD_MIRRORS = {
    "not a url": ("http://127.0.0.1:9/,not a url", "'not a url'"),
    "empty entry": ("http://127.0.0.1:9/,,http://127.0.0.1:9/b/", "entry 2 of 3 ''"),
    "trailing comma": ("http://127.0.0.1:9/,", "entry 2 of 2 ''"),
    "blank entry": ("http://127.0.0.1:9/,  ", "entry 2 of 2 ''"),
    "ftp": ("ftp://127.0.0.1/mnist/", "'ftp://127.0.0.1/mnist/'"),
    "file": ("file:///tmp/mnist/", "'file:///tmp/mnist/'"),
    "no host": ("http:///mnist/", "has no host"),
    "scheme only": ("https://", "has no host"),
    "no scheme": ("example.com/mnist/", "'example.com/mnist/'"),
    "bad port": ("http://127.0.0.1:99999/", "'http://127.0.0.1:99999/'"),
    "port not a number": ("http://127.0.0.1:port/", "'http://127.0.0.1:port/'"),
    "broken ipv6": ("http://[::1/", "'http://[::1/'"),
    "query": ("http://127.0.0.1:9/mnist/?x=1", "query"),
    "space inside": ("http://127.0.0.1:9/mn ist/", "spaces"),
    "control character": ("http://127.0.0.1:9/\x07/", "control"),
}


@pytest.mark.parametrize(("value", "fragment"), BAD_MIRRORS.values(), ids=list(BAD_MIRRORS))
def test_a_malformed_mirror_list_is_one_line_before_anything_is_fetched(
    tmp_path, tiny_mnist, cli, monkeypatch, value, fragment
):
    monkeypatch.setattr(fetch, "NPM_PACKAGES", {})
    monkeypatch.setenv(fetch.MIRRORS_ENV, value)
    fetched = []
    monkeypatch.setattr(fetch, "download", lambda url: fetched.append(url) or b"")
    before = snapshot(tmp_path)
    result = cli("data", "fetch", "--data-dir", str(tmp_path / "root"))
    assert_one_line_failure(result, "MNISTLAB_MIRRORS", fragment, "http(s) base URLs")
    with pytest.raises(MnistlabError, match="MNISTLAB_MIRRORS"):
        fetch.fetch("mnist", root=tmp_path / "root", source_dir=tiny_mnist)
    assert fetched == []
    assert_no_new_files(before, tmp_path)


@pytest.mark.parametrize("value", ["", "   ", " http://127.0.0.1:9/a/ , https://h.example/b"])
def test_well_formed_mirror_lists_are_taken(monkeypatch, value):
    monkeypatch.setenv(fetch.MIRRORS_ENV, value)
    urls = fetch.mirror_urls(data.MNIST)
    assert urls == [u.strip() for u in value.split(",") if u.strip()]


# ----------------------------------------------------------------------------- values

BAD_VALUES = {
    "max_lr 1e300": ('[scheduler]\nname = "onecycle"\nmax_lr = 1e300\n', "scheduler.max_lr"),
    "max_lr 1e39": ('[scheduler]\nname = "onecycle"\nmax_lr = 1e39\n', "scheduler.max_lr"),
    "lr 1e300": ("[optimizer]\nlr = 1e300\n", "optimizer.lr"),
    "lr 1e39": ('[optimizer]\nname = "adam"\nlr = 1e39\n', "optimizer.lr"),
    "weight decay": ("[optimizer]\nweight_decay = 1e300\n", "optimizer.weight_decay"),
    "min_lr": ('[scheduler]\nname = "cosine"\nmin_lr = 1e300\n', "scheduler.min_lr"),
    "div_factor": ("[scheduler]\ndiv_factor = 1e300\n", "scheduler.div_factor"),
    "final_div_factor": ("[scheduler]\nfinal_div_factor = 1e30\n", "scheduler.final_div_factor"),
    "epochs": (f"epochs = {2**31 - 1}\n", "epochs"),
    "batch_size": (f"batch_size = {2**31 - 1}\n", "batch_size"),
    "test_batch_size": (f"test_batch_size = {10**7}\n", "test_batch_size"),
}


@pytest.mark.parametrize(("text", "key"), BAD_VALUES.values(), ids=list(BAD_VALUES))
def test_values_torch_cannot_use_are_refused_naming_the_key_and_range(workdir, cli, text, key):
    path = workdir / "exp.toml"
    path.write_text('model = "gap_tiny"\n' + text)
    with pytest.raises(MnistlabError, match=" and at most ") as caught:
        load_config(path)
    assert f"{path}: {key} must be " in str(caught.value)
    before = snapshot(workdir)
    assert_one_line_failure(cli("train", str(path), "--quiet"), key, " and at most ")
    assert_no_new_files(before, workdir)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--lr", "1e300"], "--lr"),
        (["--lr", "1e39"], "--lr"),
        (["--epochs", str(2**31 - 1)], "--epochs"),
        (["--batch-size", str(2**30)], "--batch-size"),
    ],
)
def test_flags_torch_cannot_use_are_refused_naming_the_flag(workdir, cli, argv, flag):
    before = snapshot(workdir)
    result = cli("train", "--model", "gap_tiny", *argv, "--quiet")
    assert_one_line_failure(result, flag, " and at most ")
    assert_no_new_files(before, workdir)


def test_max_lr_torch_cannot_use_is_refused_from_both_doors(workdir, cli):
    path = workdir / "exp.toml"
    path.write_text('[scheduler]\nname = "onecycle"\n')
    result = cli("train", str(path), "--max-lr", "1e300")
    assert_one_line_failure(result, "--max-lr", "at most 1000")
    with pytest.raises(MnistlabError, match=r"scheduler=\{'max_lr'") as caught:
        api.experiment(path, scheduler={"max_lr": 1e300})
    assert "\n" not in str(caught.value)


def test_the_bounds_are_inclusive_and_the_defaults_inside():
    cfg = config.from_dict(
        {
            "epochs": config.EPOCHS_MAX,
            "batch_size": config.BATCH_MAX,
            "optimizer": {"lr": config.RATE_MAX, "weight_decay": config.RATE_MAX},
            "scheduler": {"max_lr": config.RATE_MAX, "div_factor": config.DIV_MAX},
        }
    )
    assert cfg.optimizer.lr == config.RATE_MAX
    config.validate(config.Config(), "defaults")


def test_a_base_chain_3000_deep_is_one_line_naming_the_file(tmp_path, cli, workdir):
    for i in range(3000):
        (tmp_path / f"e{i}.toml").write_text(f'base = "e{i + 1}.toml"\n')
    (tmp_path / "e3000.toml").write_text('model = "gap_tiny"\n')
    with pytest.raises(MnistlabError, match=f"more than {config.BASE_MAX} deep"):
        load_config(tmp_path / "e0.toml")
    line = assert_one_line_failure(cli("train", str(tmp_path / "e0.toml")), "base files")
    assert str(tmp_path / "e0.toml") in line


def test_a_base_chain_of_the_allowed_depth_still_loads(tmp_path):
    depth = config.BASE_MAX
    for i in range(depth):
        (tmp_path / f"e{i}.toml").write_text(f'base = "e{i + 1}.toml"\nepochs = {i + 1}\n')
    (tmp_path / f"e{depth}.toml").write_text('model = "gap_tiny"\nbatch_size = 32\n')
    cfg = load_config(tmp_path / "e0.toml")
    assert (cfg.name, cfg.model, cfg.epochs, cfg.batch_size) == ("e0", "gap_tiny", 1, 32)


NESTED = "[" * 3000 + "]" * 3000


@pytest.mark.parametrize(
    "files",
    [
        {"a.toml": f"epochs = {NESTED}\n"},
        {"a.toml": 'base = "b.toml"\n', "b.toml": "x = " + "{y = " * 3000 + "1" + "}" * 3000},
    ],
    ids=["array", "inline-table-in-base"],
)
def test_toml_nested_too_deeply_is_one_line(tmp_path, cli, workdir, files):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert_one_line_failure(cli("train", str(tmp_path / "a.toml")), "nest too deeply")


def test_tables_nested_deeply_in_a_base_and_its_step_merge_without_recursion(tmp_path, cli):
    deep = "[optimizer." + ".".join(["t"] * 3000) + "]\nx = 1\n"
    (tmp_path / "b.toml").write_text(deep)
    (tmp_path / "a.toml").write_text('base = "b.toml"\n' + deep.replace("x = 1", "y = 2"))
    assert_one_line_failure(cli("train", str(tmp_path / "a.toml")), "unknown key 'optimizer.t'")


# ----------------------------------------------------------------------------- [net] sizes


def conv(**keys) -> dict:
    return {"type": "conv", "out": 8, **keys}


HEAD = [{"type": "gap"}, {"type": "conv", "out": 10, "kernel": 1, "relu": False, "bn": False}]
BAD_NETS = {
    "padding 3000": ([conv(padding=3000)], "net.layers[0].padding must be in [0, 2]"),
    "out 2**31-1": ([conv(out=2**31 - 1)], "net.layers[0].out must be in [1, 4096]"),
    "out 0": ([conv(out=0)], "net.layers[0].out must be in [1, 4096]"),
    "kernel 10**9": ([conv(kernel=10**9)], "net.layers[0].kernel must be in [1, 28]"),
    "stride 10**30": ([conv(stride=10**30)], "net.layers[0].stride must be in [1, 28]"),
    "dilation 100": ([conv(dilation=100)], "net.layers[0].dilation must be in [1, 28]"),
    "negative padding": ([conv(padding=-1)], "net.layers[0].padding must be in [0, 2]"),
    "pool padding": (
        [conv(), {"type": "maxpool", "kernel": 2, "padding": 5}],
        "net.layers[1].padding must be in [0, 1]",
    ),
    "pool stride": ([{"type": "avgpool", "stride": 2**40}], "stride must be in [1, 28]"),
    "empty output": (
        [{"type": "maxpool", "kernel": 28}, conv()],
        "net.layers[1] shrinks the map to nothing",
    ),
    "a map of too many values": (
        [conv(out=16, kernel=28, dilation=28, padding=756)],
        "values per image, more than 4,194,304",
    ),
    "too many values in all": (
        [conv(out=4096, kernel=1)] * 11,
        "values per image, more than 33,554,432",
    ),
    "too many parameters": (
        [conv(out=4096, kernel=1), conv(out=4096, kernel=28)],
        "parameters, more than 268,435,456",
    ),
    "too many layers": ([{"type": "relu"}] * 300, "net.layers has 302 layers, more than 256"),
}


@pytest.mark.parametrize(("layers", "message"), BAD_NETS.values(), ids=list(BAD_NETS))
def test_a_net_too_big_to_build_is_one_line_before_anything_is_built(
    tmp_path, cli, monkeypatch, layers, message
):
    built = []
    monkeypatch.setattr(
        netspec, "BUILDERS", {k: lambda *a: built.append(a) for k in netspec.BUILDERS}
    )
    net = {"layers": [*layers, *HEAD]}
    with pytest.raises(MnistlabError) as caught:
        build(net)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    experiment = tmp_path / "net.toml"
    experiment.write_text(dumps_toml({"epochs": 1, "net": net}))
    assert_one_line_failure(cli("summary", str(experiment)), message)
    assert built == []


@pytest.mark.parametrize(
    ("family", "message"),
    [
        ({"blocks": [[2**31 - 1]]}, "net.blocks[0][0] must be in [1, 4096]"),
        ({"blocks": [[4], [8]], "squeeze": [5000]}, "net.squeeze[0] must be in [0, 4096]"),
        ({"blocks": [[4], [8]], "squeeze": [-1]}, "net.squeeze[0] must be in [0, 4096]"),
        ({"blocks": [[4] * 3000]}, "net.blocks holds 3000 convs"),
    ],
)
def test_a_family_too_big_to_build_is_one_line(family, message):
    with pytest.raises(MnistlabError) as caught:
        build(family)
    assert message in str(caught.value)


def test_nets_at_the_bounds_build():
    widest = {"layers": [conv(out=netspec.MAX_CHANNELS, kernel=1), *HEAD]}
    reach = {"layers": [conv(kernel=3, dilation=13, padding=26), conv(kernel=28), *HEAD]}
    for net in (widest, reach):
        assert build(net)  # torch accepts every layer
    assert netspec.check_net({"layers": [{"type": "relu"}] * 254 + HEAD})


# ----------------------------------------------------------------------------- search

SPACE = """
[search]
val_size = 100
seed = 0

[experiment]
epochs = 1
batch_size = 32

[space.net]
first = [4]
layers = [[1]]
width = [4]
"""


def write_space(folder: Path, text: str = SPACE) -> Path:
    path = folder / "space.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[space.net]\nlayers = [{ low = 1, high = 1000000000 }]\n", "space.net.layers[0]"),
        ("[space.net]\nlayers = [[1]]\nwidth = [1000000]\n", "space.net.width"),
        ("[space.net]\nlayers = [[1]]\nfirst = { low = 1, high = 10000 }\n", "space.net.first"),
        ("[space.net]\nlayers = [[1]]\nsqueeze = [-1]\n", "space.net.squeeze"),
        ("[space.net]\nlayers = [[1.5]]\n", "space.net.layers[0]"),
        ("[space.net]\nlayers = [[1]]\ndropout = [0.5, 1.5]\n", "space.net.dropout"),
        ("[space.net]\nlayers = [[1]]\npool_first = 'yes'\n", "space.net.pool_first"),
        ("[space.net]\nlayers = [[1], [1], [1], [1], [1], [1]]\n", "more than 5"),
        (f"[search]\nseed = {2**40}\n[space.net]\nlayers = [[1]]\n", "search.seed"),
        ("[space.net]\nlayers = [[1]]\n[space.recipe]\n'optimizer.lr' = [0.1, 1e300]\n", "lr"),
        ("x = " + NESTED + "\n", "nest too deeply"),
    ],
)
def test_a_search_space_out_of_bounds_is_one_line_before_any_storage(tmp_path, cli, extra, message):
    space = tmp_path / "bad.toml"
    space.write_text(extra)
    before = snapshot(tmp_path)
    result = cli("search", "run", str(space), "--trials", "1", "--runs", str(tmp_path / "runs"))
    assert_one_line_failure(result, message)
    assert_no_new_files(before, tmp_path)


def test_a_binary_search_space_is_one_line(tmp_path, cli):
    space = tmp_path / "space.toml"
    space.write_bytes(b"\xff\xfe\x00binary")
    assert_one_line_failure(cli("search", "run", str(space), "--trials", "1"), "not a text file")
    with pytest.raises(MnistlabError, match="not a text file"):
        load_space(space)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_search_into_another_studys_runs_is_one_line_and_creates_nothing(
    tmp_path, data_dir, cli, workers
):
    runs = tmp_path / "runs"
    (runs / "space" / "trial-0").mkdir(parents=True)  # left by an earlier study
    (runs / "space" / "trial-0" / "run.json").write_text("{}")
    space = write_space(tmp_path)
    before = snapshot(tmp_path)
    args = ["search", "run", str(space), "--trials", "2", "--workers", workers]
    result = cli(*args, "--runs", str(runs), "--data-dir", str(data_dir))
    assert_one_line_failure(result, "holds trials of an earlier study", "--study or --runs")
    assert_unchanged(before, tmp_path)
    with pytest.raises(MnistlabError, match="study= or runs="):
        api.run_search(space, 2, runs=runs, data_dir=data_dir, workers=int(workers))


def test_a_study_file_holding_no_trials_of_this_study_is_refused_too(tmp_path, data_dir, cli):
    runs = tmp_path / "runs"
    space = write_space(tmp_path)
    storage = search_run.default_storage(runs, "space")
    search_run.create_study_file(load_space(space), "other", storage, runs / "space" / "study.db")
    (runs / "space" / "trial-0").mkdir()
    before = snapshot(tmp_path)
    args = ["search", "run", str(space), "--trials", "1", "--runs", str(runs)]
    assert_one_line_failure(cli(*args, "--data-dir", str(data_dir)), "earlier study")
    assert_unchanged(before, tmp_path)


@pytest.mark.parametrize("study", ["", "../up", "a/b", ".", "x\ny"])
def test_a_study_name_that_is_not_one_folder_name_is_refused(tmp_path, data_dir, cli, study):
    space = write_space(tmp_path)
    before = snapshot(tmp_path)
    args = ["search", "run", str(space), "--trials", "1", "--study", study]
    result = cli(*args, "--runs", str(tmp_path / "runs"), "--data-dir", str(data_dir))
    assert_one_line_failure(result, "--study", "folder")
    assert_no_new_files(before, tmp_path)


def test_a_study_file_that_fails_while_it_is_made_leaves_nothing(
    tmp_path, data_dir, cli, monkeypatch
):
    import sqlalchemy.exc

    original = search_run.open_study

    def full_disk(space, name, storage, *args, **kwargs):
        original(space, name, storage, *args, **kwargs)  # the file exists, half made
        raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("database or disk is full"))

    monkeypatch.setattr(search_run, "open_study", full_disk)
    space = write_space(tmp_path)
    before = snapshot(tmp_path)
    args = ["search", "run", str(space), "--trials", "1", "--runs", str(tmp_path / "a" / "runs")]
    result = cli(*args, "--data-dir", str(data_dir))
    assert_one_line_failure(result, "database or disk is full", "study.db")
    assert_no_new_files(before, tmp_path)


def test_a_search_on_a_full_disk_leaves_no_study_file(tmp_path, data_dir, real_disk):
    disk = tmp_path / "disk"
    space = write_space(tmp_path)
    args = ["search", "run", str(space), "--trials", "1", "--threads", "1"]
    result = real_disk(
        disk, "full", *args, "--runs", str(disk / "runs"), "--data-dir", str(data_dir)
    )
    assert_one_line_failure(result[:3], "study.db", "cannot be used")
    assert_disk_untouched(result)


def test_workers_that_fail_end_the_command_with_one_line(tmp_path, data_dir, cli, monkeypatch):
    said = "storage x: cannot be used (disk I/O error); check the URL"
    worker = f"import sys; print('a warning', file=sys.stderr); sys.exit('mnistlab: error: {said}')"
    monkeypatch.setattr(search_run, "worker_command", lambda *a: [sys.executable, "-c", worker])
    space = write_space(tmp_path)
    args = ["search", "run", str(space), "--trials", "2", "--workers", "2"]
    code, _, err = cli(*args, "--runs", str(tmp_path / "runs"), "--data-dir", str(data_dir))
    # the workers' other output passes on; their error lines become the command's one line
    assert err.count("a warning") == 2 and err.count("mnistlab: error:") == 1, err
    assert code == 1 and err.endswith(f"mnistlab: error: {said}\n")


def test_search_report_on_a_missing_study_file_creates_none(tmp_path, cli):
    url = f"sqlite:///{tmp_path}/nothing/study.db"
    before = snapshot(tmp_path)
    result = cli("search", "report", "--storage", url, "--study", "s", "--out", str(tmp_path / "r"))
    assert_one_line_failure(result, "does not exist")
    assert_no_new_files(before, tmp_path)


def test_seeds_past_32_bits_after_many_trials_still_seed_the_sampler():
    space = Space(path="x", seed=config.SEED_MAX)
    seed = search_run.sampler_seed(space, "host:1")
    assert 0 <= seed <= config.SEED_MAX and search_run.make_sampler(space, seed) is not None


# ----------------------------------------------------------------------------- report

REPORTS = {"old": [RUNS / "01-seed"], "new": [RUNS / "01-seed", RUNS / "02-wide-partial"]}


def start_report(out: Path) -> subprocess.Popen:
    """`mnistlab report` of the new runs into `out`, in a process of its own."""
    runs = [str(r) for r in REPORTS["new"]]
    command = [sys.executable, "-m", "mnistlab", "report", *runs, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent / "src")}
    return subprocess.Popen(
        command, cwd=out.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def staging_of(out: Path) -> list[str]:
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_a_report_killed_at_any_moment_is_the_old_one_or_the_new_one(tmp_path):
    """SIGKILL a few delays after the staging folder appears (each process over its own copy
    of an old report, all at once), then report again over what each kill left."""
    delays = (0.0, 0.005, 0.03)
    outs = [tmp_path / f"kill-{i}" / "report" for i in range(len(delays))]
    for out in outs:
        write_report(REPORTS["old"], out, experiments=None)
    old_files = snapshot(outs[0])
    procs = [start_report(out) for out in outs]
    seen: list[float | None] = [None] * len(procs)
    deadline = time.monotonic() + 120
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        for i, (proc, out) in enumerate(zip(procs, outs, strict=True)):
            if proc.poll() is not None:
                continue
            if seen[i] is None and staging_of(out):
                seen[i] = time.monotonic()
            if seen[i] is not None and time.monotonic() - seen[i] >= delays[i]:
                proc.send_signal(signal.SIGKILL)
        time.sleep(0.001)
    for proc in procs:
        proc.kill()
        _, err = proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL), err
    after_kill = [snapshot(out) for out in outs]
    for out in outs:  # again: it completes, and removes what the kill left beside the report
        write_report(REPORTS["new"], out, experiments=None)
        assert staging_of(out) == []
    new_files = snapshot(outs[0])  # byte for byte what the killed command writes
    assert "figures/02-wide-partial-curves.png" in new_files and new_files != old_files
    for out, files in zip(outs, after_kill, strict=True):
        assert files in (old_files, new_files), f"{out} held a mix: {sorted(files)}"
        assert snapshot(out) == new_files


def test_a_report_replaces_its_folder_whole(tmp_path):
    out = tmp_path / "report"
    write_report(REPORTS["new"], out, experiments=None)
    (out / ".README.md.0123abcd.tmp").write_text("left by a killed older version")
    assert (out / "figures" / "02-wide-partial-curves.png").exists()
    write_report(REPORTS["old"], out, experiments=None)
    assert not (out / "figures" / "02-wide-partial-curves.png").exists()  # no stale figure
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "figures"]


def test_a_report_through_a_link_replaces_the_folder_it_names(tmp_path):
    real = tmp_path / "real"
    write_report(REPORTS["old"], real, experiments=None)
    (tmp_path / "link").symlink_to(real)
    write_report(REPORTS["new"], tmp_path / "link", experiments=None)
    assert (tmp_path / "link").is_symlink()
    assert (real / "figures" / "02-wide-partial-curves.png").exists()


@pytest.mark.parametrize(
    "foreign", ["notes.txt", "figures/notes.txt", "sub/x.png", "figures/deeper/x.png"]
)
def test_a_report_into_a_folder_of_other_files_is_refused_and_keeps_them(tmp_path, cli, foreign):
    out = tmp_path / "out"
    write_report(REPORTS["old"], out, experiments=None)
    (out / foreign).parent.mkdir(parents=True, exist_ok=True)
    (out / foreign).write_text("mine\n")
    before = snapshot(tmp_path)
    runs = [str(r) for r in REPORTS["new"]]
    line = assert_one_line_failure(cli("report", *runs, "--out", str(out)), "--out")
    assert foreign.split("/")[0] in line and "not part of a report" in line
    assert_unchanged(before, tmp_path)


def test_a_report_is_swapped_in_by_two_renames_where_no_exchange_exists(tmp_path, monkeypatch):
    from mnistlab import fileio

    monkeypatch.setattr(fileio, "exchange", lambda a, b: False)
    out = tmp_path / "report"
    write_report(REPORTS["old"], out, experiments=None)
    write_report(REPORTS["new"], out, experiments=None)
    assert (out / "figures" / "02-wide-partial-curves.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
