"""`loom stage-base`: put a bf16 copy of a BLIP-2 base model in S3, for the training job's `base_model` channel.

    loom stage-base --base-model Salesforce/blip2-flan-t5-xl --s3-uri s3://BUCKET/data/base-models/blip2-flan-t5-xl/
        [--dtype bf16|fp32] [--work DIR] [--region REGION] [--profile NAME]

Without it every training job downloads the hub's fp32 weights (15.8 GB for flan-t5-xl) again, after every
spot restart too, and a job with `EnableNetworkIsolation` cannot reach the hub at all. Staged once, the
copy (7.9 GB in bf16) comes in as the `base_model` channel: SageMaker reads channels from S3 at start and
again on a spot restart, from inside the network isolation. The `train` program then loads it offline.

The last line printed is the S3 prefix to pass as the channel (`loom launch --base-model URI`); record the
model's id with the hyperparameter `base_model=<id>` so that the artifact's manifest names it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from loom.errors import command_error
from operations import sagemaker_jobs as jobs

DTYPES = ("bf16", "fp32")


def stage_locally(base_model: str, out: str | Path, dtype: str = "bf16") -> dict[str, Any]:
    """save_pretrained of the base model (in `dtype`) and its processor into `out`; what was written."""
    import torch
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    from runtime.predictor import check_image_token_setup

    out = Path(out)
    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    processor = Blip2Processor.from_pretrained(base_model)
    model = Blip2ForConditionalGeneration.from_pretrained(base_model, dtype=torch_dtype)
    check_image_token_setup(model, processor)  # a base that would ignore its images is not worth staging
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    files = sorted(p for p in out.iterdir() if p.is_file())
    return {"base_model": base_model, "dtype": dtype, "parameters": sum(p.numel() for p in model.parameters()),
            "bytes": sum(p.stat().st_size for p in files), "files": [p.name for p in files]}


def stage(base_model: str, s3_uri: str, s3: Any, *, dtype: str = "bf16", work: str | Path | None = None
          ) -> dict[str, Any]:
    """Stage the base model under `s3_uri` (a prefix); the summary, with the channel's S3 URI."""
    prefix = jobs.as_prefix(s3_uri)
    jobs.parse_s3_uri(prefix)
    with tempfile.TemporaryDirectory(dir=work) as folder:
        info = stage_locally(base_model, folder, dtype)
        report = jobs.upload_folder(s3, folder, prefix)
    return {**info, "uploaded": len(report.uploaded), "already_there": len(report.skipped), "s3_uri": prefix}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loom stage-base", description=__doc__.splitlines()[0])
    parser.add_argument("--base-model", required=True, help="hub id or folder of a BLIP-2 (Flan-T5) model")
    parser.add_argument("--s3-uri", required=True, help="S3 prefix to write the copy under")
    parser.add_argument("--dtype", choices=DTYPES, default="bf16",
                        help="weights' precision (default bf16: what training and serving load on GPUs)")
    parser.add_argument("--work", type=Path, help="local scratch folder (default: the system's temp folder)")
    parser.add_argument("--region")
    parser.add_argument("--profile")
    args = parser.parse_args(argv)
    try:
        s3 = jobs.aws_client("s3", region=args.region, profile=args.profile)
        summary = stage(args.base_model, args.s3_uri, s3, dtype=args.dtype, work=args.work)
    except (jobs.JobConfigError, OSError, ValueError) as exc:
        return command_error(str(exc))
    print(json.dumps({k: v for k, v in summary.items() if k != "files"}, default=str))
    print(f"channel base_model: {summary['s3_uri']}  (hyperparameter base_model={args.base_model})")
    print(summary["s3_uri"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
