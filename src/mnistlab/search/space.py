"""A search space as data: a TOML file of choices and ranges, checked before any trial runs.

    [search]
    val_size = 10000         # training images held out for the objective (test set never read)
    objective2 = "none"      # "params" or "macs": a second objective, minimised (Pareto front)
    sampler = "tpe"          # "tpe" or "nsga2" (NSGA-II needs objective2)
    pruner = "median"        # "median", "hyperband" or "none"; single objective only
    prune_from = 6           # the first epoch at which the pruner may stop a trial (default:
                             # from each trial's schedule, see default_prune_from)

    [constraints]            # checked on the built network before training: infeasible is free
    max_params = 5000
    max_macs = 0             # 0: no limit
    min_rf = 28

    [experiment]             # every trial's fixed recipe: the keys of an experiment file
    epochs = 15
    [experiment.optimizer]
    name = "sgd"

    [space.net]              # the GAP family's knobs (models/netspec.py)
    first = [4, 6, 8]        # channels of the first 3x3 conv
    layers = [[1, 2], [3, 4, 5]]  # per block, its number of 3x3 convs (a pool between blocks)
    width = [8, 10, 12, 14, 16]   # channels of every further 3x3 conv, chosen one by one
    squeeze = [0, 8]         # 1x1 squeeze after each pool (0: none)
    pool_first = [true, false]
    dropout = 0.0
    kind = ["conv", "separable", "grouped"]  # optional, each drawn block by block (netspec's
    groups = [2, 4]          # per-block keys): groups only for a block drawn "grouped"
    bottleneck = [0, 4]
    residual = [false, true]
    se = [0, 4]

    [space.recipe]           # experiment keys, dotted
    "scheduler.max_lr" = { low = 0.03, high = 0.3, log = true }
    batch_size = [64, 128]

Every knob is a fixed value, a list (a choice among its items) or a table {low, high} with
optional `log = true` or `step` (a range; whole numbers if low and high are). A trial's
parameters are named after its knobs: first, layers_1, width_1_2 (block 1, conv 2),
squeeze_1, pool_first, dropout, kind_1, groups_1, bottleneck_1, residual_1, se_1 (the last five
only where the space has them) and the recipe's dotted keys.

The whole space is checked before a study exists: every value of every knob, every corner
of the network knobs built as a [net] table, and every recipe knob's extremes as experiments.
"""

import copy
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from mnistlab.config import SEED_MAX, Config, _read_toml, from_dict, to_dict
from mnistlab.errors import MnistlabError
from mnistlab.models import NET, build
from mnistlab.models.netspec import CONV_KINDS, MAX_CHANNELS, MAX_LAYERS, check_net
from mnistlab.models.summary import has_linear, model_stats

OBJECTIVE2 = ("none", "params", "macs")
SAMPLERS = ("tpe", "nsga2")
PRUNERS = ("median", "hyperband", "none")
PRUNING = ("pruner", "prune_from")  # when trials stop, not which trials: may change mid-study
# Per-block knobs are netspec's per-block family keys, drawn block by block.
BLOCK_KNOBS = ("kind", "groups", "bottleneck", "residual", "se")
NET_KNOBS = ("first", "layers", "width", "squeeze", "pool_first", "dropout", *BLOCK_KNOBS)
# Keys a search sets itself: the recipe may not choose them.
FIXED_KEYS = ("name", "model", "net", "val_size", "test", "limit_test", "expect")
TOP_TABLES = ("search", "constraints", "experiment", "space")
PROBE_NET = {"blocks": [[8], [8]], "squeeze": [0]}  # any network: recipes are checked on it


class Trial(Protocol):
    """What the space needs of an Optuna trial (optuna.Trial, or FixedTrial to replay one)."""

    def suggest_categorical(self, name: str, choices: list) -> Any: ...

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False): ...

    def suggest_float(self, name: str, low: float, high: float, *, step=None, log=False): ...


@dataclass
class Space:
    path: str
    val_size: int = 10_000
    objective2: str = "none"
    sampler: str = "tpe"
    pruner: str = "median"
    prune_from: int | None = None  # None: each trial's from its schedule (default_prune_from)
    seed: int | None = None
    max_params: int = 0
    max_macs: int = 0
    min_rf: int = 28
    experiment: dict[str, Any] = field(default_factory=dict)
    net: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)

    @property
    def directions(self) -> list[str]:
        return ["maximize"] + ([] if self.objective2 == "none" else ["minimize"])

    def as_data(self) -> dict[str, Any]:
        """What the study records about its space."""
        data = {k: v for k, v in self.__dict__.items() if k != "path"}
        return json.loads(json.dumps(data))


