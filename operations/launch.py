"""Start a SageMaker training job for the Loom training image, with plain boto3.

    loom launch --image-uri URI --role-arn ARN --bucket BUCKET
        [--upload-data PREPARED_DIR] [--upload-images IMAGES_DIR]
        [--train s3://...] [--validation s3://...] [--images s3://...] [--base-model s3://...] [--clip-artifact s3://...]
        [--output s3://...] [--hyperparameters FILE.json] [--hp key=value ...]
        [--instance-type ml.g5.2xlarge] [--volume-gb 100] [--max-run-hours 24]
        [--spot [--max-wait-hours 36] [--checkpoint-s3 s3://...]]
        [--kms-key-arn ARN] [--tag key=value ...] [--job-name NAME] [--wait [--no-logs]] [--region REGION] [--profile NAME]

Channels (the contract of the image's `train` program): `train` (vqa_train.csv, attribute_schema.json),
`validation` (vqa_val.csv), `images` (<id>.jpg), and optionally `base_model` (a base model folder) and
`clip` (a CLIP artifact folder whose zero-shot tags the report shows beside BLIP-2).
With --bucket and no channel URIs they are s3://BUCKET/data/{train,validation,images}/; --upload-data
and --upload-images put a `training.prepare` output folder and an images folder there first.

With --wait, the job's status changes and its CloudWatch log lines (log group /aws/sagemaker/TrainingJobs,
operations/job_logs.py) are shown as they come; --no-logs shows the statuses only.
The last line printed is the model artifact's S3 URI (with --wait, once the job has Completed). Exit
status: 0 on success, 1 when the job ends Failed or Stopped (its FailureReason is printed), 2 for bad
arguments or AWS errors before the job starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from loom.errors import command_error
from loom.schema import SCHEMA_FILE, AttributeSchema, SchemaError
from operations import sagemaker_jobs as jobs
from training.metrics_regex import METRIC_DEFINITIONS, attribute_metric_definitions
from training.job_folders import (BASE_MODEL_CHANNEL, CHECKPOINTS_DIR, CLIP_CHANNEL, IMAGES_CHANNEL, TRAIN_CHANNEL,
                                  VALIDATION_CHANNEL)
from operations.sagemaker_jobs import DEFAULT_INSTANCE_TYPE, JobConfigError
from training.prepare import REPORT_FILE, TRAIN_FILE, VAL_FILE

DEFAULT_VOLUME_GB = 100
DEFAULT_MAX_RUN_S = 24 * 3600
DEFAULT_MAX_WAIT_S = 36 * 3600
DATA_PREFIX = "data/"
MODELS_PREFIX = "models/"

# Files of a `loom prepare` output folder, by channel (training.prepare owns the names).
TRAIN_CHANNEL_FILES = (TRAIN_FILE, SCHEMA_FILE, REPORT_FILE)
VALIDATION_CHANNEL_FILES = (VAL_FILE,)
REQUIRED_FILES = (TRAIN_FILE, SCHEMA_FILE, VAL_FILE)

# SageMaker reads metrics from the job's log: the `train` program prints `loom_metric key=value ...`
# lines and training/metrics_regex.py (no third-party imports) holds the regexes that parse them.
MAX_METRIC_DEFINITIONS = 40  # SageMaker's limit per job

# SageMaker's limits on hyperparameters.
_MAX_HYPERPARAMETERS = 100
_MAX_KEY = 256
_MAX_VALUE = 2500


@dataclass
class TrainingJobSpec:
    """Everything a training job needs, as plain values; `training_job_request` turns it into the API call."""

    job_name: str
    image_uri: str
    role_arn: str
    train_uri: str
    validation_uri: str
    images_uri: str
    output_uri: str
    base_model_uri: str | None = None
    clip_artifact_uri: str | None = None
    hyperparameters: dict[str, str] = field(default_factory=dict)
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    volume_gb: int = DEFAULT_VOLUME_GB
    max_run_s: int = DEFAULT_MAX_RUN_S
    spot: bool = False
    max_wait_s: int | None = None
    checkpoint_uri: str | None = None
    metric_definitions: list[dict[str, str]] = field(default_factory=lambda: list(METRIC_DEFINITIONS))
    tags: list[dict[str, str]] = field(default_factory=list)
    kms_key_arn: str | None = None
    network_isolation: bool = False


def hyperparameters_as_strings(values: Mapping[str, Any]) -> dict[str, str]:
    """SageMaker's all-string hyperparameters: numbers and bools converted, flat lists joined with commas.

    Nested values (objects, lists of lists) and None are refused with the key named.
    """
    if len(values) > _MAX_HYPERPARAMETERS:
        raise JobConfigError(f"{len(values)} hyperparameters given; SageMaker accepts at most {_MAX_HYPERPARAMETERS}")
    out: dict[str, str] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not key or len(key) > _MAX_KEY:
            raise JobConfigError(f"hyperparameter name {key!r} must be a string of 1 to {_MAX_KEY} characters")
        text = _scalar_string(key, value)
        if len(text) > _MAX_VALUE:
            raise JobConfigError(f"hyperparameter {key!r}: value is {len(text)} characters; the limit is {_MAX_VALUE}")
        out[key] = text
    return out


def _scalar_string(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, (list, tuple)):
        items = []
        for item in value:
            if isinstance(item, (list, tuple, dict, set)) or item is None:
                raise JobConfigError(
                    f"hyperparameter {key!r}: nested value {value!r}; SageMaker hyperparameters are flat strings"
                )
            text = _scalar_string(key, item)
            if "," in text:
                raise JobConfigError(f"hyperparameter {key!r}: list item {text!r} contains a comma")
            items.append(text)
        return ",".join(items)
    if value is None:
        raise JobConfigError(f"hyperparameter {key!r} has no value (null)")
    raise JobConfigError(
        f"hyperparameter {key!r}: {type(value).__name__} value {value!r} cannot be sent; "
        "use a string, number, boolean or flat list"
    )


def check_hyperparameters(hyperparameters: Mapping[str, str]) -> None:
    """Refuse names and values the `train` program would refuse, before paying for an instance."""
    from training.config import ConfigError, from_hyperparameters

    try:
        from_hyperparameters(hyperparameters)
    except ConfigError as exc:
        raise JobConfigError(str(exc)) from None


def training_job_request(spec: TrainingJobSpec) -> dict[str, Any]:
    """The keyword arguments of `sagemaker.create_training_job` for a spec (pure; validates the spec)."""
    jobs.validate_job_name(spec.job_name)
    channels = [(TRAIN_CHANNEL, spec.train_uri), (VALIDATION_CHANNEL, spec.validation_uri),
                (IMAGES_CHANNEL, spec.images_uri)]
    if spec.base_model_uri:
        channels.append((BASE_MODEL_CHANNEL, spec.base_model_uri))
    if spec.clip_artifact_uri:
        channels.append((CLIP_CHANNEL, spec.clip_artifact_uri))
    for name, uri in channels:
        jobs.parse_s3_uri(uri)
    jobs.parse_s3_uri(spec.output_uri)
    if len(spec.metric_definitions) > MAX_METRIC_DEFINITIONS:
        raise JobConfigError(f"{len(spec.metric_definitions)} metric definitions; SageMaker accepts {MAX_METRIC_DEFINITIONS}")
    if spec.instance_count < 1:
        raise JobConfigError(f"instance count must be at least 1, got {spec.instance_count}")
    if spec.max_run_s < 1:
        raise JobConfigError(f"max run time must be positive, got {spec.max_run_s}s")
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": spec.max_run_s}
    request: dict[str, Any] = {
        "TrainingJobName": spec.job_name,
        "AlgorithmSpecification": {
            "TrainingImage": spec.image_uri,
            "TrainingInputMode": "File",
            "MetricDefinitions": list(spec.metric_definitions),
        },
        "RoleArn": spec.role_arn,
        "InputDataConfig": [
            {
                "ChannelName": name,
                "DataSource": {"S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": jobs.as_prefix(uri),
                    "S3DataDistributionType": "FullyReplicated",
                }},
                "InputMode": "File",
            }
            for name, uri in channels
        ],
        "OutputDataConfig": {"S3OutputPath": spec.output_uri.rstrip("/")},
        "ResourceConfig": {
            "InstanceType": spec.instance_type,
            "InstanceCount": spec.instance_count,
            "VolumeSizeInGB": spec.volume_gb,
        },
        "HyperParameters": hyperparameters_as_strings(spec.hyperparameters),
        "StoppingCondition": stopping,
        "Tags": list(spec.tags),
    }
    if spec.kms_key_arn:  # the bucket's customer-managed key (Terraform output kms_key_arn)
        request["OutputDataConfig"]["KmsKeyId"] = spec.kms_key_arn
    if volume_key := jobs.volume_kms_key(spec.instance_type, spec.kms_key_arn):  # EBS-backed types only
        request["ResourceConfig"]["VolumeKmsKeyId"] = volume_key
    if spec.spot:
        max_wait = spec.max_wait_s or max(DEFAULT_MAX_WAIT_S, spec.max_run_s)
        if max_wait < spec.max_run_s:
            raise JobConfigError(
                f"max wait ({max_wait}s) must be at least the max run time ({spec.max_run_s}s) for spot training"
            )
        if not spec.checkpoint_uri:
            raise JobConfigError("spot training needs a checkpoint S3 URI so that an interrupted job can resume")
        jobs.parse_s3_uri(spec.checkpoint_uri)
        request["EnableManagedSpotTraining"] = True
        stopping["MaxWaitTimeInSeconds"] = max_wait
        request["CheckpointConfig"] = {"S3Uri": jobs.as_prefix(spec.checkpoint_uri), "LocalPath": str(CHECKPOINTS_DIR)}
    elif spec.max_wait_s or spec.checkpoint_uri:
        raise JobConfigError("--max-wait-hours and --checkpoint-s3 apply to spot training only; add --spot")
    if spec.network_isolation:
        # No outbound network in the container: the base model must come in as the base_model channel
        # (loom stage-base), since the hub cannot be reached. EnableNetworkIsolation in CreateTrainingJob:
        # https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTrainingJob.html
        if not spec.base_model_uri:
            raise JobConfigError("--network-isolation needs --base-model s3://... (stage one with `loom stage-base`): "
                                 "an isolated job cannot download the base model from the hub")
        request["EnableNetworkIsolation"] = True
    return request


def model_artifact_uri(output_uri: str, job_name: str) -> str:
    """Where SageMaker puts a job's model: <output>/<job>/output/model.tar.gz."""
    return f"{output_uri.rstrip('/')}/{job_name}/output/model.tar.gz"


