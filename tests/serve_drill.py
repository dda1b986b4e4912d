"""`serve` with a test-only predictor wrapper: the real program, gunicorn and app, with faults on demand.

    python tests/serve_drill.py --bind 127.0.0.1:PORT      (environment as for `serve`, plus:)

    DRILL_LOAD_DELAY_S   sleep this long before loading the model (the 503-while-loading window)
    DRILL_SLOW_S         every batched generation first sleeps this long (deadlines, SIGTERM drills)
    DRILL_POISON_SIZE    WxH: a generation whose batch holds an image of that size raises RuntimeError

None of this ships in the serving image: it wraps `inference.server.serve.load_predictor` from here.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.server import serve  # noqa: E402

_load = serve.load_predictor


class DrillPredictor:
    """The real predictor, slowed down or made to fail on one image size."""

    def __init__(self, predictor, slow_s: float, poison: tuple[int, int] | None):
        self._predictor, self._slow_s, self._poison = predictor, slow_s, poison

    def __getattr__(self, name):
        return getattr(self._predictor, name)

    def answer_attributes_many(self, items, **params):
        time.sleep(self._slow_s)
        images = [getattr(item, "image", None) or item[0] for item in items]  # prepared products or tuples
        if self._poison and any(image.size == self._poison for image in images):
            raise RuntimeError(f"drill: the model fails on {self._poison} images")
        return self._predictor.answer_attributes_many(items, **params)

    def answer_attributes(self, image, attributes=None, facts=None, **params):
        return self.answer_attributes_many([(image, attributes, facts)], **params)[0]


def load_drill_predictor(settings):
    time.sleep(float(os.environ.get("DRILL_LOAD_DELAY_S", "0")))
    poison = os.environ.get("DRILL_POISON_SIZE")
    size = tuple(int(v) for v in poison.split("x")) if poison else None
    return DrillPredictor(_load(settings), float(os.environ.get("DRILL_SLOW_S", "0")), size)


if __name__ == "__main__":
    serve.load_predictor = load_drill_predictor  # looked up when each worker loads, after the fork
    sys.exit(serve.main())