def same_search(recorded: dict[str, Any], space: Space) -> bool:
    """Whether a worker of `space` may join a study started from `recorded`: the same trials
    to draw and score. The pruner may differ: it only decides when a trial stops, and each
    trial records the one it ran under."""

    def trials_part(data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if k not in PRUNING}

    # A key the recording predates compares as its default.
    defaults = Space(path="").as_data()
    return trials_part({**defaults, **recorded}) == trials_part(space.as_data())


# ----------------------------------------------------------------------------- reading


def _fail(where: str, key: str, problem: str) -> MnistlabError:
    return MnistlabError(f"{where}: {key} {problem}")


def _check_knob(value: Any, where: str, key: str) -> Any:
    """A knob is a fixed value, a non-empty list of choices or a {low, high} range."""
    if isinstance(value, list):
        if not value:
            raise _fail(where, key, "is an empty list of choices")
        for item in value:
            if not isinstance(item, bool | int | float | str):
                raise _fail(where, key, f"choices must be numbers, strings or booleans: {item!r}")
        return value
    if isinstance(value, dict):
        unknown = [k for k in value if k not in ("low", "high", "log", "step")]
        if unknown or "low" not in value or "high" not in value:
            raise _fail(where, key, "as a range must be { low = ..., high = ... } (log, step)")
        low, high = value["low"], value["high"]
        for bound in (low, high):
            if not isinstance(bound, int | float) or isinstance(bound, bool):
                raise _fail(where, key, f"bounds must be numbers, got {bound!r}")
        if low >= high:
            raise _fail(where, key, f"low must be below high, got {low} and {high}")
        if not isinstance(value.get("log", False), bool):
            raise _fail(where, key, f"log must be true or false, got {value['log']!r}")
        if value.get("log") and low <= 0:
            raise _fail(where, key, "a log range needs low > 0")
        if value.get("log") and "step" in value:
            raise _fail(where, key, "cannot have both log and step")
        if "step" in value:
            step = value["step"]
            # Optuna would take a step of 0 as none at all, and a text step fails mid-study.
            if not isinstance(step, int | float) or isinstance(step, bool) or not step > 0:
                raise _fail(where, key, f"step must be a number > 0, got {step!r}")
            if step > high - low:
                raise _fail(where, key, f"step {step} is wider than the range {low} to {high}")
        return value
    if isinstance(value, bool | int | float | str):
        return value
    raise _fail(where, key, f"must be a value, a list of choices or a range, got {value!r}")


