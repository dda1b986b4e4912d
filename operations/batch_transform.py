"""Attributes (or CLIP tags, or embeddings) for a whole catalog with SageMaker Batch Transform, with plain boto3.

    loom batch --catalog DIR|s3://bucket/prefix/ --model-name NAME --bucket BUCKET
        [--task attributes|tags] [--labels labels.json [--min-probability P]] [--prefix batch/]
        [--instance-type ml.g5.2xlarge] [--instance-count N] [--max-payload-mb 6]
        [--records-per-file 1000] [--max-concurrent-transforms N] [--article-types all|Shirts ...]
        [--attributes NAME ...] [--kms-key-arn ARN] [--tag key=value ...] [--job-name NAME] [--region R] [--profile P]
        [--wait --out results.csv|results.jsonl [--describe [--writer offline|bedrock] [--concurrency 4]]]
    loom batch --collect JOB_NAME --bucket BUCKET [--prefix batch/] --out FILE ...

The catalog's images are written as JSON Lines shards (one product per line, `{"id", "image"}`; with
`--task tags` also `"task": "tags"` and the optional `labels`) to s3://BUCKET/PREFIX/JOB/input/, one shard at a
time (memory stays flat). SageMaker hands whole input objects to the instances, so `--instance-count` is what
scales a large catalog out. With --wait the job's `<shard>.out` files are joined back to product ids (via
s3://BUCKET/PREFIX/JOB/manifest.json, which --collect also reads, task included) and written to --out.
Exit status: 0 done, 1 job Failed/Stopped (FailureReason printed), 2 bad arguments or AWS errors.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from loom.errors import command_error
from loom.schema import DEFAULT_PRODUCT_NOUN
from loom.calibration import check_min_precision
from operations import batch_records as records
from operations import sagemaker_jobs as jobs
from operations.batch_records import ProductImage
from operations.sagemaker_jobs import DEFAULT_INSTANCE_TYPE, JobConfigError

DEFAULT_PREFIX = "batch/"
DEFAULT_MAX_PAYLOAD_MB = 6
DEFAULT_RECORDS_PER_FILE = 1000
# One MultiRecord request may carry ~100 images of 60 KB; at 1-2 s an image that needs minutes, not 60 s.
INVOCATION_TIMEOUT_S = 900
INVOCATION_MAX_RETRIES = 1
CONTENT_TYPE = "application/jsonlines"
MANIFEST_NAME = "manifest.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


# ---------------------------------------------------------------------------------------------------
# Where the products come from


def local_products(catalog: str | Path, article_types: Sequence[str] | None = ()) -> Iterator[ProductImage]:
    """Products of a local catalog: a Kaggle-layout folder (styles.csv, images/) read with `read_catalog`
    (article_types () keeps the reader's default, None keeps every type), or a folder of `<id>.jpg` files."""
    root = Path(catalog)
    if (root / "styles.csv").is_file():
        from training.catalog import read_catalog

        kwargs: dict[str, Any] = {"attributes": None, "require_attributes": False}
        if article_types != ():
            kwargs["article_types"] = article_types
        reading = read_catalog(root, **kwargs)
        if reading.skipped_total:
            print(f"catalog: {reading.skipped_total} rows skipped "
                  f"({', '.join(f'{k} {v}' for k, v in reading.skipped.items() if v)})", file=sys.stderr)
        for product in reading.products:
            yield ProductImage(product.id, product.image_path.read_bytes, str(product.image_path))
        return
    folder = root / "images" if (root / "images").is_dir() else root
    if not folder.is_dir():
        raise JobConfigError(f"{root} is neither a catalog folder nor a folder of <id>.jpg images")
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            yield ProductImage(path.stem, path.read_bytes, str(path))


def with_facts(products: Iterable[ProductImage], known: Mapping[str, Mapping[str, str]],
               min_precision: float | None) -> Iterator[ProductImage]:
    """The products with their merchant facts (by id) and the precision target attached to their records."""
    if min_precision is not None:
        check_min_precision(min_precision)
    for product in products:
        facts: dict[str, Any] = {"known_attributes": dict(known.get(product.id, {})), "min_precision": min_precision}
        yield ProductImage(product.id, product.read, product.where, facts)


def s3_products(s3: Any, catalog_uri: str) -> Iterator[ProductImage]:
    """Products of a catalog in S3: every `<id>.jpg` under the prefix (its images/ folder when it has one)."""
    bucket, prefix = jobs.parse_s3_uri(jobs.as_prefix(catalog_uri))
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "images/", MaxKeys=1)
    if listed.get("KeyCount", 0):
        prefix += "images/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            name = key.rsplit("/", 1)[-1]
            stem, dot, suffix = name.rpartition(".")
            if dot and f".{suffix.lower()}" in IMAGE_SUFFIXES and "/" not in key[len(prefix):]:
                yield ProductImage(stem, _s3_reader(s3, bucket, key), f"s3://{bucket}/{key}")


