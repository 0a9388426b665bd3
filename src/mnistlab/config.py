"""Experiments as plain data: TOML files mapped onto dataclasses, every key and value checked.

An experiment file names a model, a dataset and a recipe; `resolve` applies overrides (flags or
keywords). Unknown keys
and bad values are errors that name the key, so a typo never silently trains the wrong thing.
"""

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnistlab.errors import MnistlabError, arg, given

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "step", "onecycle", "cosine")
# When the test set is read: after every epoch (the drill-down's curves), once at the end
# (timed recipes: evaluation is not training time), or never (search trials choose on the
# validation split alone and must not see the test set).
TEST_WHEN = ("every-epoch", "end", "never")
# Training batch order: a new permutation every epoch, or one permutation kept for every epoch
# (tuomaso/train_mnist_fast shuffles once when it saves the data and never again).
SHUFFLES = ("every-epoch", "once")
PRECISIONS = ("fp32", "bf16", "auto")  # auto: bf16 where the CPU/GPU computes it natively
# Seeds are 32-bit, as numpy's are; shuffling derives seed * 100003 + epoch from them, which
# stays far inside torch's 64-bit generator seed for every seed in range.
SEED_MAX = 2**32 - 1
# The protocol a recipe is judged by: test accuracy in each of its last epochs.
TARGET_ACC = 99.4  # test accuracy (%) the experiments aim for
LAST_N = 3  # epochs averaged for a steadier "final" accuracy than the last epoch alone
NAME_MAX = 200  # leaves room for "-<timestamp>" in a 255-byte folder name
INT_MAX = 2**31 - 1  # any other whole number: torch and the CPU count take 32-bit ints
# Upper bounds of values that pass every type check but that torch cannot use, or that mean
# nothing on this data (docs/reliability.md, "values"). Rates past float32's 3.4e38 stop the
# optimizer with "value cannot be converted to type float without overflow"; far below that
# they only diverge, so 1000 bounds every rate (the drill-down's largest is 0.4).
RATE_MAX = 1e3  # optimizer.lr, optimizer.weight_decay, scheduler.max_lr, scheduler.min_lr
DIV_MAX = 1e9  # scheduler.div_factor and final_div_factor: past it the rate is only 0
EPOCHS_MAX = 100_000
BATCH_MAX = 2**20  # batch_size, test_batch_size: more images than any split here
BASE_MAX = 32  # how many `base` files an experiment may stand on, one on another


@dataclass
class OptimizerConfig:
    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)  # Adam/AdamW only


@dataclass
class SchedulerConfig:
    name: str = "none"
    step_size: int = 5  # step: epochs between decays
    gamma: float = 0.1  # step: decay factor
    max_lr: float = 0.1  # onecycle: peak learning rate
    pct_start: float = 0.3  # onecycle: fraction of steps spent warming up
    div_factor: float = 25.0  # onecycle: initial lr = max_lr / div_factor
    final_div_factor: float = 1e4  # onecycle: final lr = initial lr / final_div_factor
    # onecycle: cycle SGD's momentum / Adam's beta1 between 0.85 and 0.95 against the lr
    # (PyTorch's default); false keeps the optimizer's own value.
    cycle_momentum: bool = True
    min_lr: float = 0.0  # cosine: floor


@dataclass
class AugmentConfig:
    """Per-sample random affine transform and erasing; all zero means no augmentation."""

    rotation: float = 0.0  # max degrees either way
    translate: float = 0.0  # max shift as a fraction of the image size
    scale: float = 0.0  # max relative zoom either way (0.1 -> 0.9..1.1)
    shear: float = 0.0  # max degrees either way
    erasing: float = 0.0  # probability of erasing one random rectangle

    @property
    def enabled(self) -> bool:
        return any(v > 0 for v in dataclasses.astuple(self))


@dataclass
class ExpectConfig:
    """What the experiment declares about its model; tests check the model matches."""

    params: int = 0
    rf: int = 0


@dataclass
class LogConfig:
    tensorboard: str = ""  # folder for TensorBoard event files ("" = none)


