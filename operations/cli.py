"""`loom`: one front door to the operator commands.

    loom <command> [flags...]        loom <command> --help

Each command is a module with a `main(argv)`; this file only names them, so `loom --help` stays fast
and imports nothing heavy (torch loads only when a command that needs it runs). SageMaker itself still
runs the `train` and `serve` programs from the images' PATH.
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

# name -> (module with main(argv), one line of help). Later commands add one line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "synthetic": ("training.synthetic", "write a synthetic catalog in the Kaggle layout"),
    "prepare": ("training.prepare", "catalog -> VQA train/validation files, attribute schema, report"),
    "tiny-base": ("training.tiny_base", "build the tiny demo BLIP-2 base from a catalog (a stand-in)"),
    "train": ("training.train", "the SageMaker `train` program, run locally with --sm-root DIR"),
    "report": ("training.report", "the HTML evaluation report of a model artifact (and a CLIP baseline)"),
    "stage-base": ("operations.stage_base", "stage a bf16 copy of a base model in S3 for the base_model channel"),
    "launch": ("operations.launch", "start a SageMaker training job and wait for model.tar.gz"),
    "batch": ("operations.batch_transform", "Batch Transform a catalog: attributes, CLIP embeddings or CLIP tags"),
    "preflight": ("operations.preflight", "check the AWS account before serving: Bedrock model, access, quotas"),
    "tiny-clip": ("training.search.clip_model", "build and train the tiny demo CLIP from a catalog (a stand-in)"),
    "clip-artifact": ("training.search.clip_artifact", "turn a real CLIP checkpoint (id, folder or s3://) into an artifact"),
    "index": ("operations.index", "build, add to or remove from a search index bundle"),
    "search-demo": ("operations.search_demo", "product search offline: tiny CLIP, index, queries and a search page"),
    "demo": ("operations.demo", "the whole flow offline on a synthetic catalog"),
    "async": ("operations.async_inference", "submit a catalog shard to an asynchronous endpoint, collect results"),
    "rollout": ("operations.rollout", "roll a new model, image or instance type out to the endpoint, keeping its capacity"),
}


def usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [__doc__.strip().splitlines()[0], "", "usage: loom <command> [flags...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`loom <command> --help` lists the flags of one command."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"loom: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    sys.argv = [f"loom {name}", *rest]  # argparse shows `loom <command>` in usage lines
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
