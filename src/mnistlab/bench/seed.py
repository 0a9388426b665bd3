"""`mnistlab bench`: this trainer against a faithful copy of the seed notebook's loop.

Both train the same model (same initial weights) at the same batch size, threads and device.
They run interleaved, round by round, so a busy machine slows both alike; the ratio of their
seconds per epoch is the result.
"""

import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from mnistlab.config import Config
from mnistlab.data.datasets import Loader, get_spec, load_split
from mnistlab.models import build
from mnistlab.training.trainer import Parts, setup, train_epoch


class NotebookMNIST(torch.utils.data.Dataset):
    """What torchvision's MNIST + ToTensor + Normalize does per sample: PIL image -> tensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float):
        self.images, self.labels, self.mean, self.std = images, labels, mean, std

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        img = Image.fromarray(self.images[index].numpy(), mode="L")
        x = torch.from_numpy(np.array(img, dtype=np.uint8)).float().div(255).unsqueeze(0)
        return (x - self.mean) / self.std, int(self.labels[index])


def notebook_loop(model, loader, optimizer, device, max_batches: int) -> int:
    """The notebook's train(): a tqdm bar, and a second forward per batch just to count."""
    model.train()
    pbar = tqdm(loader, total=max_batches, disable=True)
    correct = processed = 0
    for batch_idx, (data, target) in enumerate(pbar):
        if batch_idx == max_batches:
            break
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        loss = F.nll_loss(model(data), target)
        loss.backward()
        optimizer.step()
        pred = model(data).argmax(dim=1, keepdim=True)
        correct += pred.eq(target.view_as(pred)).sum().item()
        processed += len(data)
        pbar.set_description(
            f"Loss={loss.item()} batch_id={batch_idx} Accuracy={100 * correct / processed:0.2f}%"
        )
    return processed


def bench(
    model_name: str,
    batches: int,
    rounds: int,
    batch_size: int,
    device,
    data_dir=None,
    compile: bool = False,
    others: tuple[str, ...] = (),
    bf16: bool = False,
) -> dict:
    """Seconds per epoch of each loop, timed in interleaved rounds; `others` are further models
    trained by the same trainer (compiled with `compile`) in the same rounds; `bf16` adds the
    trainer under bf16 autocast."""
    device = torch.device(device)
    spec = get_spec("mnist")
    images, labels = load_split("mnist", train=True, root=data_dir)
    torch.manual_seed(0)
    notebook_model = build(model_name).to(device)
    notebook_opt = torch.optim.SGD(notebook_model.parameters(), lr=0.01, momentum=0.9)
    notebook_data = torch.utils.data.DataLoader(
        NotebookMNIST(images, labels, spec.mean, spec.std), batch_size=batch_size, shuffle=True
    )
    config = Config(model=model_name, batch_size=batch_size, seed=0)

    def trainer(cfg: Config, compiled: bool, half: bool = False) -> tuple[Parts, Loader]:
        loader = Loader(
            images,
            labels,
            batch_size,
            shuffle=True,
            seed=0,
            mean=spec.mean,
            std=spec.std,
            device=device,
            channels_last=cfg.channels_last,
        )
        return setup(cfg, device, len(loader), compiled, half), loader

    variants = {
        "trainer": trainer(config, False),
        "trainer, no channels_last": trainer(
            dataclasses.replace(config, channels_last=False), False
        ),
    }
    if bf16:
        # bf16 autocast: oneDNN's bf16 convolutions where the CPU has AVX512-BF16 or AMX.
        variants["trainer, bf16"] = trainer(config, False, half=True)
    if compile:
        variants["trainer, compiled"] = trainer(config, True)
        # The compiled models share one forward (Chain's), each with a graph of its own;
        # past dynamo's recompile limit (8) the rest would quietly run uncompiled.
        limit = torch._dynamo.config.recompile_limit
        torch._dynamo.config.recompile_limit = max(limit, 2 + len(others))
    for name in others:
        label = f"trainer{', compiled' if compile else ''}: {name}"
        variants[label] = trainer(dataclasses.replace(config, model=name), compile)
    # Untimed warm-up: the first batches pay for kernel selection, (on CUDA) handles and
    # (compiled) the compilation.
    notebook_loop(notebook_model, notebook_data, notebook_opt, device, 2)
    for parts, loader in variants.values():
        train_epoch(parts, loader, 0, max_batches=2)
    seconds = {"notebook loop": 0.0, **{name: 0.0 for name in variants}}
    for r in tqdm(range(rounds), desc="bench rounds"):
        started = time.perf_counter()
        notebook_loop(notebook_model, notebook_data, notebook_opt, device, batches)
        seconds["notebook loop"] += time.perf_counter() - started
        for name, (parts, loader) in variants.items():
            started = time.perf_counter()
            train_epoch(parts, loader, r + 1, max_batches=batches)
            seconds[name] += time.perf_counter() - started
    images_timed = rounds * batches * batch_size
    rows = {}
    for name, s in seconds.items():
        ips = images_timed / s
        rows[name] = {
            "images_per_s": round(ips, 1),
            "seconds_per_epoch": round(len(images) / ips, 1),
        }
    base = rows["notebook loop"]["seconds_per_epoch"]
    for row in rows.values():
        row["epoch_ratio"] = round(row["seconds_per_epoch"] / base, 3)
    return {
        "model": model_name,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch_size": batch_size,
        "batches_per_round": batches,
        "rounds": rounds,
        "results": rows,
    }


def format_bench(result: dict) -> str:
    width = max(28, *(len(name) + 2 for name in result["results"]))
    lines = [
        f"bench {result['model']}: batch {result['batch_size']}, {result['rounds']} interleaved "
        f"rounds of {result['batches_per_round']} batches, {result['device']}, "
        f"{result['threads']} threads, torch {result['torch']}",
        f"{'loop':<{width}}{'images/s':>10}{'s/epoch':>10}{'epoch vs notebook':>20}",
    ]
    for name, row in result["results"].items():
        lines.append(
            f"{name:<{width}}{row['images_per_s']:>10.1f}{row['seconds_per_epoch']:>10.1f}"
            f"{row['epoch_ratio']:>19.3f}x"
        )
    return "\n".join(lines)
