"""The predictor under the server's threads: Blip2Processor changes its fast tokenizer's padding and
truncation state on every call, so concurrent calls on one shared processor raised sporadic ValueErrors
(issue 12, item 8: 6 of 1,200 calls with a T5-style Unigram tokenizer; FACTS.md). Preprocessing now runs
outside the model lock, in each request thread, on that thread's own copy of the processor (issue 22,
item 3). This test runs the production tokenizer (the artifact's T5Tokenizer on a `tokenizers` Unigram
model) from 4 threads at once, checks that no two threads ever share a tokenizer, that calls really
overlap (preprocessing is not serialised), and that every answer is right."""

from __future__ import annotations

import threading
import time

from PIL import Image
from tokenizers.models import Unigram

from inference.server.predictor import Predictor


def test_preprocessing_in_concurrent_threads_uses_one_tokenizer_per_thread(untrained_artifact):
    predictor = Predictor.load(untrained_artifact)
    assert isinstance(predictor.processor.tokenizer.backend_tokenizer.model, Unigram)  # the production kind
    questions = [predictor.schema.question(name) for name in predictor.schema.names]
    images = [Image.new("RGB", (64, 64), (40 * n, 90, 200 - 40 * n)) for n in range(4)]
    # Questions of different lengths: "longest" padding differs from call to call.
    work = [(images[n % 4], questions[: 1 + n % len(questions)]) for n in range(8)]
    expected = [predictor.generate_many([item], max_new_tokens=2)[0] for item in work]
    errors, mismatches, tokenizers = [], [], {}
    active, overlaps, count_lock = [0], [0], threading.Lock()
    start = threading.Barrier(4)

    def run(offset: int) -> None:
        start.wait(10)
        for n in range(40):
            index = (offset + n) % len(work)
            try:
                with count_lock:
                    active[0] += 1
                    overlaps[0] += active[0] > 1
                try:
                    rows = predictor.question_rows(*work[index])  # image preprocessing and tokenisation
                    time.sleep(0.001)  # widen the window in which another thread preprocesses
                finally:
                    with count_lock:
                        active[0] -= 1
                answers = predictor.answer_rows([rows], max_new_tokens=2)[0]
            except Exception as exc:  # noqa: BLE001 - any error is the failure being tested
                errors.append(repr(exc))
                continue
            tokenizers.setdefault(threading.get_ident(), set()).add(id(predictor.thread_processor().tokenizer))
            if [a.token_ids for a in answers] != [a.token_ids for a in expected[index]]:
                mismatches.append(index)

    threads = [threading.Thread(target=run, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert (errors, mismatches) == ([], [])
    assert overlaps[0] > 0  # preprocessing really ran concurrently
    per_thread = list(tokenizers.values())
    assert len(per_thread) == 4 and all(len(ids) == 1 for ids in per_thread)  # one copy per thread...
    assert len(set.union(*per_thread)) == 4  # ...never shared
    assert id(predictor.processor.tokenizer) not in set.union(*per_thread)