def _s3_reader(s3: Any, bucket: str, key: str):
    def read() -> bytes:
        from botocore.exceptions import ClientError

        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            raise OSError(f"s3://{bucket}/{key}: {exc}") from exc

    return read


# ---------------------------------------------------------------------------------------------------
# The job


def job_locations(bucket: str, prefix: str, job_name: str) -> dict[str, str]:
    """The S3 URIs of a job's input shards, outputs and manifest: s3://BUCKET/PREFIX/JOB/{input/,output/,...}."""
    base = f"{prefix.strip('/')}/{job_name}" if prefix.strip("/") else job_name
    return {
        "input": jobs.s3_uri(bucket, f"{base}/input/"),
        "output": jobs.s3_uri(bucket, f"{base}/output/"),
        "manifest": jobs.s3_uri(bucket, f"{base}/{MANIFEST_NAME}"),
    }


def transform_job_request(
    *,
    job_name: str,
    model_name: str,
    input_uri: str,
    output_uri: str,
    instance_type: str = DEFAULT_INSTANCE_TYPE,
    instance_count: int = 1,
    max_payload_mb: int = DEFAULT_MAX_PAYLOAD_MB,
    max_concurrent_transforms: int | None = None,
    tags: Sequence[Mapping[str, str]] = (),
    kms_key_arn: str | None = None,
) -> dict[str, Any]:
    """The keyword arguments of `sagemaker.create_transform_job` (pure; validates the values).

    The S3 input is an S3Prefix of JSON Lines files; Batch Transform spreads whole objects over the
    instances (the transform API has no S3DataDistributionType: sharding by key is what it always does).
    """
    jobs.validate_job_name(job_name)
    records.max_record_bytes(max_payload_mb)
    if instance_count < 1:
        raise JobConfigError(f"instance count must be at least 1, got {instance_count}")
    request: dict[str, Any] = {
        "TransformJobName": job_name,
        "ModelName": model_name,
        "MaxPayloadInMB": max_payload_mb,
        "BatchStrategy": "MultiRecord",
        "ModelClientConfig": {
            "InvocationsTimeoutInSeconds": INVOCATION_TIMEOUT_S,
            "InvocationsMaxRetries": INVOCATION_MAX_RETRIES,
        },
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": jobs.as_prefix(input_uri)}},
            "ContentType": CONTENT_TYPE,
            "CompressionType": "None",
            "SplitType": "Line",
        },
        "TransformOutput": {"S3OutputPath": jobs.as_prefix(output_uri), "Accept": CONTENT_TYPE, "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": instance_type, "InstanceCount": instance_count},
        "Tags": [dict(t) for t in tags],
    }
    if max_concurrent_transforms:
        request["MaxConcurrentTransforms"] = max_concurrent_transforms
    if kms_key_arn:  # the bucket's customer-managed key (Terraform output kms_key_arn)
        request["TransformOutput"]["KmsKeyId"] = kms_key_arn
    if volume_key := jobs.volume_kms_key(instance_type, kms_key_arn):  # EBS-backed types only
        request["TransformResources"]["VolumeKmsKeyId"] = volume_key
    return request


