"""The predictor under the server's threads: Blip2Processor changes the shared fast tokenizer's padding and
truncation state on every call, so concurrent calls from request threads raised sporadic ValueErrors
(issue 12, item 8: 6 of 1,200 calls with a T5-style Unigram tokenizer). The predictor now calls the
processor under its model lock. This test runs the production tokenizer (the artifact's T5Tokenizer on a
`tokenizers` Unigram model) from 4 threads, with a processor that records any overlap of two calls."""

from __future__ import annotations

import threading
import time

from PIL import Image
from tokenizers.models import Unigram

from runtime.predictor import Predictor


class OverlapRecorder:
    """Wraps the processor: counts calls that start while another is still running (they must not)."""

    def __init__(self, processor):
        self._processor = processor
        self._active = 0
        self._count_lock = threading.Lock()
        self.overlaps = 0
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._processor, name)

    def __call__(self, *args, **kwargs):
        with self._count_lock:
            self._active += 1
            self.calls += 1
            self.overlaps += self._active > 1
        try:
            time.sleep(0.002)  # widen the window in which an unlocked second call would overlap
            return self._processor(*args, **kwargs)
        finally:
            with self._count_lock:
                self._active -= 1


def test_preprocessing_is_serialised_under_the_servers_threads(untrained_artifact):
    predictor = Predictor.load(untrained_artifact)
    assert isinstance(predictor.processor.tokenizer.backend_tokenizer.model, Unigram)  # the production kind
    questions = [predictor.schema.question(name) for name in predictor.schema.names]
    images = [Image.new("RGB", (64, 64), (40 * n, 90, 200 - 40 * n)) for n in range(4)]
    # Questions of different lengths: "longest" padding differs from call to call.
    work = [(images[n % 4], questions[: 1 + n % len(questions)]) for n in range(8)]
    expected = [predictor.generate_many([item], max_new_tokens=2)[0] for item in work]
    predictor.processor = recorder = OverlapRecorder(predictor.processor)
    errors, mismatches = [], []

    def run(offset: int) -> None:
        for n in range(40):
            index = (offset + n) % len(work)
            try:
                answers = predictor.generate_many([work[index]], max_new_tokens=2)[0]
            except Exception as exc:  # noqa: BLE001 - any error is the failure being tested
                errors.append(repr(exc))
                continue
            if [a.token_ids for a in answers] != [a.token_ids for a in expected[index]]:
                mismatches.append(index)

    threads = [threading.Thread(target=run, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert recorder.calls == 160
    assert (errors, mismatches, recorder.overlaps) == ([], [], 0)