@dataclass
class Config:
    name: str = "experiment"
    model: str = "seed"
    dataset: str = "mnist"
    epochs: int = 15
    batch_size: int = 64
    test_batch_size: int = 1000
    seed: int = 1
    val_size: int = 0
    limit_train: int = 0  # 0: the whole split
    limit_test: int = 0
    channels_last: bool = True
    label_smoothing: float = 0.0
    test: str = "every-epoch"  # one of TEST_WHEN
    ema: float = 0.0  # decay of an exponential moving average of the weights (0: off)
    # Recompute BatchNorm's statistics after every epoch from this many clean (unaugmented)
    # training images, so evaluation normalises as for the clean digits it sees (0: off).
    bn_recalibrate: int = 0
    # The last N epochs train on clean (unaugmented) images: the test digits are clean (0: off).
    clean_epochs: int = 0
    precision: str = "fp32"  # one of PRECISIONS
    shuffle: str = "every-epoch"  # one of SHUFFLES
    compile: bool = False  # train through torch.compile (as --compile does)
    target: str = ""
    analysis: str = ""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    expect: ExpectConfig = field(default_factory=ExpectConfig)
    log: LogConfig = field(default_factory=LogConfig)
    # The network as data (models/netspec.py); model is then "net".
    net: dict[str, Any] = field(default_factory=dict)


def _build(cls: type, data: dict[str, Any], where: str, prefix: str = "") -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise MnistlabError(f"{where}: unknown key {path!r}; known keys: {', '.join(fields)}")
        default = (
            fields[key].default_factory()
            if fields[key].default is dataclasses.MISSING
            else fields[key].default
        )
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise MnistlabError(f"{where}: {path} must be a table ([{path}])")
            values[key] = _build(type(default), value, where, f"{path}.")
        else:
            values[key] = _coerce(value, type(default), where, path)
    return cls(**values)