def upload_shards(s3: Any, shards: Iterator[records.Shard], input_uri: str, total: int | None = None) -> int:
    """Upload each shard as it is completed, then delete the local file; returns how many were sent."""
    from tqdm import tqdm

    bucket, prefix = jobs.parse_s3_uri(jobs.as_prefix(input_uri))
    count = 0
    with tqdm(total=total, unit="shard", desc="input shards", file=sys.stderr, disable=None) as bar:
        for shard in shards:
            jobs.upload_files(s3, [(shard.path, prefix + shard.name)], bucket, progress=False)
            shard.path.unlink()
            count += 1
            bar.update(1)
    return count


def read_outputs(s3: Any, output_uri: str, shards: Mapping[str, Sequence[str]],
                 task: str = records.TASK_ATTRIBUTES) -> list[dict[str, Any]]:
    """Stream every `<shard>.out` of a finished job and join it to the shard's ids (input order)."""
    from botocore.exceptions import ClientError

    bucket, prefix = jobs.parse_s3_uri(jobs.as_prefix(output_uri))
    results: list[dict[str, Any]] = []
    for name, ids in shards.items():
        key = prefix + name + records.OUTPUT_SUFFIX
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError:
            results += [{"id": pid, "error": f"no output file s3://{bucket}/{key}"} for pid in ids]
            continue
        results += records.join_shard(list(ids), list(records.parse_output_lines(body.iter_lines())), task)
    return results


def put_manifest(s3: Any, uri: str, manifest: Mapping[str, Any]) -> None:
    bucket, key = jobs.parse_s3_uri(uri)
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest).encode("utf-8"), ContentType="application/json")


def get_manifest(s3: Any, uri: str) -> dict[str, Any]:
    from botocore.exceptions import ClientError

    bucket, key = jobs.parse_s3_uri(uri)
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        raise JobConfigError(f"no batch manifest at {uri}: {exc}") from None


