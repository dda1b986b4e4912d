"""`make demo`: the whole Loom flow offline on one machine.

synthetic catalog -> VQA data -> tiny demo base (cached) -> `train` (LoRA, evaluate, merge) -> report
-> the `serve` program on 127.0.0.1 -> the API Lambda handler in local mode for a few validation products.

Run it on a real catalog and base model on a GPU with
    make demo CATALOG=/data/fashion BASE_MODEL=/models/blip2-flan-t5-xl DEMO_ARGS="--device cuda"
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

from loom.artifact import ArtifactPaths, read_metrics

ROOT = Path(__file__).resolve().parents[1]


class Stages:
    """Times each stage of the demo and prints it as it goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        print(f"\n== {name}", flush=True)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 2)
            print(f"   {name}: {self.seconds[name]:.1f} s", flush=True)


def tiny_base_dir(cache: Path, vocabulary: list[str], steps: int, seed: int) -> Path:
    """The cache folder of a tiny base: keyed by everything that changes what gets built."""
    source = (ROOT / "training" / "tiny_base.py").read_bytes()
    key = hashlib.sha256(json.dumps([vocabulary, steps, seed]).encode() + source).hexdigest()[:12]
    return cache / f"tiny-base-{key}"


def build_base(args, data_dir: Path, catalog: Path) -> tuple[str, Path | None]:
    """The base model: the one given, or the tiny demo base built once and cached."""
    if args.base_model:
        return args.base_model, None
    from loom.schema import AttributeSchema
    from training import tiny_base

    schema = AttributeSchema.load(data_dir)
    values = tiny_base.catalog_values(catalog, schema.names)
    vocabulary = tiny_base.vocabulary_texts(schema, values)
    out = tiny_base_dir(args.cache, vocabulary, args.base_steps, args.seed)
    if (out / "tiny_base.json").exists():
        print(f"   using cached tiny base {out}")
    else:
        partial = out.with_name(out.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        info = tiny_base.build_tiny_base(partial, schema, values, steps=args.base_steps, seed=args.seed)
        partial.rename(out)
        print(f"   built tiny base ({info['parameters']:,} parameters) in {info['seconds']} s")
    return tiny_base.TINY_BASE_ID, out


def validation_products(data_dir: Path, count: int | None) -> dict[str, dict[str, str]]:
    """The true attribute values of the first `count` (None: all) validation products, keyed by product id."""
    from loom.schema import AttributeSchema
    from training.data import read_vqa_csv, values_by_product
    from training.prepare import VAL_FILE

    truth = values_by_product(read_vqa_csv(data_dir / VAL_FILE, AttributeSchema.load(data_dir)))
    return dict(list(truth.items())[:count])


def api_event(image: bytes, path: str = "/describe", **fields) -> dict:
    """An API Gateway HTTP API (payload 2.0) event carrying a JSON body, as the Lambda receives it."""
    body = json.dumps({"image": base64.b64encode(image).decode("ascii"), **fields})
    return {
        "version": "2.0",
        "routeKey": f"POST {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {
            "accountId": "000000000000", "apiId": "local", "domainName": "localhost", "domainPrefix": "local",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                     "userAgent": "loom-demo"},
            "requestId": f"demo-{time.monotonic_ns()}", "routeKey": f"POST {path}", "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()), "timeEpoch": int(time.time() * 1000),
        },
        "body": body,
        "isBase64Encoded": False,
    }


class LambdaContext:
    """The few attributes of a Lambda context object that the handler reads."""

    function_name = "loom-api-local"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:loom-api-local"
    aws_request_id = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def call_api(url: str, images: Path, truth: dict[str, dict[str, str]]) -> list[dict]:
    """Call the same Lambda handler the API runs, in local mode, for each product."""
    # The structured request logs are in serve.log and the summary; keep the terminal readable.
    os.environ.update(ENDPOINT_URL=url, DESCRIPTION_BACKEND="offline", POWERTOOLS_LOG_LEVEL="WARNING",
                      POWERTOOLS_METRICS_DISABLED="true")  # no EMF lines on the terminal
    os.environ.pop("ENDPOINT_NAME", None)
    # With metrics off, Powertools still warns on every flush that it has none to publish.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    from inference.api import handler as gateway

    results = []
    for index, (pid, expected) in enumerate(truth.items()):
        # Every other product comes with the merchant's fabric, as a supplier sheet would give it.
        known = {"Fabric": expected["Fabric"]} if index % 2 and "Fabric" in expected else {}
        fields = {"known_attributes": known} if known else {}
        start = time.perf_counter()
        response = gateway.handler(api_event((images / f"{pid}.jpg").read_bytes(), **fields), LambdaContext())
        latency_ms = (time.perf_counter() - start) * 1000
        body = json.loads(response["body"])
        if response["statusCode"] != 200:
            raise RuntimeError(f"API answered {response['statusCode']} for product {pid}: {body}")
        print(f"\n-- product {pid} ({latency_ms:.0f} ms)")
        print_product(expected, body)
        print(f"   description: {body.get('description')}")
        results.append({"id": pid, "latency_ms": round(latency_ms, 1), "attributes": body.get("attributes", {}),
                        "withheld": body.get("withheld", {}), "sources": body.get("sources", {}),
                        "conflicts": body.get("conflicts", []), "expected": expected,
                        "coverage": body.get("coverage")})
    return results


