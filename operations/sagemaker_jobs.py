"""What the SageMaker job commands (`operations.launch`, `operations.batch_transform`) share.

boto3 clients with botocore's standard retry mode, S3 URIs, uploads that skip files already in S3 with
the same size, job names, `key=value` tags, and waiting for a job with backoff while reporting each status
transition (and, with `operations.job_logs`, the job's log lines). Plain boto3 only: the SageMaker Python SDK is not used (see docs/sagemaker.md).
"""

from __future__ import annotations

import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

# botocore's standard mode retries throttling and transient errors with jittered exponential backoff.
# `total_max_attempts` counts calls, the first one included (`max_attempts` would count retries).
# The instance Loom's jobs run on by default: one A10G (24 GB), enough for BLIP-2 Flan-T5-XL in bf16.
DEFAULT_INSTANCE_TYPE = "ml.g5.2xlarge"
TOTAL_MAX_ATTEMPTS = 10
TERMINAL_STATUSES = ("Completed", "Failed", "Stopped")
JOB_NAME_MAX = 63
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_TAG_KEY = re.compile(r"^[\w.:/=+\-@ ]{1,128}$", re.UNICODE)


class JobConfigError(ValueError):
    """A job setting that cannot be sent to SageMaker; the message says which and what is expected."""


# ---------------------------------------------------------------------------------------------------
# Clients


def retry_config(total_max_attempts: int = TOTAL_MAX_ATTEMPTS) -> Any:
    """A botocore Config with the standard retry mode (throttling and 5xx retried with backoff)."""
    from botocore.config import Config

    return Config(retries={"mode": "standard", "total_max_attempts": total_max_attempts})


_SESSIONS: dict[tuple[str | None, str | None], Any] = {}


def aws_client(service: str, *, region: str | None = None, profile: str | None = None) -> Any:
    """A boto3 client for `service` with standard retries, from the default chain or a named profile."""
    import boto3

    # One session per (region, profile): a session loads botocore's service models once, which makes
    # every further client cheap (a fresh session costs ~0.3 s per client).
    if (region, profile) not in _SESSIONS:
        _SESSIONS[(region, profile)] = boto3.Session(profile_name=profile, region_name=region)
    return _SESSIONS[(region, profile)].client(service, config=retry_config())