# ---------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="loom batch", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog", help="a catalog folder, a folder of <id>.jpg, or an S3 prefix")
    p.add_argument("--collect", metavar="JOB_NAME", help="only join the outputs of an earlier job into --out")
    p.add_argument("--model-name", help="an existing SageMaker model (Terraform output model_name; for --task tags "
                   "the search module's CLIP model)")
    p.add_argument("--task", choices=records.TASKS,
                   help="attributes (default): the attribute model's answers, or a CLIP model's embeddings; "
                        "tags: a CLIP model's zero-shot tags, stated or withheld with the reason. --collect reads "
                        "the job's task from its manifest")
    p.add_argument("--labels", metavar="JSON",
                   help="--task tags: candidate values per attribute, a JSON file {\"Pattern\": [\"Striped\", ...]} "
                        "(default: the known values of the CLIP artifact's attribute schema, stated when their "
                        "probability passes its calibrated threshold)")
    p.add_argument("--min-probability", type=float,
                   help="--task tags with --labels: state a label when its probability reaches this (0..1]; "
                        "without it the endpoint withholds caller labels as not_calibrated")
    p.add_argument("--bucket", required=True, help="where the job's input shards and outputs go")
    p.add_argument("--prefix", default=DEFAULT_PREFIX)
    p.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE)
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--max-payload-mb", type=int, default=DEFAULT_MAX_PAYLOAD_MB)
    p.add_argument("--records-per-file", type=int, default=DEFAULT_RECORDS_PER_FILE)
    p.add_argument("--max-concurrent-transforms", type=int)
    p.add_argument("--article-types", nargs="+", help="local catalogs: types to keep ('all' for every type)")
    p.add_argument("--attributes", nargs="+", help="ask only these attributes (default: the model's)")
    p.add_argument("--known-attributes", metavar="CSV",
                   help="merchant facts: a CSV with an id column and one column per attribute; stated as given, "
                        "and the model's confident disagreements are listed as conflicts")
    p.add_argument("--min-precision", type=float, help="precision target for stated attributes (0.5..1)")
    p.add_argument("--kms-key-arn", help="KMS key for the outputs (Terraform kms_key_arn); also for the EBS volumes of "
                   "instance types without local NVMe storage (ml.g5 and *d types encrypt theirs in hardware)")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--job-name", help="default loom-batch-YYYYmmdd-HHMMSS (UTC)")
    p.add_argument("--wait", action="store_true", help="wait for the job, then join its outputs into --out")
    p.add_argument("--out", help="results file: .csv (a column per attribute) or .jsonl")
    p.add_argument("--describe", action="store_true", help="also write a description per product")
    p.add_argument("--writer", choices=("offline", "bedrock"), default="bedrock")
    p.add_argument("--bedrock-model-id")
    p.add_argument("--language", default="en")
    p.add_argument("--product-type", default=DEFAULT_PRODUCT_NOUN)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--region")
    p.add_argument("--profile")
    args = p.parse_args(argv)
    if not args.collect and not (args.catalog and args.model_name):
        p.error("give --catalog and --model-name (or --collect JOB_NAME)")
    if (args.wait or args.collect) and not args.out:
        p.error("--wait and --collect need --out")
    if args.task == records.TASK_TAGS:
        # Merchant facts, precision targets and descriptions belong to the attribute model's answers.
        refused = [flag for flag, value in (("--known-attributes", args.known_attributes),
                                            ("--min-precision", args.min_precision), ("--describe", args.describe))
                   if value]
        if refused:
            p.error(f"--task tags does not take {', '.join(refused)}: those are for the attribute model")
    elif args.labels or args.min_probability is not None:
        p.error("--labels and --min-probability are for --task tags")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3 = jobs.aws_client("s3", region=args.region, profile=args.profile)
        if args.collect:
            job_name = jobs.validate_job_name(args.collect)
            return _collect(s3, args, job_locations(args.bucket, args.prefix, job_name))
        task = args.task or records.TASK_ATTRIBUTES
        fields = records.tag_fields(records.read_labels(args.labels) if args.labels else None,
                                    args.min_probability, args.attributes) if task == records.TASK_TAGS else None
        job_name = jobs.validate_job_name(args.job_name) if args.job_name else jobs.default_job_name("batch")
        where = job_locations(args.bucket, args.prefix, job_name)
        request = transform_job_request(
            job_name=job_name, model_name=args.model_name, input_uri=where["input"], output_uri=where["output"],
            instance_type=args.instance_type, instance_count=args.instance_count,
            max_payload_mb=args.max_payload_mb, max_concurrent_transforms=args.max_concurrent_transforms,
            tags=jobs.parse_tags(args.tag), kms_key_arn=args.kms_key_arn,
        )
        sagemaker = jobs.aws_client("sagemaker", region=args.region, profile=args.profile)
        if args.catalog.startswith("s3://"):
            products = s3_products(s3, args.catalog)
        else:
            types = () if not args.article_types else (None if args.article_types == ["all"] else args.article_types)
            products = local_products(args.catalog, types)
        products = with_facts(products, records.read_known_attributes(args.known_attributes)
                              if args.known_attributes else {}, args.min_precision)
        report = records.ShardingReport()
        with tempfile.TemporaryDirectory(prefix="loom-batch-") as tmp:
            shards = records.write_shards(products, tmp, records_per_file=args.records_per_file,
                                          max_payload_mb=args.max_payload_mb, attributes=args.attributes,
                                          fields=fields, report=report)
            upload_shards(s3, shards, where["input"])
        _print_skipped(report.skipped)
        if not report.records:
            raise JobConfigError(f"no product of {args.catalog} could be sent; nothing to transform")
        put_manifest(s3, where["manifest"], {"job_name": job_name, "task": task, "shards": report.shards,
                                             "skipped": report.skipped})
        sagemaker.create_transform_job(**request)
    except (JobConfigError, ValueError, OSError) as exc:
        return command_error(str(exc))
    except (ClientError, BotoCoreError) as exc:
        return command_error(f"AWS refused the request: {exc}")
    print(f"started transform job {job_name}: {report.records} products in {len(report.shards)} files "
          f"on {args.instance_count} x {args.instance_type}; outputs under {where['output']}")
    if not args.wait:
        print(f"join the outputs later with: loom batch --collect {job_name} "
              f"--bucket {args.bucket} --prefix {args.prefix} --out results.csv")
        return 0
    try:
        job = jobs.wait_for_job(lambda: sagemaker.describe_transform_job(TransformJobName=job_name), jobs.TRANSFORM_JOB)
        if job["TransformJobStatus"] != "Completed":
            return command_error(f"{jobs.failure_message(job, jobs.TRANSFORM_JOB, job_name)}", 1)
        return _collect(s3, args, where, {"task": task, "shards": report.shards, "skipped": report.skipped})
    except (ClientError, BotoCoreError) as exc:
        return command_error(f"AWS: {exc}")