# What each net knob's values may be: (kind, low, high); bounds as models/netspec.py's.
# A block's conv count is bounded so that a network stays within netspec.MAX_LAYERS.
MAX_BLOCKS = 5  # 28 -> 14 -> 7 -> 3 -> 1: a sixth pool leaves nothing
NET_KNOB_VALUES: dict[str, tuple[type, float, float]] = {
    "first": (int, 1, MAX_CHANNELS),
    "width": (int, 1, MAX_CHANNELS),
    "squeeze": (int, 0, MAX_CHANNELS),
    "layers": (int, 1, MAX_LAYERS // (2 * MAX_BLOCKS)),
    "pool_first": (bool, 0, 1),
    "dropout": (float, 0.0, 1.0),  # high bound excluded
    "kind": (str, 0, 0),  # one of netspec.CONV_KINDS
    "groups": (int, 1, MAX_CHANNELS),
    "bottleneck": (int, 0, MAX_CHANNELS),
    "residual": (bool, 0, 1),
    "se": (int, 0, MAX_CHANNELS),
}


def _check_net_knob(value: Any, where: str, key: str, knob: str) -> Any:
    """A net knob (fixed, choices or a range) whose every value can be built."""
    _check_knob(value, where, key)
    kind, low, high = NET_KNOB_VALUES[knob]
    if isinstance(value, dict) and kind is int and not isinstance(value.get("step", 1), int):
        raise _fail(where, key, f"step must be a whole number, got {value['step']!r}")
    for item in _knob_values(value):
        if kind is bool:
            ok, rule = isinstance(item, bool), "must be true or false"
        elif kind is str:
            ok, rule = item in CONV_KINDS, f"must be among {', '.join(CONV_KINDS)}"
        elif kind is int:
            ok = isinstance(item, int) and not isinstance(item, bool) and low <= item <= high
            rule = f"must be whole numbers in [{low}, {high}]"
        else:
            number = isinstance(item, int | float) and not isinstance(item, bool)
            ok, rule = number and low <= item < high, f"must be numbers in [{low}, {high})"
        if not ok:
            raise _fail(where, key, f"{rule}, got {item!r}")
    return value


def _knob_values(knob: Any) -> list[Any]:
    """Values that exercise a knob's extremes, for checking before the search starts (a
    stepped range's first step too: a fractional step makes whole bounds fractional)."""
    if isinstance(knob, list):
        return knob
    if isinstance(knob, dict):
        step = [knob["low"] + knob["step"]] if "step" in knob else []
        return [knob["low"], *step, knob["high"]]
    return [knob]


def _extremes(knob: Any) -> list[Any]:
    """A knob's smallest and largest values (its only one, if fixed), for the corners."""
    values = _knob_values(knob)
    if any(isinstance(v, str) for v in values):  # kinds have no order: each is a corner
        return list(dict.fromkeys(values))
    values = sorted(set(values))
    return [values[0], values[-1]] if len(values) > 1 else values


def _dotted_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        keys.add(prefix + key)
        if isinstance(value, dict) and key != "net":
            keys |= _dotted_keys(value, f"{prefix}{key}.")
    return keys


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *tables, leaf = key.split(".")
    node = data
    for table in tables:
        node = node.setdefault(table, {})
    node[leaf] = value


def parse_space(data: dict[str, Any], where: str) -> Space:
    """A checked Space from the TOML data; every problem is one line naming the key."""
    unknown = [k for k in data if k not in TOP_TABLES]
    if unknown:
        raise _fail(
            where, unknown[0], f"is not a table of a search space ({', '.join(TOP_TABLES)})"
        )
    for table in TOP_TABLES:
        if not isinstance(data.get(table, {}), dict):
            raise _fail(where, table, f"must be a table ([{table}])")
    search, constraints = data.get("search", {}), data.get("constraints", {})
    space = Space(path=where)
    schema = {
        "search": {
            "val_size": int,
            "objective2": str,
            "sampler": str,
            "pruner": str,
            "prune_from": int,
            "seed": int,
        },
        "constraints": {"max_params": int, "max_macs": int, "min_rf": int},
    }
    for table, values in (("search", search), ("constraints", constraints)):
        for key, value in values.items():
            kind = schema[table].get(key)
            if kind is None:
                known = ", ".join(schema[table])
                raise _fail(where, f"{table}.{key}", f"is not a known key ({known})")
            if not isinstance(value, kind) or isinstance(value, bool):
                raise _fail(where, f"{table}.{key}", f"must be {kind.__name__}, got {value!r}")
            setattr(space, key, value)
    if space.val_size < 1:
        raise _fail(where, "search.val_size", f"must be >= 1, got {space.val_size}")
    for key, allowed in (
        ("objective2", OBJECTIVE2),
        ("sampler", SAMPLERS),
        ("pruner", PRUNERS),
    ):
        if getattr(space, key) not in allowed:
            raise _fail(
                where,
                f"search.{key}",
                f"must be one of {', '.join(allowed)}, got {getattr(space, key)!r}",
            )
    if space.prune_from is not None and space.prune_from < 1:
        raise _fail(where, "search.prune_from", f"must be >= 1, got {space.prune_from}")
    if space.seed is not None and not 0 <= space.seed <= SEED_MAX:
        raise _fail(where, "search.seed", f"must be in [0, {SEED_MAX}], got {space.seed}")
    if space.sampler == "nsga2" and space.objective2 == "none":
        raise _fail(where, "search.sampler", '"nsga2" needs a second objective (objective2)')
    for key in ("max_params", "max_macs", "min_rf"):
        if getattr(space, key) < 0:
            raise _fail(where, f"constraints.{key}", "must be >= 0 (0: no limit)")

    space.experiment = data.get("experiment", {})
    taken = [k for k in space.experiment if k in FIXED_KEYS]
    if taken:
        raise _fail(where, f"experiment.{taken[0]}", "is set by the search itself; leave it out")

    tables = data.get("space", {})
    unknown = [k for k in tables if k not in ("net", "recipe")]
    if unknown:
        raise _fail(where, f"space.{unknown[0]}", "is not a table of [space] (net, recipe)")
    net = tables.get("net", {})
    if not isinstance(net, dict) or "layers" not in net:
        raise _fail(where, "space.net.layers", "is required: per block, its number of 3x3 convs")
    for key, value in net.items():
        if key not in NET_KNOBS:
            raise _fail(where, f"space.net.{key}", f"is not a knob ({', '.join(NET_KNOBS)})")
        if key == "layers":
            if not isinstance(value, list) or not value:
                raise _fail(where, "space.net.layers", "must list one knob per block")
            if len(value) > MAX_BLOCKS:
                raise _fail(
                    where, "space.net.layers", f"has {len(value)} blocks, more than {MAX_BLOCKS}"
                )
            for i, block in enumerate(value):
                _check_net_knob(block, where, f"space.net.layers[{i}]", key)
        else:
            _check_net_knob(value, where, f"space.net.{key}", key)
    net.setdefault("first", net.get("width", 8))
    net.setdefault("width", 8)
    space.net = net
    _check_corners(space)

    recipe = tables.get("recipe", {})
    known = _dotted_keys(to_dict(Config()))
    for key, value in recipe.items():
        if key.split(".")[0] in FIXED_KEYS or key not in known:
            raise _fail(where, f"space.recipe.{key!r}", "is not an experiment key a search may set")
        _check_knob(value, where, f"space.recipe.{key!r}")
    space.recipe = recipe
    _check_recipes(space)
    _check_held_out(space)
    return space


def _check_corners(space: Space) -> None:
    """Every corner of the network knobs (each block's fewest and most convs, the narrowest
    and widest widths, squeeze and pool_first at each end, every kind, and the per-block knobs
    at each end in every block) must build: a space whose extremes make no network would only
    fill its study with infeasible trials."""
    knobs = space.net
    per_block = [k for k in BLOCK_KNOBS if k in knobs]
    for counts, first, width, squeeze, pool_first, *chosen in itertools.product(
        itertools.product(*(_extremes(block) for block in knobs["layers"])),
        _extremes(knobs["first"]),
        _extremes(knobs["width"]),
        _extremes(knobs.get("squeeze", 0)),
        _extremes(knobs.get("pool_first", False)),
        *(_extremes(knobs[k]) for k in per_block),
    ):
        blocks = [[width] * count for count in counts]
        blocks[0][0] = first
        net: dict[str, Any] = {"blocks": blocks, "pool_first": pool_first}
        if len(blocks) > 1:
            net["squeeze"] = [squeeze] * (len(blocks) - 1)
        net.update({k: [value] * len(blocks) for k, value in zip(per_block, chosen, strict=True)})
        try:
            check_net(net, "it")
        except MnistlabError as e:
            shown = ", ".join(f"{k} = {v}" for k, v in net.items()).lower()
            raise _fail(
                space.path,
                "space.net",
                f"cannot build its corner {{ {shown} }}: {e}; narrow its layers or widths",
            ) from None


def _check_held_out(space: Space) -> None:
    """limit_train, where set, must leave images to train on once val_size are held out."""
    if "limit_train" in space.recipe:
        key, values = "space.recipe.'limit_train'", _knob_values(space.recipe["limit_train"])
    else:
        key, values = "experiment.limit_train", [space.experiment.get("limit_train", 0)]
    for value in values:
        if 0 < value <= space.val_size:
            raise _fail(
                space.path,
                key,
                f"{value} leaves no image to train on once search.val_size = "
                f"{space.val_size} are held out; raise it above val_size or lower val_size",
            )


def default_prune_from(cfg: Config) -> int:
    """The first epoch a pruner may judge a trial at, from its schedule: the epoch after a
    one-cycle warm-up (while the rate climbs, epochs rank how fast a trial starts, not where
    it ends: pruning from epoch 1 stopped most of the under-5k study's trials there), else
    the epoch after the first third. At or past the last epoch, the trial is never pruned."""
    if cfg.scheduler.name == "onecycle":
        # rounded first: 0.3 * 10 is 3.0000000000000004 in floating point
        return math.ceil(round(cfg.scheduler.pct_start * cfg.epochs, 9)) + 1
    return math.ceil(round(cfg.epochs / 3, 9)) + 1


def prune_from(space: Space, recipe: dict[str, Any]) -> int:
    """The space's prune_from where it sets one, else that of the trial's recipe (its
    schedule and epochs: default_prune_from), known before its network is built."""
    if space.prune_from is not None:
        return space.prune_from
    schedule = from_dict(trial_experiment(space, "probe", PROBE_NET, recipe), space.path)
    return default_prune_from(schedule)


def _check_recipes(space: Space) -> None:
    """Every recipe knob's extremes on the fixed experiment must be a valid experiment."""
    base = trial_experiment(space, "probe", PROBE_NET, {})
    from_dict(base, f"{space.path} [experiment]")
    for key, knob in space.recipe.items():
        for value in _knob_values(knob):
            data = copy.deepcopy(base)
            _set_dotted(data, key, value)
            from_dict(data, f"{space.path} space.recipe {key!r} = {value!r}")


def load_space(path: str | Path) -> Space:
    path = Path(path)
    return parse_space(_read_toml(path, "a search space"), str(path))


def space_from_data(data: dict[str, Any], where: str) -> Space:
    """A Space from what a study recorded (Space.as_data)."""
    space = Space(path=where)
    for key, value in data.items():
        setattr(space, key, value)
    return space


# ----------------------------------------------------------------------------- trials


def _suggest(trial: Trial, name: str, knob: Any) -> Any:
    if isinstance(knob, list):
        return trial.suggest_categorical(name, knob) if len(knob) > 1 else knob[0]
    if isinstance(knob, dict):
        low, high = knob["low"], knob["high"]
        log, step = bool(knob.get("log", False)), knob.get("step")
        whole = all(isinstance(v, int) for v in (low, high)) and isinstance(step or 1, int)
        if whole:
            return trial.suggest_int(name, low, high, step=step or 1, log=log)
        return trial.suggest_float(name, float(low), float(high), step=step, log=log)
    return knob


def suggest(trial: Trial, space: Space) -> tuple[dict[str, Any], dict[str, Any]]:
    """The trial's network (a [net] table of the GAP family) and recipe values."""
    knobs = space.net
    blocks = []
    for b, layers_knob in enumerate(knobs["layers"], 1):
        count = _suggest(trial, f"layers_{b}", layers_knob)
        widths = []
        for j in range(1, count + 1):
            name, knob = (("first", knobs["first"]) if b == 1 and j == 1 else
                          (f"width_{b}_{j}", knobs["width"]))  # fmt: skip
            widths.append(_suggest(trial, name, knob))
        blocks.append(widths)
    net: dict[str, Any] = {"blocks": blocks}
    if len(blocks) > 1:
        net["squeeze"] = [
            _suggest(trial, f"squeeze_{b}", knobs.get("squeeze", 0)) for b in range(1, len(blocks))
        ]
    net["pool_first"] = _suggest(trial, "pool_first", knobs.get("pool_first", False))
    net["dropout"] = float(_suggest(trial, "dropout", knobs.get("dropout", 0.0)))
    blocks_range = range(1, len(blocks) + 1)
    for knob in BLOCK_KNOBS:
        if knob == "groups" and "groups" in knobs:  # drawn only where a block is grouped
            kinds = net.get("kind", ["conv"] * len(blocks))
            net["groups"] = [
                _suggest(trial, f"groups_{b}", knobs["groups"]) if kind == "grouped" else 2
                for b, kind in zip(blocks_range, kinds, strict=True)
            ]
        elif knob in knobs:
            net[knob] = [_suggest(trial, f"{knob}_{b}", knobs[knob]) for b in blocks_range]
    recipe = {key: _suggest(trial, key, knob) for key, knob in space.recipe.items()}
    return net, recipe


def measure(net: dict[str, Any]) -> dict[str, Any]:
    """Parameters, MACs and RF of a network, or why it cannot be built."""
    try:
        check_net(net, "trial")
    except MnistlabError as e:
        return {"error": str(e)}
    with torch.random.fork_rng(devices=[]):  # measuring must not move the seeded weights
        model = build(NET, net)
    stats = model_stats(model)
    return {**stats, "linear": has_linear(model)}


def infeasible(stats: dict[str, Any], space: Space) -> str:
    """Why a network breaks the space's constraints ("" when it keeps them)."""
    if "error" in stats:
        return stats["error"]
    if space.max_params and stats["params"] > space.max_params:
        return f"{stats['params']:,} parameters > {space.max_params:,}"
    if space.max_macs and stats["macs"] > space.max_macs:
        return f"{stats['macs']:,} MACs > {space.max_macs:,}"
    if space.min_rf and (stats["rf"] or 0) < space.min_rf:
        return f"receptive field {stats['rf']} < {space.min_rf}"
    if stats["linear"]:
        return "has a Linear layer"
    return ""


def trial_experiment(
    space: Space, name: str, net: dict[str, Any], recipe: dict[str, Any]
) -> dict[str, Any]:
    """A trial's experiment as data: validation split only, the test set never read."""
    data = copy.deepcopy(space.experiment)
    for key, value in recipe.items():
        _set_dotted(data, key, value)
    data.update(name=name, model=NET, net=net, val_size=space.val_size, test="never")
    return data


def trial_config(space: Space, name: str, net: dict[str, Any], recipe: dict[str, Any]) -> Config:
    return from_dict(trial_experiment(space, name, net, recipe), f"{space.path} ({name})")
