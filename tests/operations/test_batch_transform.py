"""Catalog-scale Batch Transform: records, sharding, joining (pure), the job calls (moto), the wire format."""

from __future__ import annotations

import base64
import csv
import json
import re

import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sagemaker.models import sagemaker_backends

from endpoint_contract import contract

from operations import batch_records as records
from operations import batch_transform as bt
from operations import sagemaker_jobs as jobs
from operations.batch_records import ProductImage

REGION = "us-east-1"
BUCKET = "loom-test"
MODEL = "loom-attributes"


def product(pid, data=b"\xff\xd8jpeg", log=None):
    def read():
        if log is not None:
            log.append(pid)
        if isinstance(data, Exception):
            raise data
        return data

    return ProductImage(pid, read, f"images/{pid}.jpg")


def read_lines(path):
    return [json.loads(line) for line in path.read_bytes().splitlines()]


# ---------------------------------------------------------------------------------------------------
# Records and shards


def test_record_is_one_json_line_with_id_and_base64_image():
    line = records.encode_record("38642", b"\x00\x01image", ["baseColour"])
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    record = json.loads(line)
    assert record == {"id": "38642", "image": base64.b64encode(b"\x00\x01image").decode(),
                      "attributes": ["baseColour"]}
    assert "attributes" not in json.loads(records.encode_record(1, b"x"))


def test_shards_hold_records_per_file_in_order(tmp_path):
    shards = list(records.write_shards((product(str(i)) for i in range(7)), tmp_path,
                                       records_per_file=3, max_payload_mb=1))
    assert [s.name for s in shards] == ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
    assert [s.ids for s in shards] == [["0", "1", "2"], ["3", "4", "5"], ["6"]]
    assert [r["id"] for r in read_lines(shards[1].path)] == ["3", "4", "5"]
    assert base64.b64decode(read_lines(shards[2].path)[0]["image"]) == b"\xff\xd8jpeg"


def test_sharding_streams_one_image_at_a_time(tmp_path):
    reads: list[str] = []
    shards = records.write_shards((product(str(i), log=reads) for i in range(10)), tmp_path,
                                  records_per_file=4, max_payload_mb=1)
    first = next(shards)
    assert first.ids == ["0", "1", "2", "3"] and reads == ["0", "1", "2", "3"]
    first.path.unlink()  # the caller uploads and deletes each shard before the next is written
    rest = list(shards)
    assert reads == [str(i) for i in range(10)] and [s.ids for s in rest] == [["4", "5", "6", "7"], ["8", "9"]]


def test_oversize_unreadable_empty_and_duplicate_products_are_skipped_and_reported(tmp_path):
    big = b"x" * (800 * 1024)  # base64 makes it ~1.07 MB: over a 1 MB payload
    report = records.ShardingReport()
    shards = list(records.write_shards(
        [product("ok1"), product("big", big), product("gone", FileNotFoundError("no such file")),
         product("empty", b""), product("ok1"), product("ok2")],
        tmp_path, records_per_file=10, max_payload_mb=1, report=report,
    ))
    assert [s.ids for s in shards] == [["ok1", "ok2"]]
    assert report.records == 2 and report.shards == {"part-00000.jsonl": ["ok1", "ok2"]}
    reasons = {s["id"]: s["reason"] for s in report.skipped}
    assert re.match(r"record is 1\.\d MB; MaxPayloadInMB is 1", reasons["big"])
    assert reasons["gone"].startswith("unreadable image") and reasons["empty"] == "empty image file"
    assert [s["reason"] for s in report.skipped if s["id"] == "ok1"] == ["duplicate id"]


@pytest.mark.parametrize("kwargs", [{"records_per_file": 0, "max_payload_mb": 6},
                                    {"records_per_file": 5, "max_payload_mb": 101}])
def test_sharding_refuses_bad_limits(tmp_path, kwargs):
    with pytest.raises(ValueError):
        list(records.write_shards([product("1")], tmp_path, **kwargs))


# ---------------------------------------------------------------------------------------------------
# Outputs and joining


def answer(pid, colour="Red", conf=0.9):
    return {"id": pid, "attributes": {"baseColour": colour}, "confidence": {"baseColour": conf},
            "raw": {}, "unknown_values": []}


def answer_record(record):
    return answer(record["id"])


def test_parse_output_skips_blank_lines_and_reports_bad_ones():
    lines = [json.dumps(answer("1")).encode(), b"", b"   ", b"{not json", b"[1, 2]", json.dumps(answer("2"))]
    parsed = list(records.parse_output_lines(lines))
    assert [p["id"] for p in parsed] == ["1", None, None, "2"]
    assert "output line 4 is not JSON" in parsed[1]["error"] and "not a JSON object" in parsed[2]["error"]