def _collect(s3: Any, args: argparse.Namespace, where: Mapping[str, str],
             manifest: Mapping[str, Any] | None = None) -> int:
    manifest = manifest or get_manifest(s3, where["manifest"])
    task = manifest.get("task", records.TASK_ATTRIBUTES)  # manifests written before tags have no task
    if args.task and args.task != task:
        raise JobConfigError(f"--task {args.task}: job {manifest.get('job_name', '?')} ran task {task}")
    results = read_outputs(s3, where["output"], manifest["shards"], task)
    if task == records.TASK_TAGS:
        return _report_tags(results, args, manifest)
    if args.describe:
        from operations.batch_describe import describe_results, make_writer

        writer = make_writer(args.writer, args.bedrock_model_id, region=args.region)
        stats = describe_results(results, writer, concurrency=args.concurrency,
                                 product_type=args.product_type, language=args.language)
        print(f"descriptions: {stats['described']} written, {stats['failed']} failed, "
              f"{stats['products_per_second']:.2f} products/s with {args.concurrency} threads")
    records.write_results(results, args.out, args.attributes)
    counts = records.summarise(results)
    print(f"{counts['answered']} products answered, {counts['errors']} errors, "
          f"{len(manifest.get('skipped', []))} skipped before the job; results in {args.out}")
    conflicts = records.summarise_conflicts(results)
    if conflicts:
        print(f"conflicts with merchant values: {', '.join(f'{name} {n}' for name, n in conflicts.items())} "
              f"(products listed in the results' conflicts column)")
    _print_errors(results)
    return 0


def _report_tags(results: list[dict[str, Any]], args: argparse.Namespace, manifest: Mapping[str, Any]) -> int:
    records.write_results(results, args.out, args.attributes, records.TASK_TAGS)
    counts, tags = records.summarise(results), records.summarise_tags(results)
    print(f"{counts['answered']} products tagged, {counts['errors']} errors, "
          f"{len(manifest.get('skipped', []))} skipped before the job; results in {args.out}")
    print("stated: " + (", ".join(f"{name} {n}" for name, n in tags["stated"].items()) or "nothing"))
    if tags["withheld"]:
        print("withheld: " + ", ".join(f"{name} {n}" for name, n in tags["withheld"].items()))
    _print_errors(results)
    return 0


def _print_errors(results: Sequence[Mapping[str, Any]]) -> None:
    for row in [r for r in results if "error" in r][:10]:
        print(f"  {row['id']}: {row['error']}", file=sys.stderr)


def _print_skipped(skipped: Sequence[Mapping[str, str]]) -> None:
    if skipped:
        print(f"{len(skipped)} products skipped:", file=sys.stderr)
        for item in skipped[:10]:
            print(f"  {item['id']}: {item['reason']}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