def metric_definitions(prepared_dir: str | Path | None = None) -> list[dict[str, str]]:
    """The job's metric definitions, with per-attribute validation metrics when the prepared data is local."""
    definitions = list(METRIC_DEFINITIONS)
    if prepared_dir and (Path(prepared_dir) / SCHEMA_FILE).is_file():
        try:
            names = AttributeSchema.load(prepared_dir).names
        except SchemaError as exc:
            raise JobConfigError(str(exc)) from None
        definitions += attribute_metric_definitions(names)
    return definitions[:MAX_METRIC_DEFINITIONS]


def upload_prepared_data(s3: Any, prepared_dir: str | Path, train_uri: str, validation_uri: str,
                         progress: bool | None = None) -> jobs.UploadReport:
    """Upload a `training.prepare` output folder into the train and validation channel prefixes."""
    root = Path(prepared_dir)
    missing = [name for name in REQUIRED_FILES if not (root / name).is_file()]
    if missing:
        raise JobConfigError(
            f"{root} is not a prepared-data folder (`loom prepare --out`): missing {', '.join(missing)}"
        )
    train_bucket, train_prefix = jobs.parse_s3_uri(jobs.as_prefix(train_uri))
    val_bucket, val_prefix = jobs.parse_s3_uri(jobs.as_prefix(validation_uri))
    if train_bucket != val_bucket:
        raise JobConfigError("--upload-data needs the train and validation channels in the same bucket")
    files = [(root / n, train_prefix + n) for n in TRAIN_CHANNEL_FILES if (root / n).is_file()]
    files += [(root / n, val_prefix + n) for n in VALIDATION_CHANNEL_FILES]
    return jobs.upload_files(s3, files, train_bucket, progress=progress, desc="prepared data")


