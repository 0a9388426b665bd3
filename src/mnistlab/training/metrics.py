"""Metrics of a split: loss, accuracy, per-class accuracy, confusion matrix, misclassified."""

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.data.datasets import Loader
from mnistlab.models import LOG_PROBS, LOGITS, recorded_outputs


def as_log_probs(output: torch.Tensor, outputs: str) -> torch.Tensor:
    """A network's output as float log-probabilities: log_softmax for logits, nothing for
    log-probabilities (where it would not be exactly a no-op; see models.OUTPUTS)."""
    output = output.float()
    return F.log_softmax(output, dim=1) if outputs == LOGITS else output


@torch.no_grad()
def predict(model: nn.Module, loader: Loader, outputs: str = LOG_PROBS) -> torch.Tensor:
    """Log-probabilities [N, 10] for a whole (unshuffled) loader, on the CPU; `outputs`:
    what the model returns (models.LOGITS or LOG_PROBS)."""
    model.eval()
    return torch.cat([as_log_probs(model(x), outputs).cpu() for x, _ in loader.batches()])


def summarize_predictions(log_probs: torch.Tensor, labels: torch.Tensor) -> dict:
    """Loss, accuracy, confusion matrix, per-class accuracy and misclassified indices."""
    labels = labels.cpu()
    preds = log_probs.argmax(dim=1)
    num_classes = log_probs.shape[1]
    confusion = torch.bincount(labels * num_classes + preds, minlength=num_classes**2)
    confusion = confusion.view(num_classes, num_classes)  # rows: true label, columns: predicted
    per_class = confusion.diag().double() / confusion.sum(dim=1).clamp(min=1).double()
    correct = int((preds == labels).sum())
    return {
        "loss": F.nll_loss(log_probs, labels, reduction="mean").item(),
        "correct": correct,
        "total": len(labels),
        "accuracy": 100.0 * correct / len(labels),
        "per_class_accuracy": [round(100.0 * v, 2) for v in per_class.tolist()],
        "confusion_matrix": confusion.tolist(),
        "misclassified": torch.nonzero(preds != labels).flatten().tolist(),
    }


def test_line(loss: float, correct: int, total: int, name: str = "Test") -> str:
    """The seed notebook's result line."""
    return (
        f"{name} set: Average loss: {loss:.4f}, "
        f"Accuracy: {correct}/{total} ({100.0 * correct / total:.2f}%)"
    )


def format_report(result: dict, classes: tuple[str, ...], split: str = "test") -> str:
    title = split.capitalize()
    lines = [test_line(result["loss"], result["correct"], result["total"], title), ""]
    lines.append("Per-class accuracy:")
    for name, acc in zip(classes, result["per_class_accuracy"], strict=True):
        lines.append(f"  {name:>12}  {acc:6.2f}%")
    lines += ["", "Confusion matrix (rows: true, columns: predicted):"]
    width = max(5, max(len(str(v)) for row in result["confusion_matrix"] for v in row) + 1)
    lines.append("      " + "".join(f"{i:>{width}}" for i in range(len(classes))))
    for i, row in enumerate(result["confusion_matrix"]):
        lines.append(f"  {i:>3} " + "".join(f"{v:>{width}}" for v in row))
    wrong = result["misclassified"]
    shown = ", ".join(str(i) for i in wrong[:50]) + (" ..." if len(wrong) > 50 else "")
    lines += ["", f"Misclassified {split} images ({len(wrong)}): {shown}"]
    return "\n".join(lines)


def evaluate_model(
    model: nn.Module,
    meta: dict,
    split: str = "test",
    data_dir=None,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
    limit: int | None = None,
) -> dict:
    """Metrics of `model` on a split of the dataset its metadata records, normalised as
    the metadata says (data.datasets.normalization), its output read as the metadata says
    (`outputs`; log-probabilities when not recorded); `limit`: only the first images."""
    from mnistlab.data.datasets import load_split, normalization, recorded_dataset

    spec = recorded_dataset(meta)
    images, labels = load_split(spec.name, split == "train", data_dir, limit)
    mean, std = normalization(meta)
    loader = Loader(images, labels, batch_size, mean=mean, std=std, device=device)
    log_probs = predict(model.to(device), loader, recorded_outputs(meta))
    return summarize_predictions(log_probs, labels)


def evaluate_onnx(
    path,
    split: str = "test",
    data_dir=None,
    batch_size: int = 1000,
    threads: int | None = None,
    limit: int | None = None,
) -> dict:
    """evaluate_model's metrics for an exported ONNX file, run by ONNX Runtime on the split of
    the dataset its metadata records, with its classes."""
    from mnistlab.data.datasets import get_spec, load_split
    from mnistlab.inference.onnxfile import OnnxModel

    model = OnnxModel(path, threads)
    spec = get_spec(model.meta.get("dataset") or "mnist")
    images, labels = load_split(spec.name, split == "train", data_dir, limit)
    log_probs = torch.from_numpy(
        model.log_probabilities(images.numpy().astype("float32") / 255, batch_size)
    )
    return {**summarize_predictions(log_probs, labels), "classes": list(spec.classes)}