def print_product(expected: dict[str, str], body: dict) -> None:
    """What was stated (by the model or the merchant) and withheld (with the reason) against the true values."""
    stated, withheld, sources = body.get("attributes", {}), body.get("withheld", {}), body.get("sources", {})
    print(f"   {'attribute':<16}{'true':<20}{'stated':<30}{'withheld (reason, confidence)'}")
    for name in sorted(set(expected) | set(stated) | set(withheld)):
        said = stated.get(name)
        shown = "-" if said is None else f"{said} ({sources.get(name, 'model')})"
        if said is not None and sources.get(name, "model") == "model" and expected.get(name) != said:
            shown += " <- wrong"
        held = withheld.get(name)
        why = "" if held is None else (f"{held['value'] or '-'} ({held['reason']}"
                                       + (f", {held['confidence']:.2f})" if held["confidence"] is not None else ")"))
        print(f"   {name:<16}{expected.get(name, '-'):<20}{shown:<30}{why}")
    for conflict in body.get("conflicts", []):
        print(f"   conflict: {conflict['attribute']}: merchant {conflict['merchant_value']!r}, "
              f"model {conflict['model_value']!r} ({conflict['confidence']:.2f})")


def stated_on_validation(images: Path, truth: dict[str, dict[str, str]], schema) -> dict:
    """Precision and coverage of what the API states (route /attributes) over every validation product."""
    from inference.api import handler as gateway
    from loom.abstention import stated_quality

    results = []
    for pid, expected in truth.items():
        response = gateway.handler(api_event((images / f"{pid}.jpg").read_bytes(), "/attributes"), LambdaContext())
        if response["statusCode"] != 200:
            raise RuntimeError(f"API answered {response['statusCode']} for product {pid}: {response['body']}")
        results.append((expected, json.loads(response["body"])))
    return stated_quality(schema, results)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="loom demo", description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, help="a real catalog folder (default: a synthetic one)")
    parser.add_argument("--base-model", help="a base model id or folder (default: the tiny demo base)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "demo")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache", help="where built tiny bases are kept")
    parser.add_argument("--products", type=int, default=600, help="synthetic catalog size (default 600)")
    parser.add_argument("--base-steps", type=int, default=800, help="caption steps of the tiny base")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--show", type=int, default=5, help="validation products sent through the API")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-search", action="store_true", help="skip the product search stage (tiny CLIP)")
    parser.add_argument("--no-page", action="store_true",
                        help="do not serve the search page at the end (it is served only when run from a terminal)")
    parser.add_argument("--hyperparameters", default="{}", help="JSON object of extra train hyperparameters")
    return parser.parse_args(argv)