def _coerce(value: Any, kind: type, where: str, path: str) -> Any:
    if kind is tuple:  # a pair of numbers, e.g. optimizer.betas
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        ):
            raise MnistlabError(f"{where}: {path} must be a list of numbers, got {value!r}")
        return tuple(float(v) for v in value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > 2**53:  # too big to be a float exactly, and past 1e308 not at all
            raise MnistlabError(f"{where}: {path} is out of range, got {value!r}")
        return float(value)
    if kind is bool and not isinstance(value, bool):
        raise MnistlabError(f"{where}: {path} must be true or false, got {value!r}")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MnistlabError(f"{where}: {path} must be {kind.__name__}, got {value!r}")
    return value


def check_numbers(obj: Any, where: str, prefix: str = "") -> None:
    """Every float finite (TOML and flags accept inf and nan), every int in its range."""
    for f in dataclasses.fields(obj):
        value, path = getattr(obj, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_numbers(value, where, f"{path}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise MnistlabError(f"{where}: {path} must be a finite number, got {value!r}")
        elif isinstance(value, int) and not isinstance(value, bool):
            if path == "seed":
                if not 0 <= value <= SEED_MAX:
                    raise MnistlabError(
                        f"{where}: seed must be in [0, {SEED_MAX}] (2**32 - 1), got {value!r}"
                    )
            elif abs(value) > INT_MAX:
                raise MnistlabError(
                    f"{where}: {path} must be at most {INT_MAX} in size, got {value!r}"
                )


def check_name(name: str, where: str) -> None:
    """The name becomes a folder name (runs/<name>-<time>): one plain path component."""
    bad = [c for c in name if c in "/\\" or ord(c) < 32 or ord(c) == 127]
    if not name.strip() or name in (".", "..") or bad or len(name) > NAME_MAX:
        raise MnistlabError(
            f"{where}: name must be 1 to {NAME_MAX} characters without slashes or control "
            f"characters, got {name!r}"
        )


def validate(cfg: Config, where: str) -> Config:
    """Range checks that types alone cannot express."""
    check_numbers(cfg, where)

    def need(ok: bool, path: str, rule: str, value: Any) -> None:
        if not ok:
            raise MnistlabError(f"{where}: {path} {rule}, got {value!r}")

    from mnistlab.data.datasets import DATASETS
    from mnistlab.models.netspec import NET, check_net
    from mnistlab.models.registry import ALIASES, MODELS

    if cfg.net or cfg.model == NET:
        need(
            cfg.model == NET, "model", 'must be "net" (or left out) beside a [net] table', cfg.model
        )
        check_net(cfg.net, where)
    else:
        # A spec with ':' names a user's model (package.module:Class, file.py:Class);
        # building it checks it.
        if cfg.model not in MODELS and cfg.model not in ALIASES and ":" not in cfg.model:
            need(
                False,
                "model",
                f"must be one of {', '.join(MODELS)} or package.module:callable",
                cfg.model,
            )
    need(cfg.dataset in DATASETS, "dataset", f"must be one of {', '.join(DATASETS)}", cfg.dataset)
    need(
        1 <= cfg.epochs <= EPOCHS_MAX,
        "epochs",
        f"must be >= 1 and at most {EPOCHS_MAX}",
        cfg.epochs,
    )
    for key in ("batch_size", "test_batch_size"):
        value = getattr(cfg, key)
        need(1 <= value <= BATCH_MAX, key, f"must be >= 1 and at most {BATCH_MAX}", value)
    need(cfg.val_size >= 0, "val_size", "must be >= 0", cfg.val_size)
    need(cfg.limit_train >= 0, "limit_train", "must be >= 0", cfg.limit_train)
    need(cfg.limit_test >= 0, "limit_test", "must be >= 0", cfg.limit_test)
    need(0 <= cfg.label_smoothing < 1, "label_smoothing", "must be in [0, 1)", cfg.label_smoothing)
    need(cfg.test in TEST_WHEN, "test", f"must be one of {', '.join(TEST_WHEN)}", cfg.test)
    need(
        cfg.test != "never" or cfg.val_size > 0,
        "test",
        '"never" needs val_size > 0 (something to measure)',
        cfg.test,
    )
    need(0 <= cfg.ema < 1, "ema", "must be in [0, 1) (0: off)", cfg.ema)
    need(cfg.bn_recalibrate >= 0, "bn_recalibrate", "must be >= 0 (0: off)", cfg.bn_recalibrate)
    need(
        0 <= cfg.clean_epochs <= cfg.epochs,
        "clean_epochs",
        f"must be in [0, epochs = {cfg.epochs}] (0: off)",
        cfg.clean_epochs,
    )
    need(
        cfg.precision in PRECISIONS,
        "precision",
        f"must be one of {', '.join(PRECISIONS)}",
        cfg.precision,
    )
    need(cfg.shuffle in SHUFFLES, "shuffle", f"must be one of {', '.join(SHUFFLES)}", cfg.shuffle)
    opt, sched, aug = cfg.optimizer, cfg.scheduler, cfg.augment
    need(
        opt.name in OPTIMIZERS,
        "optimizer.name",
        f"must be one of {', '.join(OPTIMIZERS)}",
        opt.name,
    )
    need(0 < opt.lr <= RATE_MAX, "optimizer.lr", f"must be > 0 and at most {RATE_MAX:g}", opt.lr)
    need(0 <= opt.momentum < 1, "optimizer.momentum", "must be in [0, 1)", opt.momentum)
    need(
        0 <= opt.weight_decay <= RATE_MAX,
        "optimizer.weight_decay",
        f"must be >= 0 and at most {RATE_MAX:g}",
        opt.weight_decay,
    )
    need(
        len(opt.betas) == 2 and all(0 <= b < 1 for b in opt.betas),
        "optimizer.betas",
        "must be two numbers in [0, 1)",
        list(opt.betas),
    )
    need(
        not opt.nesterov or opt.momentum > 0,
        "optimizer.nesterov",
        "needs momentum > 0",
        opt.nesterov,
    )
    need(
        sched.name in SCHEDULERS,
        "scheduler.name",
        f"must be one of {', '.join(SCHEDULERS)}",
        sched.name,
    )
    need(sched.step_size >= 1, "scheduler.step_size", "must be >= 1", sched.step_size)
    need(0 < sched.gamma <= 1, "scheduler.gamma", "must be in (0, 1]", sched.gamma)
    need(
        0 < sched.max_lr <= RATE_MAX,
        "scheduler.max_lr",
        f"must be > 0 and at most {RATE_MAX:g}",
        sched.max_lr,
    )
    need(0 < sched.pct_start < 1, "scheduler.pct_start", "must be in (0, 1)", sched.pct_start)
    for key in ("div_factor", "final_div_factor"):
        value = getattr(sched, key)
        rule = f"must be >= 1 and at most {DIV_MAX:g}"
        need(1 <= value <= DIV_MAX, f"scheduler.{key}", rule, value)
    need(
        0 <= sched.min_lr <= RATE_MAX,
        "scheduler.min_lr",
        f"must be >= 0 and at most {RATE_MAX:g}",
        sched.min_lr,
    )
    need(0 <= aug.rotation <= 180, "augment.rotation", "must be in [0, 180] degrees", aug.rotation)
    need(0 <= aug.translate < 1, "augment.translate", "must be in [0, 1)", aug.translate)
    need(0 <= aug.scale < 1, "augment.scale", "must be in [0, 1)", aug.scale)
    need(0 <= aug.shear < 90, "augment.shear", "must be in [0, 90) degrees", aug.shear)
    need(0 <= aug.erasing <= 1, "augment.erasing", "must be in [0, 1]", aug.erasing)
    check_name(cfg.name, where)
    return cfg


def from_dict(data: dict[str, Any], where: str = "config") -> Config:
    if data.get("net") and "model" not in data:
        data = {**data, "model": "net"}  # a [net] table is the model
    return validate(_build(Config, data, where), where)


def load_config(path: str | Path) -> Config:
    """Read and check an experiment file; the file's stem is the default name.

    `base = "other.toml"` (relative to the file) starts from another experiment file, so a
    step states only what it changes; tables merge key by key. The base's name, target and
    analysis are its own and are not inherited. A chain of bases may be BASE_MAX files deep.
    """
    path = Path(path)
    data = _with_base(_read_toml(path), path)
    data.setdefault("name", path.stem)
    return from_dict(data, str(path))


OWN_KEYS = ("name", "target", "analysis")  # what a file says about itself, never inherited


def _read_toml(path: Path, what: str = "an experiment") -> dict[str, Any]:
    """A TOML file's tables; any problem reading or parsing it is one line naming it.

    `what`: the kind of file, with its article ("an experiment", "a search space").
    """
    kind = what.partition(" ")[2]
    try:
        # stat first: reading a FIFO or a terminal would wait forever
        if path.exists() and not path.is_file() and not path.is_dir():
            raise MnistlabError(f"{path}: not a regular file; give {what} TOML file")
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise MnistlabError(f"{path}: cannot read {kind} file ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise MnistlabError(
            f"{path}: not a text file (byte {e.start} is not UTF-8); give {what} TOML file"
        ) from None
    except ValueError:  # a NUL byte in the path
        raise MnistlabError(f"{str(path)!r}: not a usable path; give {what} TOML file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise MnistlabError(f"{path}: not valid TOML ({e})") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise MnistlabError(
            f"{path}: arrays or inline tables nest too deeply for {what} file; flatten them"
        ) from None


def _with_base(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """`data` on top of its `base` file's (resolved the same way), without the `base` key.

    Walks the chain of bases one file at a time (no recursion), at most BASE_MAX deep.
    """
    top = path
    files = [(path, data)]
    seen = [os.path.realpath(path)]
    while "base" in data:
        base_name = data.pop("base")
        if not isinstance(base_name, str) or not base_name.strip() or "\0" in base_name:
            raise MnistlabError(f"{path}: base must be the name of another experiment file")
        base = path.parent / base_name
        if os.path.realpath(base) in seen:
            loop = " -> ".join(str(p) for p, _ in (*files, (base, None)))
            raise MnistlabError(f"{path}: base files form a cycle: {loop}")
        if len(files) > BASE_MAX:
            raise MnistlabError(
                f"{path}: base files stand more than {BASE_MAX} deep on each other (from "
                f"{top}); give {top} a base nearer to it"
            )
        if not base.is_file():
            what = "is not a file" if base.exists() else "does not exist"
            raise MnistlabError(f"{path}: base file {base} {what}")
        path, data = base, _read_toml(base)
        files.append((path, data))
        seen.append(os.path.realpath(base))
    merged = files[-1][1]
    for _, upper in reversed(files[:-1]):
        for key in OWN_KEYS:
            merged.pop(key, None)
        merged = _merge(merged, upper)
    return merged


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, tables merged key by key (iteratively: any depth of tables)."""
    merged = dict(base)
    pending = [(merged, top)]
    while pending:
        into, upper = pending.pop()
        for key, value in upper.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                into[key] = dict(into[key])
                pending.append((into[key], value))
            else:
                into[key] = value
    return merged


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def override(cfg: Config, where: str = "command line", **changes: Any) -> Config:
    """A copy with dotted keys changed ('optimizer.lr'); None values are ignored."""
    data = to_dict(cfg)
    if changes.get("model") not in (None, "net"):
        data["net"] = {}  # a registered model named on the command line replaces [net]
    for key, value in changes.items():
        if value is None:
            continue
        *tables, leaf = key.split(".")
        node = data
        for table in tables:
            node = node.get(table)
            if not isinstance(node, dict):
                raise MnistlabError(f"{where}: {key} is not a config key (see `mnistlab train -h`)")
        node[leaf] = value
    return from_dict(data, where)


def dumps_toml(data: dict[str, Any]) -> str:
    """TOML text for a config dict: scalars first, then one table per nested dict."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, table in data.items():
        if isinstance(table, dict) and table:  # an empty table ([net] unused) is the default
            lines += ["", f"[{key}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        if any(isinstance(v, dict) for v in value):  # a [net] layer list: one table a line
            return "[\n" + "".join(f"    {_toml_value(v)},\n" for v in value) + "]"
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, str):
        text = value.replace("\\", "\\\\")
        if "\n" in value:
            return '"""\n' + _escape_controls(text.replace('"""', '\\"""'), "\n\t") + '"""'
        return '"' + _escape_controls(text.replace('"', '\\"'), "\t") + '"'
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


# Config tables an override may give as a dict of some of their keys (optimizer={"lr": 0.05}).
TABLES = ("optimizer", "scheduler", "augment", "expect", "log")


def flatten(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """{"optimizer": {"lr": 0.5}, "epochs": 2} -> {"optimizer.lr": 0.5, "epochs": 2}; None
    values are left out (not given)."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if key in TABLES and isinstance(value, Mapping):
            flat.update({f"{key}.{leaf}": v for leaf, v in value.items() if v is not None})
        elif value is not None:
            flat[key] = value
    return flat


def resolve(cfg: Config, overrides: Mapping[str, Any] | None = None) -> Config:
    """The one way an experiment and its overrides become the Config a run trains, for the
    command line and the API alike.

    `overrides`: config keys, dotted ("optimizer.lr") or as tables (optimizer={"lr": 0.5});
    None values are not given. Every override either does what it says or is refused: lr on a
    onecycle schedule (which never runs at optimizer.lr) asks for max_lr, and max_lr on another
    schedule asks for lr. A model named here replaces the experiment's [net] and drops its
    [expect] (those numbers describe its own model). A bad value is an error naming the
    argument as the caller spelled it (errors.arg).
    """
    changes = flatten(overrides or {})
    schedule = changes.get("scheduler.name", cfg.scheduler.name)
    if "optimizer.lr" in changes and schedule == "onecycle":
        raise MnistlabError(
            f"{arg('optimizer.lr')} sets optimizer.lr, which a onecycle schedule never runs at "
            f"(it climbs from max_lr / div_factor to max_lr); use {arg('scheduler.max_lr')} to "
            "set its peak"
        )
    if "scheduler.max_lr" in changes and schedule != "onecycle":
        raise MnistlabError(
            f"{arg('scheduler.max_lr')} sets the peak of a onecycle schedule, and this "
            f"experiment's scheduler is {schedule!r}; use {arg('optimizer.lr')}"
        )
    model = cfg.model
    try:
        cfg = override(cfg, "overrides", **changes)
    except MnistlabError:
        for key, value in changes.items():
            # One key at a time, so that the bad value is reported with its argument.
            cfg = override(cfg, given(key, value), **{key: value})
        raise
    if cfg.model != model and not any(k.partition(".")[0] == "expect" for k in changes):
        cfg = dataclasses.replace(cfg, expect=ExpectConfig())
    return cfg


def name_for_model(spec: str) -> str:
    """A run's default name for a model spec: the name, or what follows the ':'
    (path/net.py:Net -> Net)."""
    return spec.rpartition(":")[2]


def _escape_controls(text: str, allowed: str) -> str:
    """TOML strings may not hold raw control characters: write them as \\uXXXX."""
    return "".join(
        f"\\u{ord(c):04x}" if (ord(c) < 32 or ord(c) == 127) and c not in allowed else c
        for c in text
    )
