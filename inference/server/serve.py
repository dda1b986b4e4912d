"""`serve`: the SageMaker inference program. gunicorn + the Flask app, one model-holding worker per GPU.

    serve [--bind HOST:PORT] [--model-dir DIR] [--workers N] [--threads N]

SageMaker runs `serve` with no arguments; everything is configured by environment variables
(docs/inference.md lists them). Each worker builds the app after the fork and loads the model in a
background thread, so `/ping` answers 503 until that worker's model is ready and gunicorn's heartbeat
never waits on a long load. Workers are never one per CPU: each holds its own ~8 GB copy of the model.
Inside a worker, model calls run on one model thread behind a bounded queue (model_queue.py), so that
the request threads left over always answer `/ping` at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from inference.server.app import ServerLimits
from runtime.images import DEFAULT_DECODE_THREADS, DEFAULT_MAX_IMAGE_PIXELS
from loom.artifact import KIND_CLIP, MANIFEST_FILE, is_artifact, manifest_kind

SAGEMAKER_MODEL_DIR = "/opt/ml/model"
BAKED_MODEL_DIR = "/opt/loom/model"  # where containers/inference/Dockerfile bakes an artifact in


def visible_gpus(env: Mapping[str, str] = os.environ) -> list[str]:
    """The GPU ids this process may use, without importing torch (the master must not touch CUDA)."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        return [] if ids in ([], ["-1"]) else ids
    gpus = Path("/proc/driver/nvidia/gpus")
    return [str(i) for i in range(len(list(gpus.iterdir())))] if gpus.is_dir() else []


def resolve_model_dir(env: Mapping[str, str] = os.environ) -> Path:
    """SM_MODEL_DIR when set; else /opt/ml/model when it holds an artifact; else the artifact baked in."""
    if env.get("SM_MODEL_DIR"):
        return Path(env["SM_MODEL_DIR"])
    sagemaker = Path(SAGEMAKER_MODEL_DIR)
    baked = Path(env.get("LOOM_BAKED_MODEL_DIR", BAKED_MODEL_DIR))
    if not is_artifact(sagemaker) and is_artifact(baked):
        return baked
    return sagemaker