def test_join_by_echoed_id_and_by_position_for_lines_without_one():
    outputs = [answer("b", "Blue"), {"id": None, "error": "line 2: bad image"}, answer("a")]
    rows = records.join_shard(["b", "c", "a"], outputs)
    assert rows == [
        {"id": "b", "attributes": {"baseColour": "Blue"}, "confidence": {"baseColour": 0.9}, "raw": {},
         "unknown_values": []},
        {"id": "c", "error": "line 2: bad image"},
        {"id": "a", "attributes": {"baseColour": "Red"}, "confidence": {"baseColour": 0.9}, "raw": {},
         "unknown_values": []},
    ]


def test_join_reports_missing_duplicate_and_stray_lines():
    outputs = [answer("a"), answer("a"), answer("zzz"), {"error": "no id at all"}]
    rows = records.join_shard(["a", "b", "c"], outputs)
    by_id = {}
    for row in rows:
        by_id.setdefault(row["id"], []).append(row)
    assert "attributes" in by_id["a"][0] and by_id["a"][1]["error"] == "more than one output line for this id"
    assert by_id["b"] == [{"id": "b", "error": "no output line for this product"}]
    assert by_id["zzz"][0]["error"] == "output line for an id that is not in this input file"
    assert by_id[None][0]["error"] == "no id at all"
    assert records.summarise(rows) == {"answered": 1, "errors": 5}


def test_results_as_csv_and_jsonl(tmp_path):
    rows = [
        {"id": "1", "attributes": {"baseColour": "Red", "Pattern": "Striped"},
         "confidence": {"baseColour": 0.91234, "Pattern": 0.5, "Sleeve Length": 0.2},
         "raw": {"Sleeve Length": "sleeves?"}, "unknown_values": ["Pattern"]},
        {"id": "2", "error": "line 2: not an image"},
    ]
    path = records.write_results(rows, tmp_path / "out.csv")
    table = list(csv.DictReader(path.open(encoding="utf-8")))
    assert list(table[0]) == ["id", "baseColour", "Pattern", "Sleeve Length", "baseColour confidence",
                              "Pattern confidence", "Sleeve Length confidence", "unknown_values", "raw", "error"]
    assert table[0]["baseColour"] == "Red" and table[0]["baseColour confidence"] == "0.9123"
    assert table[0]["Sleeve Length"] == "" and json.loads(table[0]["raw"]) == {"Sleeve Length": "sleeves?"}
    assert table[0]["unknown_values"] == "Pattern"
    assert table[1]["error"] == "line 2: not an image" and table[1]["baseColour"] == ""
    jsonl = records.write_results(rows, tmp_path / "out.jsonl")
    assert [json.loads(line) for line in jsonl.read_text().splitlines()] == rows


def test_transform_request():
    request = bt.transform_job_request(
        job_name="loom-batch-1", model_name=MODEL, input_uri="s3://bkt/batch/j/input",
        output_uri="s3://bkt/batch/j/output/", instance_count=4, max_payload_mb=6,
        tags=[{"Key": "project", "Value": "loom"}],
    )
    assert request["BatchStrategy"] == "MultiRecord" and request["MaxPayloadInMB"] == 6
    assert request["TransformInput"] == {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bkt/batch/j/input/"}},
        "ContentType": "application/jsonlines", "CompressionType": "None", "SplitType": "Line",
    }
    assert request["TransformOutput"] == {"S3OutputPath": "s3://bkt/batch/j/output/",
                                          "Accept": "application/jsonlines", "AssembleWith": "Line"}
    assert request["TransformResources"] == {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 4}
    assert "MaxConcurrentTransforms" not in request
    kms = "arn:aws:kms:us-east-1:123456789012:key/k"
    sealed = bt.transform_job_request(job_name="j", model_name=MODEL, input_uri="s3://bkt/i/",
                                      output_uri="s3://bkt/o/", kms_key_arn=kms, max_concurrent_transforms=2)
    # ml.g5 (the default) has NVMe instance storage: SageMaker refuses VolumeKmsKeyId there
    # (API_TransformResources.html); the output key is still sent. An EBS-backed type gets both.
    assert sealed["TransformOutput"]["KmsKeyId"] == kms and "VolumeKmsKeyId" not in sealed["TransformResources"]
    ebs = bt.transform_job_request(job_name="j", model_name=MODEL, input_uri="s3://bkt/i/", output_uri="s3://bkt/o/",
                                   kms_key_arn=kms, instance_type="ml.m5.xlarge")
    assert ebs["TransformOutput"]["KmsKeyId"] == kms and ebs["TransformResources"]["VolumeKmsKeyId"] == kms
    assert sealed["MaxConcurrentTransforms"] == 2
    assert bt.job_locations("bkt", "batch/", "j") == {
        "input": "s3://bkt/batch/j/input/", "output": "s3://bkt/batch/j/output/",
        "manifest": "s3://bkt/batch/j/manifest.json"}
    with pytest.raises(jobs.JobConfigError):
        bt.transform_job_request(job_name="x", model_name=MODEL, input_uri="s3://bkt/i/",
                                 output_uri="s3://bkt/o/", instance_count=0)


