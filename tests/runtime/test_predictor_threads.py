"""The predictor under the server's threads: Blip2Processor changes its fast tokenizer's padding and
truncation state on every call, so concurrent calls on one shared processor raised sporadic ValueErrors
(issue 12, item 8: 6 of 1,200 calls with a T5-style Unigram tokenizer; FACTS.md). Preprocessing now runs
outside the model lock, in each request thread, on that thread's own copy of the processor (issue 22,
item 3), on a copy of the processor that no other thread uses meanwhile. This test runs the production
tokenizer (the artifact's T5Tokenizer on a `tokenizers` Unigram model) from 4 threads at once, records
which processor each call used, and checks that no processor ever serves two calls at once, that calls
really overlap (preprocessing is not serialised), that copies are reused (at most one per concurrent call,
never the shared one) and that every answer is right."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

from PIL import Image
from tokenizers.models import Unigram

from runtime.predictor import Predictor


def test_preprocessing_in_concurrent_threads_never_shares_a_tokenizer(untrained_artifact):
    predictor = Predictor.load(untrained_artifact)
    assert isinstance(predictor.processor.tokenizer.backend_tokenizer.model, Unigram)  # the production kind
    questions = [predictor.schema.question(name) for name in predictor.schema.names]
    images = [Image.new("RGB", (64, 64), (40 * n, 90, 200 - 40 * n)) for n in range(4)]
    # Questions of different lengths: "longest" padding differs from call to call.
    work = [(images[n % 4], questions[: 1 + n % len(questions)]) for n in range(8)]
    expected = [predictor.generate_many([item], max_new_tokens=2)[0] for item in work]
    errors, mismatches, used, in_use = [], [], set(), {}
    counts = {"overlaps": 0, "shared": 0}
    count_lock = threading.Lock()
    borrow = predictor.borrowed_processor

    @contextmanager
    def recording_borrow():
        with borrow() as processor:
            with count_lock:
                counts["overlaps"] += bool(in_use)
                counts["shared"] += in_use.get(id(processor), 0)
                in_use[id(processor)] = in_use.get(id(processor), 0) + 1
                used.add(id(processor))
            try:
                time.sleep(0.001)  # widen the window in which another thread preprocesses
                yield processor
            finally:
                with count_lock:
                    in_use[id(processor)] -= 1
                    if not in_use[id(processor)]:
                        del in_use[id(processor)]

    predictor.borrowed_processor = recording_borrow
    start = threading.Barrier(4)

    def run(offset: int) -> None:
        start.wait(10)
        for n in range(40):
            index = (offset + n) % len(work)
            try:
                rows = predictor.question_rows(*work[index])  # image preprocessing and tokenisation
                answers = predictor.answer_rows([rows], max_new_tokens=2)[0]
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
    assert (errors, mismatches) == ([], [])
    assert counts["shared"] == 0  # no processor ever served two calls at once
    assert counts["overlaps"] > 0  # preprocessing really ran concurrently, outside any lock
    assert 1 <= len(used) <= 5 and id(predictor.processor) not in used  # reused copies, never the shared one
