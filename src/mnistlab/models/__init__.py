"""Models: the registered networks (registry.py) and `build`, the one way a network is built."""

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mnistlab.errors import MnistlabError

# Importing the families registers their models.
from mnistlab.models import compact, fast, netspec, peer, seed  # noqa: F401
from mnistlab.models.netspec import INPUT, NET, NUM_CLASSES
from mnistlab.models.registry import ALIASES, MODELS, list_models, model_doc, register_model

__all__ = [
    "ALIASES",
    "FINAL",
    "LOGITS",
    "LOG_PROBS",
    "NET",
    "OUTPUTS",
    "build",
    "check_fits",
    "output_kind",
    "recorded_outputs",
    "list_models",
    "model_doc",
    "register_model",
]

FINAL = "final"  # the model shipped inside the package (mnistlab.weights)

# What a network returns: PyTorch's convention (torchvision, timm) is logits; the tool's own
# networks end in log_softmax. Runs and model files record which (runs from before the record
# are log-probabilities), and log_softmax is applied to logits only: applied to
# log-probabilities it is not exactly a no-op in floating point, and committed runs must
# reproduce.
LOGITS, LOG_PROBS = "logits", "log_probs"
OUTPUTS = (LOGITS, LOG_PROBS)


def build(spec: str | Mapping[str, Any], net: Mapping[str, Any] | None = None) -> nn.Module:
    """The network `spec` names, untrained. Every network is built here: training,
    checkpoints, summary, search, export and benchmarks. `spec` is one of

    - a registered model name (or a former one, see ALIASES);
    - "net" with its [net] table as `net`, or the [net] table itself;
    - "package.module:callable" or "path/to/file.py:callable": an nn.Module class or a
      factory, called with no arguments;
    - "final": the architecture of the model shipped in the package.

    A run's model spec and [net] table (`build(cfg.model, cfg.net)`) rebuild its network.
    """
    if isinstance(spec, Mapping):
        return netspec._build(dict(spec))
    if net:
        return netspec._build(dict(net))
    if spec == NET:
        raise MnistlabError('model "net" needs a [net] table describing the network')
    if spec == FINAL:
        from mnistlab.weights import shipped_record

        record = shipped_record()
        return build(record["model"], record.get("net"))
    if ":" in spec:
        from mnistlab.models.spec import _from_callable

        return _from_callable(spec)
    make = MODELS.get(ALIASES.get(spec, spec))
    if make is None:
        known = ", ".join(list_models())
        raise MnistlabError(f"unknown model {spec!r}; registered models: {known}")
    return make()


# One batch as the trainer feeds it: 2 images (no size is special-cased at 2), 1 channel,
# 28x28, in the range normalised MNIST pixels take, and not constant (a model normalising
# each image by its own spread would divide by zero on a blank one).
DRY_BATCH = (2, *INPUT)
_FIX_INPUT = "it gets [N, 1, 28, 28] images (flatten before an nn.Linear)"
_FIX_OUTPUT = f"it must return [N, {NUM_CLASSES}] logits or log-probabilities, one value per class"
# A row of log-probabilities has logsumexp 0 up to rounding; a network's logits at
# initialisation sit near log(10) = 2.3, and a row of them summing to 1 after exp() by chance
# would need every value to conspire.
_NORMALISED = 1e-4


def _dry_batch(device: torch.device) -> torch.Tensor:
    count = DRY_BATCH[0] * INPUT[0] * INPUT[1] * INPUT[2]
    return torch.linspace(-0.42, 2.8, count, device=device).reshape(DRY_BATCH)


def _shape(shape: Any) -> str:
    return f"[{', '.join(map(str, shape))}]"


def recorded_outputs(meta: Mapping[str, Any]) -> str:
    """What a run's network returns, as its run.json, model file or export records it; a
    record from before there was one: log-probabilities."""
    outputs = meta.get("outputs") or LOG_PROBS
    if outputs not in OUTPUTS:
        raise MnistlabError(
            f"outputs {outputs!r} recorded; the file is damaged or from a newer mnistlab"
        )
    return outputs