# ---------------------------------------------------------------------------------------------------
# The job against moto


@pytest.fixture
def aws(monkeypatch, fake_aws_credentials):
    polls = []

    def sleep(seconds):
        polls.append(seconds)
        assert len(polls) < 50, "the job never reached a terminal status"

    monkeypatch.setattr(jobs.time, "sleep", sleep)
    with mock_aws():
        s3 = jobs.aws_client("s3", region=REGION)
        s3.create_bucket(Bucket=BUCKET)
        yield s3


def fake_sagemaker(monkeypatch, s3, states=(), outputs=True, bad_ids=(), reply=None):
    """Before each DescribeTransformJob: set moto's job to the next state; on Completed write `.out` files
    the way Batch Transform does (one line per input line, id echoed; `bad_ids` answered with an error;
    `reply(record)` answers the others, default `answer`)."""
    remaining = list(states)
    make_client = jobs.aws_client

    def client(service, **kwargs):
        c = make_client(service, **kwargs)

        def advance(params, **_):
            job = sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION].transform_jobs[params["TransformJobName"]]
            if remaining:
                for key, value in remaining.pop(0).items():
                    setattr(job, key, value)
            if job.transform_job_status == "Completed" and outputs:
                simulate_outputs(s3, job, bad_ids, reply)

        c.meta.events.register("provide-client-params.sagemaker.DescribeTransformJob", advance)
        return c

    monkeypatch.setattr(jobs, "aws_client", client)


def simulate_outputs(s3, job, bad_ids=(), reply=None):
    bucket, in_prefix = jobs.parse_s3_uri(job.transform_input["DataSource"]["S3DataSource"]["S3Uri"])
    _, out_prefix = jobs.parse_s3_uri(job.transform_output["S3OutputPath"])
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=in_prefix).get("Contents", []):
        name = obj["Key"][len(in_prefix):]
        lines = []
        for line in s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].iter_lines():
            record = json.loads(line)
            pid = record["id"]
            out = {"id": pid, "error": "line 1: not an image"} if pid in bad_ids else (reply or answer_record)(record)
            lines.append(json.dumps(out))
        s3.put_object(Bucket=bucket, Key=out_prefix + name + ".out", Body="\n".join(lines) + "\n")


def stored_job(name):
    return sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION].transform_jobs[name]