def format_accuracy(metrics: dict) -> str:
    """One line per attribute and overall: the fine-tuned exact match beside the baseline's."""
    def pct(x) -> str:
        return "   -" if x is None else f"{100 * x:5.1f}%"

    rows = [*metrics["attributes"].items(), ("overall", metrics["overall"])]
    width = max(len(name) for name, _ in rows)
    lines = [f"   {'attribute':<{width}}  fine-tuned  baseline"]
    lines += [f"   {name:<{width}}  {pct(m['exact_match']):>10}  {pct(m['baseline_exact_match']):>8}" for name, m in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stage = Stages()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    with stage("catalog"):
        if args.catalog:
            catalog = args.catalog.resolve()
            print(f"   using catalog {catalog}")
        else:
            from training.synthetic import write_catalog

            catalog = work / "catalog"
            shutil.rmtree(catalog, ignore_errors=True)
            write_catalog(catalog, products=args.products, seed=args.seed)
            print(f"   wrote a synthetic catalog of {args.products} products to {catalog}")

    with stage("prepare"):
        from training.prepare import format_summary, prepare

        data_dir = work / "data"
        report = prepare(catalog, data_dir, seed=args.seed)
        print(format_summary(report))

    with stage("base model"):
        base_model, base_dir = build_base(args, data_dir, catalog)

    with stage("train, evaluate, merge"):
        from training.tiny_base import TINY_BASE_HYPERPARAMETERS
        from training.train import layout_job

        sm_root = work / "opt_ml"
        shutil.rmtree(sm_root, ignore_errors=True)  # a fresh job: no checkpoint of an earlier run to resume
        hyperparameters = dict(TINY_BASE_HYPERPARAMETERS) if base_dir is not None else {}
        hyperparameters.update(base_model=base_model, device=args.device, seed=str(args.seed))
        hyperparameters.update({k: str(v) for k, v in json.loads(args.hyperparameters).items()})
        paths = layout_job(sm_root, train=data_dir, validation=data_dir, images=catalog / "images",
                           base_model=base_dir, hyperparameters=hyperparameters)
        # The same program SageMaker runs in the training image, with a folder standing in for /opt/ml.
        subprocess.run([sys.executable, "-m", "training.train", "--sm-root", str(sm_root)], check=True)
        model_dir = paths.model
        metrics = read_metrics(model_dir)

    with stage("serve + API"):
        from inference.server.local_server import LocalServer

        truth = validation_products(data_dir, args.show)
        with LocalServer(model_dir, env={"GUNICORN_WORKERS": "1"}, log_path=work / "serve.log") as server:
            server.wait_ready(timeout=300)
            print(f"   serve is healthy at {server.url}")
            results = call_api(server.url, catalog / "images", truth)
            from loom.artifact import read_manifest

            stated = stated_on_validation(catalog / "images", validation_products(data_dir, None),
                                          read_manifest(model_dir)["schema"])

    if not args.no_search:
        with stage("search"):
            # Product search on its own synthetic catalog: tiny CLIP (cached), index, three text queries and
            # a shopper's photo. `make search-demo` also serves the search page.
            subprocess.run([sys.executable, "-m", "operations.cli", "search-demo", "--no-serve",
                            "--work", str(args.cache / "search-demo")], check=True)

    latencies = sorted(r["latency_ms"] for r in results)
    calibration = metrics.get("calibration") or {}
    summary = {
        "accuracy": {name: m["exact_match"] for name, m in metrics["attributes"].items()},
        "baseline_accuracy": {name: m["baseline_exact_match"] for name, m in metrics["attributes"].items()},
        "overall_exact_match": metrics["overall"]["exact_match"],
        # What Loom states over every validation product (API /attributes): precision = right / stated,
        # coverage = right and stated / products carrying the attribute. Thresholds were fitted on this split.
        "stated": {"overall": {k: stated["overall"][k] for k in ("precision", "coverage", "stated", "products")},
                   "attributes": {name: {k: a[k] for k in ("precision", "coverage", "stated", "products")}
                                  for name, a in stated["attributes"].items()}},
        # The thresholds (loom/calibration.py): per attribute, the validation answers stated at its threshold,
        # their precision and its lower confidence bound (what is shown), the coverage, or why it is withheld.
        "calibration": {
            **{k: calibration[k] for k in ("target_precision", "confidence", "min_stated") if k in calibration},
            "attributes": {name: {k: a.get(k) for k in ("threshold", "stated", "examples", "precision", "lower_bound",
                                                         "coverage", "reason")}
                           for name, a in calibration.get("attributes", {}).items()}},
        "api_latency_ms": {"median": latencies[len(latencies) // 2], "max": latencies[-1]} if latencies else {},
        "api_products": len(results),
        "stage_seconds": stage.seconds,
        "total_seconds": round(time.perf_counter() - started, 1),
        "paths": {"catalog": str(catalog), "data": str(data_dir), "model": str(model_dir),
                  "report": str(ArtifactPaths.of(model_dir).report), "server_log": str(work / "serve.log")},
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n== exact match on the validation split: fine-tuned (served model) vs the base model (baseline)")
    print(format_accuracy(metrics))
    if calibration:
        from loom.artifact import read_calibration, read_manifest
        from training.calibrate import format_calibration

        print("\n== what Loom states: per attribute, the threshold, the validation answers it states, their precision "
              "and its lower bound, coverage")
        print(format_calibration(read_calibration(model_dir, read_manifest(model_dir))))
    print("\n== summary")
    print(json.dumps(summary, indent=2))
    if not args.no_search and sys.stdin.isatty() and not args.no_page:
        # A person at a terminal: serve the search page (the queries run again against the cached model).
        print("\n== search page (Ctrl-C stops it)", flush=True)
        page = subprocess.Popen([sys.executable, "-m", "operations.cli", "search-demo", "--work",
                                 str(args.cache / "search-demo")])
        try:
            page.wait()
        except KeyboardInterrupt:  # the page got the same Ctrl-C: let it stop its server before we exit
            with contextlib.suppress(KeyboardInterrupt):
                page.wait(timeout=60)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; the server (if started) was stopped", file=sys.stderr)
        sys.exit(130)
    except (subprocess.CalledProcessError, RuntimeError, TimeoutError) as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        sys.exit(1)
