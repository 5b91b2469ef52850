"""`trainyard predict | generate | export`: use a trained network from a shell (README "Use a
trained model"). Registered on the main parser by trainyard/cli.py (`add_model_commands`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainyard.client import Client

EXTENSIONS = {"onnx": ".onnx", "torchscript": ".pt"}


def cmd_predict(args: argparse.Namespace, client: Client) -> int:
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    answer = client.predict(args.job_id, images=args.images, checkpoint=args.checkpoint)
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print(f"job {args.job_id}, checkpoint {answer['checkpoint']} (epoch {answer['epoch']})")
    width = max(len(p) for p in args.images)
    for path, prediction in zip(args.images, answer["predictions"]):
        probs = prediction["probabilities"]
        ranked = sorted(range(len(probs)), key=lambda i: -probs[i])[:3]
        runners = "  ".join(f"{i}: {probs[i]:.1%}" for i in ranked[1:])
        print(f"{path:<{width}}  {prediction['label']}  ({probs[prediction['label']]:.1%})"
              f"   then {runners}")
    return 0


def cmd_generate(args: argparse.Namespace, client: Client) -> int:
    answer = client.generate(args.job_id, args.prompt, max_tokens=args.max_tokens,
                             temperature=args.temperature, top_k=args.top_k, seed=args.seed,
                             checkpoint=args.checkpoint)
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print(answer["text"])
    if answer["unknown"]:
        what = "dropped" if answer["tokenizer"] == "char" else "read as <unk>"
        print(f"(not in the model's vocabulary, {what}: {' '.join(answer['unknown'])})",
              file=sys.stderr)
    print(f"(checkpoint {answer['checkpoint']}, epoch {answer['epoch']}, seed {answer['seed']})",
          file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace, client: Client) -> int:
    out = args.output or f"trainyard-job{args.job_id}{EXTENSIONS[args.format]}"
    path = client.export(args.job_id, out, format=args.format, checkpoint=args.checkpoint)
    print(f"wrote {path} ({path.stat().st_size:,} bytes, {args.format})")
    return 0


def add_model_commands(sub: argparse._SubParsersAction, run) -> None:
    """`run(func)` wraps a command that takes (args, client) into one that takes
    (args, settings)."""
    p = sub.add_parser("predict", help="classify image files with an MLP or CNN job")
    p.add_argument("job_id", type=int)
    p.add_argument("images", nargs="+", help="PNG or JPEG files, any size")
    p.add_argument("--checkpoint", type=int, help="a checkpoint id; default: the job's best")
    p.add_argument("--json", action="store_true", help="the whole answer as JSON")
    p.set_defaults(func=run(cmd_predict))

    p = sub.add_parser("generate", help="continue a prompt with an RNN-LM job")
    p.add_argument("job_id", type=int)
    p.add_argument("prompt", nargs="?", default="")
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int)
    p.add_argument("--seed", type=int, help="the same seed gives the same text")
    p.add_argument("--checkpoint", type=int, help="a checkpoint id; default: the job's best")
    p.add_argument("--json", action="store_true", help="the whole answer as JSON")
    p.set_defaults(func=run(cmd_generate))

    p = sub.add_parser("export", help="download a job's network as ONNX or TorchScript")
    p.add_argument("job_id", type=int)
    p.add_argument("--format", choices=tuple(EXTENSIONS), default="onnx")
    p.add_argument("-o", "--output", help="file to write; default: trainyard-job<ID>.onnx|.pt")
    p.add_argument("--checkpoint", type=int, help="a checkpoint id; default: the job's best")
    p.set_defaults(func=run(cmd_export))
