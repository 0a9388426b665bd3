"""`mnistlab bench --inference`: every backend, batch and thread count measured, sizes given."""

import json

import pytest

from mnistlab.bench import inference

pytest.importorskip("onnxruntime")


def test_bench_inference_measures_every_setting(tmp_path, data_dir, cli, monkeypatch) -> None:
    monkeypatch.setattr(inference, "SECONDS", 0.01)  # the numbers' size is not under test
    out = tmp_path / "inference.json"
    done = cli(
        "bench", "--inference", "--rounds", "1", "--data-dir", str(data_dir), "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    settings = {(r["backend"], r["batch"], r["threads"]) for r in result["images_per_s"]}
    assert len(settings) == 4 * 2 * 2 and all(r["median"] > 0 for r in result["images_per_s"])
    assert set(result["bytes"]) == {
        "model.pt (state dict)",
        "torchscript",
        "onnx fp32",
        "onnx int8",
    }
    assert result["bytes"]["onnx int8"] < result["bytes"]["onnx fp32"]
    table = out.with_suffix(".txt").read_text()
    for backend in inference.BACKENDS:
        assert f"| {backend} |" in table
