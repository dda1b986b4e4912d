"""`loom`: one front door to the operator commands.

    loom <command> [flags...]        loom <command> --help

Each command is a module with a `main(argv)`; this file only names them, so `loom --help` stays fast
and imports nothing heavy (torch loads only when a command that needs it runs). SageMaker itself still
runs the `train` and `serve` programs from the images' PATH.

This is also the one place where a user's mistake becomes one line instead of a traceback:
`loom <command>: error: <what to fix>` and exit status 2 (argparse's own convention for bad usage). A
failure that is not the user's (a bug) keeps its traceback and exits 1, so it can be reported.
"""

from __future__ import annotations

import importlib
import signal
import sys
import traceback
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
    "search-eval": ("training.search.search_eval", "measure search on an index bundle: text and photo R-precision"),
    "search-demo": ("operations.search_demo", "product search offline: tiny CLIP, index, queries and a search page"),
    "demo": ("operations.demo", "the whole flow offline on a synthetic catalog"),
    "async": ("operations.async_inference", "submit a catalog shard to an asynchronous endpoint, collect results"),
    "rollout": ("operations.rollout", "roll a new model, image or instance type out to the endpoint, keeping its capacity"),
}


def usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [__doc__.strip().splitlines()[0], "", "usage: loom <command> [flags...]    loom --version", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`loom <command> --help` lists the flags of one command."]
    return "\n".join(lines)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("loom")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


# Errors that mean "the input was wrong", by class name, so that this file imports nothing heavy: the
# project's own (config, data, catalog, schema, job config, image, HTTP-status and gate errors), file and
# value errors, and botocore's configuration errors (no Region, no credentials, unknown profile) and
# service refusals (ClientError carries AWS's own message).
USER_ERRORS = {
    "ConfigError", "DataError", "CatalogError", "SchemaError", "JobConfigError", "ImageError", "StatusError",
    "RequestError", "ApiError", "ArtifactError", "QualityGateFailed", "PreflightError", "RolloutError",
    "OSError", "FileNotFoundError", "NotADirectoryError", "IsADirectoryError", "FileExistsError", "PermissionError",
    "ValueError", "UnicodeDecodeError", "KeyboardInterrupt", "ModuleNotFoundError",
    "NoRegionError", "NoCredentialsError", "PartialCredentialsError", "ProfileNotFound", "ClientError",
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ParamValidationError",
    "NoSuchEntity", "ExpiredTokenException", "TokenRetrievalError", "SSOTokenLoadError",
}


# Subclasses of a user error that are bugs all the same (text a program built, not text the user typed).
BUG_ERRORS = {"UnicodeEncodeError", "UnicodeTranslateError", "KeyError", "IndexError"}


def is_user_error(exc: BaseException) -> bool:
    names = [cls.__name__ for cls in type(exc).__mro__]
    return names[0] not in BUG_ERRORS and any(name in USER_ERRORS for name in names)


def error_line(command: str, exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return f"loom {command}: interrupted"
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return (f"loom {command}: error: this command needs {exc.name.split('.')[0]}, which is not installed here; "
                f"install the extra that brings it (pip install '.[dev]', or '.[train]' / '.[search]', see README)")
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)) \
            and exc.filename and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}"
    return f"loom {command}: error: {' '.join(text.split())}"


def run_command(name: str, rest: list[str]) -> int:
    """Run one command; a user's mistake becomes one line on stderr and exit 2."""
    try:
        module = importlib.import_module(COMMANDS[name][0])
        sys.argv = [f"loom {name}", *rest]  # argparse shows `loom <command>` in usage lines
        return int(module.main(rest) or 0)
    except SystemExit as exc:  # argparse (exit 2 with its own message) or raise SystemExit("message")
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(f"loom {name}: error: {exc.code}", file=sys.stderr)
        return 2
    except BaseException as exc:  # noqa: BLE001 - sorted below: the user's mistakes vs bugs
        if not is_user_error(exc):
            traceback.print_exc()
            print(f"loom {name}: internal error (a bug, please report it with the traceback above)", file=sys.stderr)
            return 1
        print(error_line(name, exc), file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 2


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and hasattr(signal, "SIGPIPE"):
        # `loom ... | head`: end quietly when the reader goes away, as other command-line tools do.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version", "version"):
        print(f"loom {version()}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"loom: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return run_command(name, rest)


if __name__ == "__main__":
    sys.exit(main())