def test_catalog_job_end_to_end(aws, monkeypatch, catalog_dir, tmp_path, capsys):
    all_ids = sorted(p.stem for p in (catalog_dir / "images").glob("*.jpg"))
    fake_sagemaker(monkeypatch, aws, bad_ids={all_ids[5]},
                   states=[{"transform_job_status": "InProgress"}, {"transform_job_status": "Completed"}])
    out = tmp_path / "results.csv"
    code = bt.main(["--catalog", str(catalog_dir), "--model-name", MODEL, "--bucket", BUCKET,
                    "--job-name", "loom-batch-e2e", "--instance-count", "3", "--records-per-file", "100",
                    "--article-types", "all", "--tag", "project=loom", "--wait", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err

    job = stored_job("loom-batch-e2e")
    assert job.model_name == MODEL and job.batch_strategy == "MultiRecord" and job.max_payload_in_mb == 6
    assert job.transform_resources == {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 3}
    assert job.transform_input["SplitType"] == "Line" and job.transform_input["ContentType"] == "application/jsonlines"
    assert job.transform_output["AssembleWith"] == "Line"
    assert job.transform_input["DataSource"]["S3DataSource"]["S3Uri"] == "s3://loom-test/batch/loom-batch-e2e/input/"
    assert job.tags == [{"Key": "project", "Value": "loom"}]

    inputs = aws.list_objects_v2(Bucket=BUCKET, Prefix="batch/loom-batch-e2e/input/")["Contents"]
    assert [o["Key"].rsplit("/", 1)[1] for o in inputs] == ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
    manifest = json.loads(aws.get_object(Bucket=BUCKET, Key="batch/loom-batch-e2e/manifest.json")["Body"].read())
    assert [len(ids) for ids in manifest["shards"].values()] == [100, 100, len(all_ids) - 200]

    table = list(csv.DictReader(out.open(encoding="utf-8")))
    assert sorted(r["id"] for r in table) == all_ids
    bad = [r for r in table if r["error"]]
    assert [(r["id"], r["error"]) for r in bad] == [(all_ids[5], "line 1: not an image")]
    assert {r["baseColour"] for r in table if not r["error"]} == {"Red"}
    assert f"{len(all_ids) - 1} products answered, 1 errors" in captured.out
    assert re.findall(r"transform job status: (\w+)", captured.out) == ["InProgress", "Completed"]


def test_failed_job_reports_its_reason(aws, monkeypatch, tmp_path, capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "1.jpg").write_bytes(b"\xff\xd8one")
    fake_sagemaker(monkeypatch, aws, states=[
        {"transform_job_status": "Failed",
         "failure_reason": "ClientError: See job logs for more information"}], outputs=False)
    code = bt.main(["--catalog", str(images), "--model-name", MODEL, "--bucket", BUCKET, "--job-name", "loom-fail",
                    "--wait", "--out", str(tmp_path / "r.jsonl")])
    captured = capsys.readouterr()
    assert code == 1
    assert "transform job loom-fail ended Failed: ClientError: See job logs for more information" in captured.err
    assert not (tmp_path / "r.jsonl").exists()


def test_s3_catalog_then_collect_later(aws, monkeypatch, tmp_path, capsys):
    for pid in ("101", "102", "103"):
        aws.put_object(Bucket=BUCKET, Key=f"catalog/images/{pid}.jpg", Body=b"\xff\xd8" + pid.encode())
    aws.put_object(Bucket=BUCKET, Key="catalog/styles.csv", Body=b"id\n")
    assert bt.main(["--catalog", "s3://loom-test/catalog/", "--model-name", MODEL, "--bucket", BUCKET,
                    "--prefix", "runs/", "--job-name", "loom-later", "--records-per-file", "2"]) == 0
    assert "--collect loom-later" in capsys.readouterr().out
    shard = aws.get_object(Bucket=BUCKET, Key="runs/loom-later/input/part-00000.jsonl")["Body"].read()
    assert [json.loads(line)["id"] for line in shard.splitlines()] == ["101", "102"]

    simulate_outputs(aws, stored_job("loom-later"))
    aws.delete_object(Bucket=BUCKET, Key="runs/loom-later/output/part-00001.jsonl.out")  # one output missing
    out = tmp_path / "later.jsonl"
    assert bt.main(["--collect", "loom-later", "--bucket", BUCKET, "--prefix", "runs/", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["101", "102", "103"]
    assert rows[0]["attributes"] == {"baseColour": "Red"}
    assert rows[2]["error"] == "no output file s3://loom-test/runs/loom-later/output/part-00001.jsonl.out"


def test_oversize_images_are_reported_and_nothing_to_send_is_an_error(aws, tmp_path, capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "huge.jpg").write_bytes(b"x" * (1024 * 1024))
    code = bt.main(["--catalog", str(images), "--model-name", MODEL, "--bucket", BUCKET, "--max-payload-mb", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "huge: record is 1.3 MB; MaxPayloadInMB is 1" in err and "nothing to transform" in err
    assert not sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION].transform_jobs


# ---------------------------------------------------------------------------------------------------
# Descriptions


def test_descriptions_with_the_lambdas_writer_retry_and_rate():
    from inference.api.describe import DescriptionError, OfflineWriter
    from operations.batch_describe import describe_results

    class Flaky(OfflineWriter):
        model = "flaky"

        def __init__(self):
            self.calls = 0

        def draft(self, brief, deadline):
            self.calls += 1
            if self.calls == 1:
                raise DescriptionError("ThrottlingException")
            return super().draft(brief, deadline)

    rows = [answer("1"), {"id": "2", "error": "bad image"}, answer("3", "Blue")]
    slept = []
    stats = describe_results(rows, Flaky(), concurrency=1, sleep=slept.append)
    assert stats["described"] == 2 and stats["failed"] == 0 and stats["products_per_second"] > 0
    assert slept == [2.0]
    assert "Red" in rows[0]["description"] and "Blue" in rows[2]["description"]
    assert "description" not in rows[1] and "description_error" not in rows[0]

    class Broken(OfflineWriter):
        def draft(self, brief, deadline):
            raise DescriptionError("AccessDeniedException")

    rows = [answer("1")]
    stats = describe_results(rows, Broken(), retries=2, sleep=slept.append)
    assert stats["failed"] == 1 and "AccessDeniedException" in rows[0]["description_error"]


def test_collect_with_offline_descriptions(aws, monkeypatch, tmp_path, capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    for pid in ("7", "8"):
        (images / f"{pid}.jpg").write_bytes(b"\xff\xd8" + pid.encode())
    fake_sagemaker(monkeypatch, aws)
    out = tmp_path / "d.csv"
    assert bt.main(["--catalog", str(images), "--model-name", MODEL, "--bucket", BUCKET, "--job-name", "loom-d",
                    "--wait", "--out", str(out), "--describe", "--writer", "offline", "--concurrency", "2"]) == 0
    table = list(csv.DictReader(out.open(encoding="utf-8")))
    assert all("Red" in r["description"] for r in table) and len(table) == 2
    assert re.search(r"descriptions: 2 written, 0 failed, [\d.]+ products/s with 2 threads", capsys.readouterr().out)


# ---------------------------------------------------------------------------------------------------
# The wire format against the real inference app


@pytest.mark.slow
def test_shards_through_the_real_serve_program(trained_artifact, tmp_path):
    """What Batch Transform does: POST each JSON Lines shard to `serve` (gunicorn on 127.0.0.1, the trained
    tiny model), then join the answers back to product ids; a broken image stays an error on its own line."""
    from inference.server.local_server import LocalServer
    from loom.schema import AttributeSchema
    from training.data import read_vqa_csv, values_by_product
    from training.prepare import VAL_FILE

    data = trained_artifact.data_dir
    truth = values_by_product(read_vqa_csv(data / VAL_FILE, AttributeSchema.load(data)))
    ids = list(truth)[:5]
    images = trained_artifact.catalog_dir / "images"
    products = [ProductImage(pid, (images / f"{pid}.jpg").read_bytes) for pid in ids]
    products.insert(1, ProductImage("broken", lambda: b"these bytes are not an image"))
    shards = list(records.write_shards(products, tmp_path, records_per_file=3, max_payload_mb=6))
    assert [len(s.ids) for s in shards] == [3, 3]

    rows = []
    with LocalServer(trained_artifact.model_dir, log_path=tmp_path / "serve.log") as server:
        server.wait_ready(timeout=180)
        for shard in shards:
            status, headers, body = server.request("POST", "/invocations", shard.path.read_bytes(),
                                                   {"Content-Type": "application/jsonlines"})
            assert status == 200 and headers["Content-Type"].startswith("application/jsonlines"), body[:500]
            rows += records.join_shard(shard.ids, list(records.parse_output_lines(body.splitlines())))

    assert [r["id"] for r in rows] == [ids[0], "broken", *ids[1:]]
    assert "error" in rows[1]
    for row in rows[:1] + rows[2:]:
        assert "error" not in row
        for name in ("baseColour", "Pattern", "Sleeve Length"):
            assert row["attributes"][name] == truth[row["id"]][name]
    table = records.write_results(rows, tmp_path / "attributes.csv")
    written = list(csv.DictReader(table.open(encoding="utf-8")))
    assert [r["error"] != "" for r in written] == [False, True, False, False, False, False]


# ---------------------------------------------------------------------------------------------------
# Zero-shot tags for a whole catalog (`--task tags`, a CLIP model)


def tags_answer(record, value="Striped"):
    """A CLIP model's tags line as docs/search.md specifies it: stated tags and withheld ones with a reason."""
    return {"id": record["id"],
            "tags": {"Pattern": {"value": value, "probability": 0.93,
                                 "probabilities": {value: 0.93, "Solid": 0.07}}},
            "withheld": {"Fabric": {"value": "Cotton", "probability": 0.41,
                                    "probabilities": {"Cotton": 0.41, "Linen": 0.59}, "reason": "not_calibrated"}}}


def test_tag_records_carry_the_task_the_attributes_and_the_labels(tmp_path):
    fields = records.tag_fields({"Pattern": ["Striped", "Solid"]})
    shard, = records.write_shards([product("38642")], tmp_path, records_per_file=5, max_payload_mb=1,
                                  attributes=["Pattern"], fields=fields)
    line, = read_lines(shard.path)
    assert line == {"id": "38642", "image": base64.b64encode(b"\xff\xd8jpeg").decode(), "task": "tags",
                    "attributes": ["Pattern"], "labels": {"Pattern": ["Striped", "Solid"]}}
    assert json.loads(records.encode_record("1", b"x", fields=records.tag_fields())) == {
        "id": "1", "image": base64.b64encode(b"x").decode(), "task": "tags"}


def test_tag_records_follow_the_endpoint_contract(tmp_path):
    """Every line `loom batch --task tags` writes is a ClipTagsRecord of loom/openapi.json, the server's contract."""
    record_schema = contract({"$ref": "#/components/schemas/ClipTagsRecord"})
    for fields, attributes in ((records.tag_fields(), None), (records.tag_fields(), ["Pattern"]),
                               (records.tag_fields({"Pattern": ["Striped", "Solid"]}, 0.6), ["Pattern"])):
        line = json.loads(records.encode_record("38642", b"\xff\xd8jpeg", attributes, None, fields))
        assert not list(record_schema.iter_errors(line)), line
    assert list(record_schema.iter_errors(json.loads(records.encode_record("1", b"x"))))  # no task: not a tags line


@pytest.mark.parametrize("content, reason", [
    ("[1, 2]", "must be a JSON object"),
    ("{}", "must be a JSON object"),
    ("{not json", "cannot read the labels file"),
    ('{"Pattern": []}', "labels.Pattern must be a non-empty list"),
    ('{"Pattern": "Striped"}', "labels.Pattern must be a non-empty list"),
    ('{"Pattern": ["Striped", " "]}', "'labels.Pattern[]' must be a non-empty string"),
    ('{"Pattern": ["Striped", "Striped"]}', "labels.Pattern lists a value twice"),
    (json.dumps({"Pattern": [f"p{i}" for i in range(150)], "Fabric": [f"f{i}" for i in range(51)]}),
     "201 candidate values; at most 200"),
])
def test_labels_the_endpoint_would_refuse_are_refused_before_anything_is_uploaded(tmp_path, content, reason):
    # The endpoint's own rules (loom/clip_request.py), so that a job never answers every line with one 400.
    path = tmp_path / "labels.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(reason)):
        records.tag_fields(records.read_labels(path))


def test_tag_fields_follow_the_endpoint_rules_for_attributes_and_min_probability(tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"Pattern": ["Striped", "Solid"], "baseColour": ["Red"]}')
    assert records.tag_fields(records.read_labels(good), 0.5, ["Pattern"]) == {
        "task": "tags", "labels": {"Pattern": ["Striped", "Solid"], "baseColour": ["Red"]}, "min_probability": 0.5}
    with pytest.raises(ValueError, match="'min_probability' is the threshold for caller-given 'labels'"):
        records.tag_fields(None, 0.5)
    with pytest.raises(ValueError, match=re.escape("'min_probability' must be a number in (0, 1]")):
        records.tag_fields({"Pattern": ["Striped"]}, 1.5)
    with pytest.raises(ValueError, match="names an attribute twice"):
        records.tag_fields(attributes=["Pattern", "Pattern"])


def test_tag_outputs_join_to_stated_tags_withheld_reasons_and_errors(tmp_path):
    outputs = [tags_answer({"id": "a"}), {"id": "b", "error": "line 2: not an image"},
               answer("c")]  # an attribute model's line: the job did not run on a CLIP model
    rows = records.join_shard(["a", "b", "c", "d"], outputs, records.TASK_TAGS)
    assert rows[0] == {"id": "a", **{k: v for k, v in tags_answer({"id": "a"}).items() if k != "id"}}
    assert rows[1] == {"id": "b", "error": "line 2: not an image"}
    assert "no \"tags\" and \"withheld\"" in rows[2]["error"]
    assert rows[3] == {"id": "d", "error": "no output line for this product"}
    assert records.summarise(rows) == {"answered": 1, "errors": 3}
    assert records.summarise_tags(rows) == {"stated": {"Pattern": 1}, "withheld": {"Fabric (not_calibrated)": 1}}

    table = list(csv.DictReader(records.write_results(rows, tmp_path / "tags.csv",
                                                      task=records.TASK_TAGS).open(encoding="utf-8")))
    assert list(table[0]) == ["id", "Pattern", "Fabric", "Pattern probability", "Fabric probability",
                              "Pattern withheld", "Fabric withheld", "error"]
    assert table[0] == {"id": "a", "Pattern": "Striped", "Fabric": "", "Pattern probability": "0.9300",
                        "Fabric probability": "0.4100", "Pattern withheld": "", "Fabric withheld": "not_calibrated",
                        "error": ""}
    assert [r["error"] != "" for r in table] == [False, True, True, True]
    jsonl = records.write_results(rows, tmp_path / "tags.jsonl", task=records.TASK_TAGS)
    assert [json.loads(line) for line in jsonl.read_text().splitlines()] == rows


def stubbed_sagemaker(monkeypatch, expected_request):
    """jobs.aws_client with a SageMaker client under botocore's Stubber: CreateTransformJob must be called with
    exactly `expected_request`, which the Stubber also validates against the service model."""
    from botocore.stub import Stubber

    make_client = jobs.aws_client
    stubs = []

    def client(service, **kwargs):
        c = make_client(service, **kwargs)
        if service == "sagemaker":
            stub = Stubber(c)
            stub.add_response("create_transform_job", {
                "TransformJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:transform-job/"
                                   f"{expected_request['TransformJobName']}"}, expected_request)
            stub.activate()
            stubs.append(stub)
        return c

    monkeypatch.setattr(jobs, "aws_client", client)
    return stubs


# SageMaker CreateTransformJob: SplitType Line + BatchStrategy MultiRecord fills each request with whole lines up to
# MaxPayloadInMB; VolumeKmsKeyId is refused for instance types with instance storage
# (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTransformJob.html,
#  https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TransformResources.html).
@pytest.mark.parametrize("instance_type, volume_key", [("ml.m5.xlarge", True), ("ml.g5.2xlarge", False),
                                                       ("ml.g4dn.xlarge", False)])
def test_tags_job_request_is_what_sagemaker_accepts(aws, monkeypatch, tmp_path, capsys, instance_type, volume_key):
    images = tmp_path / "imgs"
    images.mkdir()
    for pid in ("11", "12", "13"):
        (images / f"{pid}.jpg").write_bytes(b"\xff\xd8" + pid.encode())
    labels = tmp_path / "labels.json"
    labels.write_text('{"Pattern": ["Striped", "Solid", "Checked"]}')
    kms = f"arn:aws:kms:{REGION}:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    expected = {
        "TransformJobName": "loom-tags-1", "ModelName": "loom-clip", "MaxPayloadInMB": 6,
        "BatchStrategy": "MultiRecord", "ModelClientConfig": {"InvocationsTimeoutInSeconds": 900,
                                                              "InvocationsMaxRetries": 1},
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                            "S3Uri": "s3://loom-test/batch/loom-tags-1/input/"}},
            "ContentType": "application/jsonlines", "CompressionType": "None", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": "s3://loom-test/batch/loom-tags-1/output/",
                            "Accept": "application/jsonlines", "AssembleWith": "Line", "KmsKeyId": kms},
        "TransformResources": {"InstanceType": instance_type, "InstanceCount": 2,
                               **({"VolumeKmsKeyId": kms} if volume_key else {})},
        "MaxConcurrentTransforms": 2,
        "Tags": [{"Key": "project", "Value": "loom"}],
    }
    stubs = stubbed_sagemaker(monkeypatch, expected)
    code = bt.main(["--task", "tags", "--labels", str(labels), "--min-probability", "0.6", "--attributes", "Pattern",
                    "--catalog", str(images),
                    "--model-name", "loom-clip", "--bucket", BUCKET, "--job-name", "loom-tags-1",
                    "--instance-type", instance_type, "--instance-count", "2", "--max-concurrent-transforms", "2",
                    "--records-per-file", "2", "--kms-key-arn", kms, "--tag", "project=loom"])
    assert code == 0, capsys.readouterr().err
    stubs[0].assert_no_pending_responses()
    lines = [json.loads(line) for key in ("part-00000.jsonl", "part-00001.jsonl")
             for line in aws.get_object(Bucket=BUCKET, Key=f"batch/loom-tags-1/input/{key}")["Body"].iter_lines()]
    assert [(r["id"], r["task"], r["attributes"], r["labels"], r["min_probability"]) for r in lines] == [
        (pid, "tags", ["Pattern"], {"Pattern": ["Striped", "Solid", "Checked"]}, 0.6) for pid in ("11", "12", "13")]
    manifest = json.loads(aws.get_object(Bucket=BUCKET, Key="batch/loom-tags-1/manifest.json")["Body"].read())
    assert manifest["task"] == "tags" and manifest["shards"] == {"part-00000.jsonl": ["11", "12"],
                                                                "part-00001.jsonl": ["13"]}


def test_tags_for_a_catalog_end_to_end_and_collected_later(aws, monkeypatch, catalog_dir, tmp_path, capsys):
    all_ids = sorted(p.stem for p in (catalog_dir / "images").glob("*.jpg"))
    fake_sagemaker(monkeypatch, aws, bad_ids={all_ids[3], all_ids[7]}, reply=tags_answer,
                   states=[{"transform_job_status": "InProgress"}, {"transform_job_status": "Completed"}])
    out = tmp_path / "tags.csv"
    code = bt.main(["--task", "tags", "--catalog", str(catalog_dir), "--model-name", "loom-clip", "--bucket", BUCKET,
                    "--job-name", "loom-tags-e2e", "--records-per-file", "100", "--article-types", "all",
                    "--wait", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = list(csv.DictReader(out.open(encoding="utf-8")))
    assert sorted(r["id"] for r in table) == all_ids
    assert sorted(r["id"] for r in table if r["error"]) == [all_ids[3], all_ids[7]]
    assert {(r["Pattern"], r["Fabric withheld"]) for r in table if not r["error"]} == {("Striped", "not_calibrated")}
    assert f"{len(all_ids) - 2} products tagged, 2 errors, 0 skipped before the job" in captured.out
    assert f"stated: Pattern {len(all_ids) - 2}" in captured.out
    assert f"withheld: Fabric (not_calibrated) {len(all_ids) - 2}" in captured.out
    assert "transform job status: Completed" in captured.out

    # --collect reads the task from the job's manifest; asking for another task is refused.
    later = tmp_path / "later.jsonl"
    assert bt.main(["--collect", "loom-tags-e2e", "--bucket", BUCKET, "--out", str(later)]) == 0
    rows = [json.loads(line) for line in later.read_text().splitlines()]
    assert rows[0]["tags"]["Pattern"]["value"] == "Striped" and rows[0]["withheld"]["Fabric"]["reason"]
    assert bt.main(["--collect", "loom-tags-e2e", "--bucket", BUCKET, "--task", "attributes",
                    "--out", str(later)]) == 2
    assert "--task attributes: job loom-tags-e2e ran task tags" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--task", "tags", "--describe", "--wait", "--out", "x.csv"], "--task tags does not take --describe"),
    (["--task", "tags", "--min-precision", "0.9"], "--task tags does not take --min-precision"),
    (["--task", "tags", "--known-attributes", "k.csv"], "--task tags does not take --known-attributes"),
    (["--labels", "labels.json"], "--labels and --min-probability are for --task tags"),
    (["--task", "embed"], "invalid choice: 'embed'"),
])
def test_tags_flags_that_belong_to_the_attribute_model_are_refused(capsys, extra, message):
    with pytest.raises(SystemExit) as exit_:
        bt.parse_args(["--catalog", "c", "--model-name", "m", "--bucket", BUCKET, *extra])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_tag_shards_through_the_real_serve_program(tiny_clip, tiny_clip_server, tmp_path):
    """What Batch Transform does with `--task tags`: POST each JSON Lines shard to `serve` (gunicorn on
    127.0.0.1, the tiny CLIP artifact), then join the tags back to product ids as `loom batch` does; a
    broken image stays an error on its own line."""
    from runtime.search_index import SearchIndex

    rows = SearchIndex.load(tiny_clip.index_dir).products[:7]
    truth = {row.id: row.attributes for row in rows}
    products = [ProductImage(row.id, (tiny_clip.catalog_dir / row.image).read_bytes) for row in rows]
    products.insert(2, ProductImage("broken", lambda: b"these bytes are not an image"))
    shards = list(records.write_shards(products, tmp_path, records_per_file=4, max_payload_mb=6,
                                       attributes=["baseColour", "Pattern"], fields=records.tag_fields()))
    assert [len(s.ids) for s in shards] == [4, 4]

    answer_schema = contract({"$ref": "#/components/schemas/ClipTagsResult"})
    results = []
    for shard in shards:
        status, headers, body = tiny_clip_server.request("POST", "/invocations", shard.path.read_bytes(),
                                                         {"Content-Type": "application/jsonlines"})
        assert status == 200 and headers["Content-Type"].startswith("application/jsonlines"), body[:500]
        outputs = list(records.parse_output_lines(body.splitlines()))
        for line in outputs:
            assert not list(answer_schema.iter_errors(line)), line
        results += records.join_shard(shard.ids, outputs, records.TASK_TAGS)

    assert [r["id"] for r in results] == [rows[0].id, rows[1].id, "broken", *(r.id for r in rows[2:])]
    assert "error" in results[2] and records.summarise(results) == {"answered": 7, "errors": 1}
    for row in results[:2] + results[3:]:
        assert set(row["tags"]) | set(row["withheld"]) == {"baseColour", "Pattern"}, row
        for name, entry in {**row["tags"], **row["withheld"]}.items():
            assert entry["value"] == max(entry["probabilities"], key=entry["probabilities"].get)
        assert all(entry["reason"] for entry in row["withheld"].values())
    top = [({**r["tags"], **r["withheld"]}["baseColour"]["value"], truth[r["id"]]["baseColour"])
           for r in results if "error" not in r]
    print(f"\ntiny CLIP colour tags through serve: {sum(f == e for f, e in top)} of {len(top)} right")
    assert sum(found == expected for found, expected in top) >= 6, top  # the tiny CLIP tags colour (issue: >= 0.9)
    table = list(csv.DictReader(records.write_results(results, tmp_path / "tags.csv",
                                                      task=records.TASK_TAGS).open(encoding="utf-8")))
    assert list(table[0])[:3] == ["id", "baseColour", "Pattern"] and table[2]["error"]
    assert all(r["baseColour"] or r["baseColour withheld"] for r in table if not r["error"])