# ---------------------------------------------------------------------------------------------------
# S3 URIs


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """"s3://bucket/some/key" -> ("bucket", "some/key"); JobConfigError for anything else."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise JobConfigError(f"{uri!r} is not an S3 URI; expected s3://bucket/key")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
        raise JobConfigError(f"{uri!r}: {bucket!r} is not a valid S3 bucket name")
    return bucket, key


def s3_uri(bucket: str, key: str = "") -> str:
    """("bucket", "a/b.txt") -> "s3://bucket/a/b.txt"."""
    return f"s3://{bucket}/{key.lstrip('/')}"


def as_prefix(uri: str) -> str:
    """The S3 URI with exactly one trailing slash, so that it names a folder and not a key prefix."""
    return uri.rstrip("/") + "/"


# ---------------------------------------------------------------------------------------------------
# Uploads


@dataclass
class UploadReport:
    """What an upload did: keys uploaded, keys skipped because S3 already held the same size, bytes sent."""

    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_sent: int = 0


def existing_sizes(s3: Any, bucket: str, prefix: str) -> dict[str, int]:
    """{key: size} of every object under `prefix` (one paginated listing instead of a HEAD per file)."""
    sizes: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            sizes[obj["Key"]] = obj["Size"]
    return sizes


def folder_files(local_dir: str | Path, pattern: str = "*") -> list[Path]:
    """The regular files directly in a folder matching `pattern`, sorted by name; error if it is missing."""
    root = Path(local_dir)
    if not root.is_dir():
        raise JobConfigError(f"{root} is not a folder")
    return sorted(p for p in root.glob(pattern) if p.is_file())


def upload_files(
    s3: Any,
    files: Sequence[tuple[Path, str]],
    bucket: str,
    *,
    progress: bool | None = None,
    workers: int = 8,
    desc: str = "uploading",
) -> UploadReport:
    """Upload (local path, key) pairs to a bucket, skipping keys that S3 already holds with the same size.

    One listing per common prefix finds what is there; uploads run on a small thread pool with a byte
    progress bar (shown on a terminal when progress is None).
    """
    from tqdm import tqdm

    report = UploadReport()
    prefixes = sorted({key.rsplit("/", 1)[0] + "/" if "/" in key else "" for _, key in files})
    present: dict[str, int] = {}
    for prefix in _outermost(prefixes):
        present.update(existing_sizes(s3, bucket, prefix))
    todo: list[tuple[Path, str, int]] = []
    for path, key in files:
        size = path.stat().st_size
        if present.get(key) == size:
            report.skipped.append(key)
        else:
            todo.append((path, key, size))
    total = sum(size for _, _, size in todo)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc, file=sys.stderr,
               disable=None if progress is None else not progress, mininterval=0.5)

    def send(item: tuple[Path, str, int]) -> str:
        path, key, _ = item
        s3.upload_file(str(path), bucket, key, Callback=bar.update)
        return key

    with bar, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for key in pool.map(send, todo):
            report.uploaded.append(key)
    report.bytes_sent = total
    return report


def upload_folder(s3: Any, local_dir: str | Path, dest_uri: str, pattern: str = "*", **kwargs: Any) -> UploadReport:
    """Upload the files of a folder (not recursive) under an S3 prefix; see `upload_files`."""
    bucket, prefix = parse_s3_uri(as_prefix(dest_uri))
    files = [(p, prefix + p.name) for p in folder_files(local_dir, pattern)]
    if not files:
        raise JobConfigError(f"{local_dir} holds no files matching {pattern!r}")
    return upload_files(s3, files, bucket, **kwargs)


def _outermost(prefixes: Sequence[str]) -> list[str]:
    kept: list[str] = []
    for prefix in sorted(prefixes, key=len):
        if not any(prefix.startswith(k) for k in kept):
            kept.append(prefix)
    return kept


# ---------------------------------------------------------------------------------------------------
# Instance storage: which instance types refuse a volume KMS key

# SageMaker refuses VolumeKmsKeyId (training, transform) for instance types with local NVMe instance storage,
# which is encrypted by a hardware module on the instance; for endpoint configs KmsKeyId "does not encrypt
# instance local storage" there, so it is left out too:
#   https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ResourceConfig.html (VolumeKmsKeyId)
#   https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TransformResources.html (VolumeKmsKeyId)
#   https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateEndpointConfig.html (KmsKeyId)
# List of such types: https://docs.aws.amazon.com/sagemaker/latest/dg/host-instance-storage.html.
# Rule: EC2's naming convention marks instance store with a "d" attribute after the generation
# (c5d, g4dn, p3dn, p4d, p4de, m6id, c7gd...; https://docs.aws.amazon.com/ec2/latest/instancetypes/instance-type-names.html),
# and these accelerated families carry NVMe instance storage without a "d" in their name.
NVME_FAMILIES_WITHOUT_D = frozenset({"g5", "g6", "g6e", "gr6", "p5", "p5e", "p5en", "p6", "p6e", "trn1", "trn1n", "trn2"})
# Terraform applies the same rule in the one module its endpoint and search modules share
# (terraform/modules/instance_storage/main.tf, local.pattern); tests/operations/test_sagemaker_jobs.py
# checks that both agree.
_INSTANCE_TYPE = re.compile(r"^ml\.(?P<series>[a-z]+)(?P<generation>[0-9]+)(?P<attributes>[a-z]*)(?P<variant>-[a-z0-9]+)?\.[a-z0-9]+$")


def has_instance_storage(instance_type: str) -> bool:
    """Whether an ml.* instance type has local NVMe storage (and so refuses a volume KMS key).

    Hyphenated families such as ml.p6-b200.48xlarge are read by their base family (p6).
    """
    match = _INSTANCE_TYPE.match(instance_type or "")
    if not match:
        raise JobConfigError(f"{instance_type!r} is not a SageMaker instance type such as ml.g5.2xlarge")
    family = match["series"] + match["generation"] + match["attributes"]
    return "d" in match["attributes"] or family in NVME_FAMILIES_WITHOUT_D


def volume_kms_key(instance_type: str, kms_key_arn: str | None) -> str | None:
    """The key to send as VolumeKmsKeyId: None for instance-storage types (SageMaker refuses it there)."""
    if not kms_key_arn or has_instance_storage(instance_type):
        return None
    return kms_key_arn


# ---------------------------------------------------------------------------------------------------
# Names and tags


def default_job_name(kind: str, now: datetime | None = None) -> str:
    """"loom-<kind>-YYYYmmdd-HHMMSS" in UTC, e.g. loom-train-20261105-142301."""
    now = now or datetime.now(timezone.utc)
    return validate_job_name(f"loom-{kind}-{now:%Y%m%d-%H%M%S}")


def validate_job_name(name: str) -> str:
    """The name if SageMaker accepts it (1-63 of [a-zA-Z0-9-], starting with a letter or digit)."""
    if not name or len(name) > JOB_NAME_MAX or not _JOB_NAME.match(name):
        raise JobConfigError(
            f"job name {name!r} is not valid: use 1 to {JOB_NAME_MAX} letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    return name


def parse_tags(items: Iterable[str] | None) -> list[dict[str, str]]:
    """["team=ml", "cost-center=42"] -> [{"Key": "team", "Value": "ml"}, ...]; duplicates are an error."""
    tags: list[dict[str, str]] = []
    seen: set[str] = set()
    for item in items or ():
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise JobConfigError(f"tag {item!r} is not key=value")
        if not _TAG_KEY.match(key) or key.lower().startswith("aws:"):
            raise JobConfigError(f"tag key {key!r} is not allowed (1-128 characters, not starting with aws:)")
        if len(value) > 256:
            raise JobConfigError(f"tag {key!r}: the value is longer than 256 characters")
        if key in seen:
            raise JobConfigError(f"tag {key!r} is given twice")
        seen.add(key)
        tags.append({"Key": key, "Value": value})
    return tags


# ---------------------------------------------------------------------------------------------------
# Waiting for a job


@dataclass(frozen=True)
class JobKind:
    """How to read one kind of SageMaker job's description."""

    noun: str
    status_key: str
    secondary_key: str | None = None