def _number(env: Mapping[str, str], name: str, default: float, kind=int, minimum: float = 0):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SystemExit(f"serve: {name}={raw!r} is not a {kind.__name__}") from None
    if value < minimum:
        raise SystemExit(f"serve: {name}={raw!r} must be at least {minimum}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in choices:
        raise SystemExit(f"serve: {name}={env.get(name)!r} must be one of {', '.join(choices)}")
    return value


DEFAULT_MAX_PENDING = 100
DECODING_MODES = ("auto", "eager", "compiled")  # runtime.decoding.MODES, without importing torch
SAGEMAKER_SIGKILL_AFTER_S = 30  # SageMaker sends SIGKILL this long after SIGTERM (docs/endpoint-contract.md)
SPARE_THREADS = 4  # request threads never admitted to the model: /ping, /execution-parameters, 503 refusals
# On SIGTERM, every admitted request is answered this long before gunicorn's graceful timeout ends the
# worker: time to write the lines done so far and an error line for each other (never a dropped connection).
STOP_MARGIN_S = 2.0


@dataclass
class ServeSettings:
    """Everything `serve` reads from its environment, as typed values."""

    model_dir: Path
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    threads: int = DEFAULT_MAX_PENDING + SPARE_THREADS
    timeout_s: int = 120
    graceful_timeout_s: int = 25
    keepalive_s: int = 75
    limits: ServerLimits = field(default_factory=ServerLimits)
    device: str | None = None
    decoding: str = "auto"  # compiled decoding on GPUs, eager elsewhere (runtime/decoding.py)
    gpus: list[str] = field(default_factory=list)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "ServeSettings":
        gpus = visible_gpus(env)
        # 100 admitted requests, as TorchServe's and MMS's job_queue_size (the servers of the SageMaker
        # inference toolkit, which leaves it at its default: pytorch/serve docs/configuration.md), so that a
        # burst fills batches instead of being refused (docs/endpoint-contract.md, "Back-pressure").
        max_pending = _number(env, "MAX_PENDING_REQUESTS", DEFAULT_MAX_PENDING, minimum=1)
        threads = _number(env, "GUNICORN_THREADS", max_pending + SPARE_THREADS, minimum=1)
        if threads <= max_pending:
            raise SystemExit(f"serve: GUNICORN_THREADS={threads} must exceed MAX_PENDING_REQUESTS={max_pending}: "
                             f"the threads beyond it answer /ping while every admitted request waits for the model")
        graceful = _number(env, "GUNICORN_GRACEFUL_TIMEOUT", 25, minimum=1)
        if graceful >= SAGEMAKER_SIGKILL_AFTER_S:
            raise SystemExit(f"serve: GUNICORN_GRACEFUL_TIMEOUT={graceful} must be under "
                             f"{SAGEMAKER_SIGKILL_AFTER_S} s: "
                             f"SageMaker sends SIGKILL {SAGEMAKER_SIGKILL_AFTER_S} s after SIGTERM")
        # Batch Transform sets SAGEMAKER_MAX_PAYLOAD_IN_MB to the largest body it will send: take at least that.
        body_mb = max(_number(env, "MAX_BODY_MB", 20.0, float, minimum=0.001),
                      _number(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB", 0.0, float))
        request_timeout = _number(env, "REQUEST_TIMEOUT_S", 60.0, float, minimum=0.001)
        workers = _number(env, "GUNICORN_WORKERS", max(1, len(gpus)), minimum=1)
        limits = ServerLimits(
            max_body_bytes=int(body_mb * 1024 * 1024),
            max_image_pixels=_number(env, "MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS, minimum=1),
            # BATCH_PRODUCTS: the earlier name, when it only sized JSON Lines batches.
            batch_products=_number(env, "MAX_BATCH_PRODUCTS", _number(env, "BATCH_PRODUCTS", 16, minimum=1),
                                   minimum=1),
            batch_wait_ms=_number(env, "BATCH_WAIT_MS", 0.0, float, minimum=0),
            max_pending=max_pending,
            request_timeout_s=request_timeout,
            stuck_after_s=_number(env, "MODEL_STUCK_AFTER_S", max(300.0, request_timeout), float, minimum=0.001),
            load_timeout_s=_number(env, "MODEL_LOAD_TIMEOUT", 900.0, float, minimum=1),
            workers=workers,
            decode_threads=_number(env, "IMAGE_DECODE_THREADS", DEFAULT_DECODE_THREADS, minimum=1),
        )
        return cls(
            model_dir=resolve_model_dir(env),
            host=env.get("SERVE_HOST", "0.0.0.0"),
            port=_number(env, "SAGEMAKER_BIND_TO_PORT", 8080, minimum=1),
            workers=workers,
            threads=threads,
            timeout_s=_number(env, "GUNICORN_TIMEOUT", 120, minimum=1),
            graceful_timeout_s=graceful,
            keepalive_s=_number(env, "GUNICORN_KEEPALIVE", 75, minimum=0),
            limits=limits,
            device=env.get("SERVE_DEVICE") or None,
            decoding=_choice(env, "DECODING", "auto", DECODING_MODES),
            gpus=gpus,
        )


def load_predictor(settings: ServeSettings):
    """Load the predictor (called in the worker's loader thread; torch is imported here, not in the master)."""
    if manifest_kind(settings.model_dir) == KIND_CLIP:  # search hook: a CLIP artifact (runtime/clip_service.py)
        from runtime.clip_service import ClipService

        service = ClipService.load(settings.model_dir, device=settings.device)
        service.warm_up()
        return service
    from runtime.predictor import Predictor

    predictor = Predictor.load(settings.model_dir, device=settings.device, decoding=settings.decoding)
    predictor.warm_up(max_products=settings.limits.batch_products)
    return predictor


def wsgi_app(settings: ServeSettings | None = None):
    """Build one worker's app: it starts loading the model at once and reports 503 until it is ready."""
    from inference.server.app import create_app

    settings = settings or ServeSettings.from_env()
    return create_app(predictor_factory=lambda: load_predictor(settings),
                      limits=dataclasses.replace(settings.limits, workers=settings.workers))


def _pre_fork(server, worker) -> None:
    # Runs in the master: give the new worker a GPU no live worker holds (respawns reuse the freed one).
    gpus = getattr(server.app, "loom_gpus", [])
    taken = {getattr(w, "loom_gpu", None) for w in server.WORKERS.values()}
    worker.loom_gpu = next((g for g in gpus if g not in taken), None)


def _post_fork(server, worker) -> None:
    if getattr(worker, "loom_gpu", None) is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = worker.loom_gpu
    server.log.info("worker %s uses GPU %s", worker.pid, getattr(worker, "loom_gpu", None) or "none")


def stop_window_s(graceful_timeout_s: float) -> float:
    """How long a stopping worker's admitted requests have: the graceful timeout less STOP_MARGIN_S (at
    least a quarter of it)."""
    return max(graceful_timeout_s / 4, graceful_timeout_s - STOP_MARGIN_S)


def _post_worker_init(worker) -> None:
    # gunicorn's worker has installed its own SIGTERM handler (stop accepting, wait up to graceful_timeout for
    # the connections in flight, exit); a request still running then is cut off. Wrap that handler: first
    # bring every admitted request's deadline forward (model_queue.ModelQueue.stop), so that each is
    # answered (in full, or the lines done and an error line for each other, or 503) before the worker exits.
    previous = signal.getsignal(signal.SIGTERM)
    queue = worker.wsgi.extensions["loom"].queue
    within_s = stop_window_s(worker.cfg.graceful_timeout)

    def on_sigterm(signum, frame):
        queue.stop(within_s)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def gunicorn_options(settings: ServeSettings) -> dict[str, Any]:
    """The gunicorn configuration `serve` runs with."""
    return {
        "bind": [f"{settings.host}:{settings.port}"],
        "workers": settings.workers,
        "worker_class": "gthread",
        # MAX_PENDING_REQUESTS threads may wait for the model; the SPARE_THREADS beyond them answer /ping.
        "threads": settings.threads,
        "timeout": settings.timeout_s,
        "graceful_timeout": settings.graceful_timeout_s,
        "keepalive": settings.keepalive_s,
        "preload_app": False,  # the model must be loaded after the fork, once per worker
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": "info",
        "control_socket_disable": True,  # no runtime control socket in a serving container
        "pre_fork": _pre_fork,
        "post_fork": _post_fork,
        "post_worker_init": _post_worker_init,
    }


def _application_class():
    from gunicorn.app.base import BaseApplication

    class LoomServer(BaseApplication):
        def __init__(self, settings: ServeSettings):
            self.settings = settings
            self.loom_gpus = settings.gpus[: settings.workers] if len(settings.gpus) >= settings.workers else []
            super().__init__()

        def load_config(self):
            for key, value in gunicorn_options(self.settings).items():
                self.cfg.set(key, value)

        def load(self):
            return wsgi_app(self.settings)

    return LoomServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve", description=__doc__.splitlines()[0])
    parser.add_argument("--bind", help="HOST:PORT (default $SERVE_HOST:$SAGEMAKER_BIND_TO_PORT, 0.0.0.0:8080)")
    parser.add_argument("--model-dir", type=Path, help="artifact folder (default $SM_MODEL_DIR, /opt/ml/model)")
    parser.add_argument("--workers", type=int, help="worker processes (default $GUNICORN_WORKERS, GPU count)")
    parser.add_argument("--threads", type=int, help="threads per worker (default $GUNICORN_THREADS, "
                        "MAX_PENDING_REQUESTS + 4)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    settings = ServeSettings.from_env()
    if args.bind:
        host, _, port = args.bind.rpartition(":")
        settings.host, settings.port = host or settings.host, int(port)
    if args.model_dir:
        settings.model_dir = args.model_dir
    if args.workers:
        settings.workers = args.workers
    if args.threads:
        settings.threads = args.threads
    if settings.threads <= settings.limits.max_pending:
        print(f"serve: {settings.threads} threads must exceed MAX_PENDING_REQUESTS={settings.limits.max_pending}",
              file=sys.stderr)
        return 2
    if not is_artifact(settings.model_dir):
        print(f"serve: {settings.model_dir} holds no {MANIFEST_FILE}: set SM_MODEL_DIR to a Loom model folder",
              file=sys.stderr)
        return 2
    logging.getLogger("loom.serve").info(
        "serving %s on %s:%d with %d worker(s) x %d threads", settings.model_dir, settings.host, settings.port,
        settings.workers, settings.threads)
    _application_class()(settings).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