# ---------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="loom launch", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-uri", required=True, help="the training image in ECR (Terraform output)")
    p.add_argument("--role-arn", required=True, help="the SageMaker execution role (Terraform output)")
    p.add_argument("--bucket", help="the project bucket; default channel, output and checkpoint locations")
    p.add_argument("--train", help="S3 prefix of the train channel (default s3://BUCKET/data/train/)")
    p.add_argument("--validation", help="S3 prefix of the validation channel (default s3://BUCKET/data/validation/)")
    p.add_argument("--images", help="S3 prefix of the images channel (default s3://BUCKET/data/images/)")
    p.add_argument("--base-model", help="S3 prefix of a base model folder (optional base_model channel; "
                   "`loom stage-base` makes one)")
    p.add_argument("--clip-artifact", help="S3 prefix of an unpacked CLIP artifact folder (optional clip channel): "
                   "its zero-shot tags are scored beside BLIP-2 in the evaluation report")
    p.add_argument("--network-isolation", action="store_true",
                   help="run the job without network access (EnableNetworkIsolation); needs --base-model")
    p.add_argument("--output", help="S3 output path (default s3://BUCKET/models/)")
    p.add_argument("--upload-data", metavar="DIR", help="upload this training.prepare output folder first")
    p.add_argument("--upload-images", metavar="DIR", help="upload the <id>.jpg files of this folder first")
    p.add_argument("--hyperparameters", metavar="FILE", help="a JSON object of hyperparameters")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help="a hyperparameter (repeatable)")
    p.add_argument("--no-check-hyperparameters", action="store_true",
                   help="send hyperparameters without checking them against training.config")
    p.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE)
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--volume-gb", type=int, default=DEFAULT_VOLUME_GB)
    p.add_argument("--max-run-hours", type=float, default=DEFAULT_MAX_RUN_S / 3600)
    p.add_argument("--spot", action="store_true", help="use managed spot training (resumes from checkpoints)")
    p.add_argument("--max-wait-hours", type=float, help="spot: give up after this long, waiting included")
    p.add_argument("--checkpoint-s3", help="spot: checkpoint prefix (default s3://BUCKET/checkpoints/JOB/)")
    p.add_argument("--kms-key-arn", help="KMS key for the model output (Terraform kms_key_arn); also for the EBS volume of "
                   "instance types without local NVMe storage (ml.g5 and *d types encrypt theirs in hardware)")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="a job tag (repeatable)")
    p.add_argument("--job-name", help="default loom-train-YYYYmmdd-HHMMSS (UTC)")
    p.add_argument("--wait", action="store_true", help="wait for the job, showing its status changes and log lines")
    p.add_argument("--no-logs", action="store_true", help="with --wait: status changes only, no CloudWatch log "
                   "lines (they need logs:DescribeLogStreams and logs:GetLogEvents)")
    p.add_argument("--region")
    p.add_argument("--profile")
    return p.parse_args(argv)