TRAINING_JOB = JobKind("training job", "TrainingJobStatus", "SecondaryStatus")
TRANSFORM_JOB = JobKind("transform job", "TransformJobStatus")


def backoff_delays(initial: float = 5.0, factor: float = 1.5, maximum: float = 60.0) -> Iterable[float]:
    """5, 7.5, 11.25, ... seconds, capped at `maximum`: quick feedback early, few calls on long jobs."""
    delay = initial
    while True:
        yield delay
        delay = min(maximum, delay * factor)


def wait_for_job(
    describe: Callable[[], Mapping[str, Any]],
    kind: JobKind,
    *,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] | None = None,
    delays: Iterable[float] | None = None,
    timeout_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    follow: Callable[[], Iterable[str]] | None = None,
) -> Mapping[str, Any]:
    """Poll `describe()` until the job reaches Completed, Failed or Stopped; log every status change.

    With `follow` (e.g. `operations.job_logs.JobLogs(...).poll`), the job's new log lines are read after each
    description and logged under the status it showed (a new phase's first lines after its status line); the
    poll that sees the final status reads the last lines and logs them before that status.
    Returns the last description. Raises TimeoutError when `timeout_s` passes first (the job keeps running).
    """
    sleep = sleep or time.sleep  # looked up per call so that tests can replace time.sleep
    started = clock()
    last: tuple[Any, Any] | None = None
    delays = iter(delays if delays is not None else backoff_delays())
    while True:
        job = describe()
        status = job.get(kind.status_key)
        secondary = job.get(kind.secondary_key) if kind.secondary_key else None
        lines = list(follow()) if follow is not None else []
        if status in TERMINAL_STATUSES:  # the job's last lines, then how it ended
            for line in lines:
                log(line)
        if (status, secondary) != last:
            log(f"{kind.noun} status: {describe_status(job, kind)}  (+{clock() - started:.0f}s)")
            last = (status, secondary)
        if status in TERMINAL_STATUSES:
            return job
        for line in lines:
            log(line)
        if timeout_s is not None and clock() - started > timeout_s:
            raise TimeoutError(f"{kind.noun} still {status} after {timeout_s:.0f}s")
        sleep(next(delays))


def describe_status(job: Mapping[str, Any], kind: JobKind) -> str:
    """"InProgress / Training: Downloading the training image" from a job description."""
    text = str(job.get(kind.status_key))
    if kind.secondary_key and job.get(kind.secondary_key):
        text += f" / {job[kind.secondary_key]}"
        transitions = job.get("SecondaryStatusTransitions") or []
        if transitions and transitions[-1].get("StatusMessage"):
            text += f": {transitions[-1]['StatusMessage']}"
    return text


def failure_message(job: Mapping[str, Any], kind: JobKind, name: str) -> str:
    """What to tell the user about a job that ended Failed or Stopped, with SageMaker's FailureReason."""
    status = job.get(kind.status_key)
    reason = job.get("FailureReason") or "no FailureReason given"
    return f"{kind.noun} {name} ended {status}: {reason}"
