"""`mnistlab predict`, `export` and `serve`: a trained model put to use."""

import argparse
import json
import sys
from pathlib import Path

from mnistlab.cli.common import Command, add_checkpoint, add_device, add_threads
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
    p.set_defaults(handler=export)

    p = sub.add_parser("serve", help="a local web page: draw a digit, watch the model answer")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--checkpoint", default=None, help="run dir or weights (default: shipped model)")
    p.set_defaults(handler=serve)


def predict(args: argparse.Namespace) -> int:
    """Exit status 1 when any file failed, 0 otherwise.

    Previews are written after the predictions are printed, so a folder that cannot take
    them costs no prediction (only its own error line and exit status 1).
    """
    import mnistlab.api as api
    from mnistlab.inference.classify import save_previews

    results = api.predict(
        args.images,
        args.checkpoint or api.FINAL,
        preprocess=False if args.no_preprocess else None,  # None: where the dataset wants it
        errors="keep",  # a file that cannot be used is one error line; the rest are predicted
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

    path = api.export(args.checkpoint or api.FINAL, args.out, args.format)
    outputs = exported_outputs(path, args.format)
    kind = "logits" if outputs == "logits" else "log-probabilities"
    print(f"wrote {args.out} ({args.format}, {path.stat().st_size:,} bytes)")
    print("  input:  float32 [N, 1, 28, 28], white ink on black, normalised with the mean and")
    print("          std in the file's metadata: (pixel / 255 - mean) / std")
    print(f"  output: float32 [N, 10], {kind} of the classes ({outputs!r}; softmax gives")
    print("          the probabilities)")
    return 0


def serve(args: argparse.Namespace) -> int:
    """Load the model, then serve until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise MnistlabError(
            "the web server is not installed; run: pip install 'mnistlab[web]'"
        ) from None
    from mnistlab.web.app import Classifier, check_port, create_app, is_loopback

    if not 0 < args.port < 65536:
        raise MnistlabError(f"--port {args.port}: must be between 1 and 65535")
    check_port(args.host, args.port)
    app = create_app(Classifier(args.checkpoint))
    if not is_loopback(args.host):
        print(
            f"mnistlab: warning: serving on {args.host}, not loopback: anyone who can reach "
            "this machine on that address can use the page and the API",
            file=sys.stderr,
        )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"mnistlab: serving on http://{shown}:{args.port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