def _hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if args.hyperparameters:
        try:
            data = json.loads(Path(args.hyperparameters).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise JobConfigError(f"--hyperparameters {args.hyperparameters}: {exc}") from None
        if not isinstance(data, dict):
            raise JobConfigError(f"--hyperparameters {args.hyperparameters} must hold a JSON object")
        values.update(data)
    for item in args.hp:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise JobConfigError(f"--hp {item!r} is not key=value")
        values[key.strip()] = value.strip()
    return values


# What the training role Terraform creates may read in the project bucket (terraform/modules/training/main.tf:
# read data/, read and write checkpoints/, write models/). A channel elsewhere in that bucket fails inside the
# job with AccessDenied after the instance has started; refused here before anything is uploaded or started.
TRAINING_ROLE_READS = (DATA_PREFIX, "checkpoints/")


def check_training_role_reads(args: argparse.Namespace) -> None:
    channels = {"--train": args.train, "--validation": args.validation, "--images": args.images,
                "--base-model": args.base_model, "--clip-artifact": args.clip_artifact}
    for flag, uri in channels.items():
        if not args.bucket or not uri or not str(uri).startswith("s3://"):
            continue
        bucket, key = jobs.parse_s3_uri(uri)
        if bucket == args.bucket and not key.startswith(TRAINING_ROLE_READS):
            raise JobConfigError(
                f"{flag} {uri}: the training role reads only {' and '.join(TRAINING_ROLE_READS)} of the project "
                f"bucket (terraform/modules/training); stage it under s3://{bucket}/{DATA_PREFIX}...")


def spec_from_args(args: argparse.Namespace, job_name: str) -> TrainingJobSpec:
    """A TrainingJobSpec from the command line, filling S3 locations from --bucket where not given."""
    def where(explicit: str | None, default_key: str, flag: str) -> str:
        if explicit:
            return explicit
        if not args.bucket:
            raise JobConfigError(f"give {flag} or --bucket")
        return jobs.s3_uri(args.bucket, default_key)

    spot_checkpoint = None
    if args.spot:
        spot_checkpoint = where(args.checkpoint_s3, f"checkpoints/{job_name}/", "--checkpoint-s3")
    elif args.checkpoint_s3:
        spot_checkpoint = args.checkpoint_s3
    check_training_role_reads(args)
    hyperparameters = hyperparameters_as_strings(_hyperparameters(args))
    if not args.no_check_hyperparameters:
        check_hyperparameters(hyperparameters)
    return TrainingJobSpec(
        job_name=job_name,
        image_uri=args.image_uri,
        role_arn=args.role_arn,
        train_uri=where(args.train, DATA_PREFIX + "train/", "--train"),
        validation_uri=where(args.validation, DATA_PREFIX + "validation/", "--validation"),
        images_uri=where(args.images, DATA_PREFIX + "images/", "--images"),
        base_model_uri=args.base_model,
        clip_artifact_uri=args.clip_artifact,
        output_uri=where(args.output, MODELS_PREFIX, "--output"),
        hyperparameters=hyperparameters,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        volume_gb=args.volume_gb,
        max_run_s=int(args.max_run_hours * 3600),
        spot=args.spot,
        max_wait_s=int(args.max_wait_hours * 3600) if args.max_wait_hours else None,
        checkpoint_uri=spot_checkpoint,
        tags=jobs.parse_tags(args.tag),
        kms_key_arn=args.kms_key_arn,
        network_isolation=args.network_isolation,
        metric_definitions=metric_definitions(args.upload_data),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        job_name = jobs.validate_job_name(args.job_name) if args.job_name else jobs.default_job_name("train")
        spec = spec_from_args(args, job_name)
        request = training_job_request(spec)
        sagemaker = jobs.aws_client("sagemaker", region=args.region, profile=args.profile)
        if args.upload_data or args.upload_images:
            s3 = jobs.aws_client("s3", region=args.region, profile=args.profile)
            if args.upload_data:
                report = upload_prepared_data(s3, args.upload_data, spec.train_uri, spec.validation_uri)
                print(f"prepared data: {len(report.uploaded)} uploaded, {len(report.skipped)} already in S3")
            if args.upload_images:
                report = jobs.upload_folder(s3, args.upload_images, spec.images_uri, "*.jpg", desc="images")
                print(f"images: {len(report.uploaded)} uploaded, {len(report.skipped)} already in S3")
        sagemaker.create_training_job(**request)
    except (JobConfigError, OSError) as exc:
        return command_error(str(exc))
    except (ClientError, BotoCoreError) as exc:
        return command_error(f"AWS refused the request: {exc}")
    print(f"started training job {job_name} on {spec.instance_type}{' (spot)' if spec.spot else ''}")
    artifact = model_artifact_uri(spec.output_uri, job_name)
    if not args.wait:
        print(f"the model artifact will be written to:\n{artifact}")
        return 0
    follow = None
    if not args.no_logs:
        from operations.job_logs import JobLogs

        follow = JobLogs(jobs.aws_client("logs", region=args.region, profile=args.profile), job_name).poll
    try:
        job = jobs.wait_for_job(lambda: sagemaker.describe_training_job(TrainingJobName=job_name), jobs.TRAINING_JOB,
                                follow=follow)
    except (ClientError, BotoCoreError) as exc:
        return command_error(f"lost track of {job_name}: {exc}")
    if job["TrainingJobStatus"] != "Completed":
        return command_error(f"{jobs.failure_message(job, jobs.TRAINING_JOB, job_name)}", 1)
    if job.get("BillableTimeInSeconds") is not None:
        print(f"billable time: {job['BillableTimeInSeconds']}s")
    print(job.get("ModelArtifacts", {}).get("S3ModelArtifacts", artifact))
    return 0


if __name__ == "__main__":
    sys.exit(main())
