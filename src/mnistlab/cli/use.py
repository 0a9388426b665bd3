"""`mnistlab predict`, `export` and `serve`: a trained model put to use."""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from mnistlab.cli.common import Command, add_checkpoint, add_device, add_threads, int_in
from mnistlab.errors import MnistlabError


def add_commands(sub, command: Command) -> None:
    p = command(sub, "predict", "predict digits in image files")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    add_checkpoint(p)
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument(
        "--show-preprocessed",
        default=None,
        metavar="DIR",
        help="also write each model input as DIR/<name>.png (default: none)",
    )
    p.add_argument("--no-preprocess", action="store_true", help="feed 28x28 images as they are")
    add_threads(p)
    add_device(p)
    p.set_defaults(handler=predict)

    p = command(sub, "export", "export a model to ONNX or TorchScript")
    add_checkpoint(p)
    p.add_argument(
        "--format", required=True, choices=["onnx", "torchscript"], help="file format (required)"
    )
    p.add_argument("--out", required=True, help="file to write (required)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="ONNX only: quantize to int8, calibrated on 2,000 training images (default: fp32)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="data root for --int8's calibration images (default: "
        "$MNISTLAB_DATA or ~/.cache/mnistlab)",
    )
    p.set_defaults(handler=export)

    p = sub.add_parser("serve", help="a local web page: draw a digit, watch the model answer")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--checkpoint", default=None, help="run dir or weights (default: shipped model)")
    p.add_argument(
        "--workers",
        type=int_in(1, 64),
        default=None,
        help="server processes, each with the model loaded (default: 2, or 1 on one core)",
    )
    p.add_argument(
        "--threads",
        type=int_in(1, 64),
        default=1,
        help="requests each process classifies at once (default 1: a core per process)",
    )
    p.set_defaults(handler=serve)


def predict(args: argparse.Namespace) -> int:
    """Exit status 1 when any file failed, 0 otherwise.

    Previews are written after the predictions are printed, so a folder that cannot take
    them costs no prediction (only its own error line and exit status 1).
    """
    from mnistlab.inference.classify import predict_onnx, save_previews
    from mnistlab.inference.onnxfile import is_onnx_file

    preprocess = False if args.no_preprocess else None  # None: where the dataset wants it
    if is_onnx_file(args.checkpoint):
        # ONNX Runtime alone: a deployment with neither torch nor the training code.
        if args.device not in (None, "cpu"):
            raise MnistlabError(f"--device {args.device}: an ONNX file runs on the CPU here")
        named = [(str(f), Path(f)) for f in args.images]  # as predict_files names them
        results = predict_onnx(
            named, args.checkpoint, preprocess_image=preprocess, threads=args.threads
        )
    else:
        import mnistlab.api as api

        results = api.predict(
            args.images,
            args.checkpoint or api.FINAL,
            preprocess=preprocess,
            errors="keep",  # a file that cannot be used is one error line; the rest go on
            device=args.device,
            threads=args.threads,
        )
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        for result in results:
            if result.error is None:
                print(result.line())
            else:
                print(f"mnistlab: error: {result.error}", file=sys.stderr)
    sys.stdout.flush()
    if args.show_preprocessed is not None:
        save_previews(Path(args.show_preprocessed), results)
    return 1 if any(r.error is not None for r in results) else 0


def export(args: argparse.Namespace) -> int:
    import mnistlab.api as api
    from mnistlab.inference.exporters import exported_outputs

    path = api.export(
        args.checkpoint or api.FINAL, args.out, args.format, int8=args.int8, data_dir=args.data_dir
    )
    outputs = exported_outputs(path, args.format)
    kind = "logits" if outputs == "logits" else "log-probabilities"
    shown = f"{args.format}{', int8' if args.int8 else ''}"
    print(f"wrote {args.out} ({shown}, {path.stat().st_size:,} bytes)")
    print("  input:  float32 [N, 1, 28, 28], white ink on black, normalised with the mean and")
    print("          std in the file's metadata: (pixel / 255 - mean) / std")
    print(f"  output: float32 [N, 10], {kind} of the classes ({outputs!r}; softmax gives")
    print("          the probabilities)")
    return 0


def serve(args: argparse.Namespace) -> int:
    """Load the model, then serve until interrupted.

    One worker serves from this process. More run as uvicorn worker processes sharing the
    port, each loading the model itself (`web.app.worker_app`); one that cannot load it
    writes why to a file this process reports, as one error line, after uvicorn stops.
    """
    try:
        import uvicorn
    except ImportError:
        raise MnistlabError(
            "the web server is not installed; run: pip install 'mnistlab[web]'"
        ) from None
    from mnistlab.inference.classify import checkpoint_path
    from mnistlab.web import app as web

    if not 0 < args.port < 65536:
        raise MnistlabError(f"--port {args.port}: must be between 1 and 65535")
    web.check_port(args.host, args.port)
    workers = args.workers or min(2, os.cpu_count() or 1)
    if workers == 1:
        web.one_torch_thread()
        app = web.create_app(web.Classifier(args.checkpoint), threads=args.threads)
    else:
        # A missing file is told now, before any worker starts; this process stays free of
        # torch (the workers load the model), so a damaged file is told by a worker.
        if not checkpoint_path(args.checkpoint).exists():
            raise MnistlabError(
                f"--checkpoint {args.checkpoint}: no such run directory or weights file"
            )
    if not web.is_loopback(args.host):
        print(
            f"mnistlab: warning: serving on {args.host}, not loopback: anyone who can reach "
            "this machine on that address can use the page and the API",
            file=sys.stderr,
        )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    processes = "" if workers == 1 else f", {workers} processes"
    print(f"mnistlab: serving on http://{shown}:{args.port}/{processes} (Ctrl-C stops)", flush=True)
    if workers == 1:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        return 0
    with tempfile.TemporaryDirectory(prefix="mnistlab-serve-") as folder:
        failure = Path(folder) / "failure"
        settings = {"checkpoint": args.checkpoint, "threads": args.threads, "failure": str(failure)}
        os.environ[web.SETTINGS_ENV] = json.dumps(settings)
        try:
            uvicorn.run(
                "mnistlab.web.app:worker_app",
                factory=True,
                workers=workers,
                host=args.host,
                port=args.port,
                log_level="warning",
            )
        finally:
            os.environ.pop(web.SETTINGS_ENV, None)
        if failure.is_file():
            raise MnistlabError(failure.read_text())
    return 0