def output_kind(model: nn.Module, output: torch.Tensor) -> str:
    """LOGITS or LOG_PROBS: what `model` returns, judged from its `output` [N, classes] on a
    batch. A model may declare it (a class attribute `outputs = "logits"`); otherwise rows
    whose exponentials sum to 1 are log-probabilities and anything else is logits."""
    declared = getattr(model, "outputs", None)
    if declared is not None:
        if declared not in OUTPUTS:
            raise MnistlabError(
                f"{type(model).__name__}.outputs is {declared!r}; declare {LOGITS!r} or "
                f"{LOG_PROBS!r} (or leave it out and the first batch decides)"
            )
        return declared
    lse = torch.logsumexp(output.detach().float(), dim=1)
    return LOG_PROBS if bool((lse.abs() < _NORMALISED).all()) else LOGITS


def check_fits(model: nn.Module, spec: str, device: torch.device, user: bool = True) -> str:
    """One dry forward pass of `model` on a batch [2, 1, 28, 28] on `device` before anything
    trains on it: the output must be a floating-point tensor [2, 10] of finite values, as the
    loss and the accuracy read it. A model that does not fit is one MnistlabError naming
    `spec` and what it returned. Returns what the model outputs, LOGITS or LOG_PROBS
    (output_kind), decided here once for a run.

    Nothing about the model changes: it runs in eval mode (BatchNorm keeps its running
    statistics, dropout draws nothing), under no_grad, with the random state forked, and its
    train/eval mode is restored. A [net] table that does not end in 10 values never gets here
    (netspec refuses it by the same rule). `user`: the model is the user's code, whose
    failure is their input; a registered model failing is a bug and keeps its traceback.
    """
    where = f"model {spec!r}: on a batch {_shape(DRY_BATCH)}"
    was_training = model.training
    forked = []  # the CPU's generator is always forked; a CUDA device's as well
    if device.type == "cuda":
        forked = [device.index if device.index is not None else torch.cuda.current_device()]
    try:
        with torch.random.fork_rng(devices=forked), torch.no_grad():
            model.eval()
            output = model(_dry_batch(device))
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        if not user and not isinstance(e, RuntimeError):
            raise
        from mnistlab.models.spec import describe_raised

        raise MnistlabError(
            f"{where} its forward() raised {describe_raised(e)}; {_FIX_INPUT} and "
            f"{_FIX_OUTPUT.removeprefix('it ')}"
        ) from e
    finally:
        model.train(was_training)
    if not isinstance(output, torch.Tensor):
        raise MnistlabError(
            f"{where} it returned a {type(output).__name__}, not a tensor; {_FIX_OUTPUT}"
        )
    shape = tuple(output.shape)
    if shape != (DRY_BATCH[0], NUM_CLASSES):
        per_image = 1
        for size in shape[1:]:
            per_image *= size
        if len(shape) < 2 or shape[0] != DRY_BATCH[0]:
            problem = f"its first dimension is not the batch of {DRY_BATCH[0]}"
        elif len(shape) > 2:
            problem = f"extra dimensions: flatten them to [N, {NUM_CLASSES}]"
        else:
            problem = f"{per_image} values per image, not {NUM_CLASSES}"
        raise MnistlabError(
            f"{where} its output is {_shape(shape)}, not {_shape((DRY_BATCH[0], NUM_CLASSES))} "
            f"({problem}); {_FIX_OUTPUT}"
        )
    if not output.dtype.is_floating_point:
        raise MnistlabError(
            f"{where} its output is {str(output.dtype).removeprefix('torch.')}, not floating "
            f"point; {_FIX_OUTPUT}"
        )
    if not torch.isfinite(output).all():
        bad = "NaN" if torch.isnan(output).any() else "infinite"
        raise MnistlabError(
            f"{where} its output holds {bad} values before any training; {_FIX_OUTPUT}, "
            "finite (check its forward() for a log or division of zero)"
        )
    return output_kind(model, output)
