"""Decoding the answers: transformers' eager `generate`, or a static KV cache with a compiled decoder step.

Eager `generate` on a GPU is host-bound: each decoder step of Flan-T5-XL issues about 1,300 small GPU ops
and syncs the host twice, so the GPU idles between launches (FACTS.md, "Serving cost on the real
architecture"). In `compiled` mode the decoder step runs on a static cache through `torch.compile` (mode
"reduce-overhead", which replays CUDA graphs), and every call is padded to a few shapes so that compilation
happens a bounded number of times:

- rows (products x questions) to the next of 8, 12, 16, 24, 32, 48, 64, ... (at most a third wasted;
  the extra rows repeat row 0 and are dropped);
- the encoder length to a multiple of `LENGTH_STEP` (the extra positions are masked out);
- the decoder cache to a multiple of `LENGTH_STEP` tokens.

transformers 5.x builds the static caches of an encoder-decoder model lazily, inside the first captured
decoder step, and CUDA graphs then overwrite them ("accessing tensor output of CUDAGraphs that has been
overwritten by a subsequent run": huggingface/transformers PR 48199, whose fix, initialising both the
self-attention and the cross-attention cache before any capture, is not in 5.23's
`_prepare_static_cache`). Here both caches are built and initialised before the first call, once per shape,
and reset before every generation.

Whatever goes wrong (an exception while compiling or running, or answers that differ from the eager ones
when `verify` checks them at warm-up) turns compiled decoding off for the rest of the process, with the
reason in `failure`, and the call is answered eagerly. Beam search always decodes eagerly.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger("loom.serve")

MODES = ("auto", "eager", "compiled")
LENGTH_STEP = 16


def resolve_mode(mode: str, device: torch.device) -> str:
    """"auto": compiled on CUDA, eager elsewhere (compiling on CPU costs minutes and gains little)."""
    if mode not in MODES:
        raise ValueError(f"decoding mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "auto":
        return "compiled" if device.type == "cuda" else "eager"
    return mode


def row_bucket(rows: int) -> int:
    """The padded row count: the next of 8, 12, 16, 24, 32, 48, ... (2^k and 1.5 x 2^k)."""
    size = 8
    while True:
        for candidate in (size, size * 3 // 2):
            if rows <= candidate:
                return candidate
        size *= 2


def round_up(value: int, step: int = LENGTH_STEP) -> int:
    return -(-value // step) * step


def default_compile_config():
    from transformers import CompileConfig

    return CompileConfig(fullgraph=False, dynamic=False, mode="reduce-overhead")


class Decoder:
    """Generates the answers of a batch of encoder inputs, eagerly or with the compiled decoder step."""

    def __init__(self, language_model, mode: str = "eager", compile_config: Any = None):
        self.lm = language_model
        self.mode = mode if mode in ("eager", "compiled") else resolve_mode(mode, language_model.device)
        self.compile_config = compile_config  # None: default_compile_config() on first use
        self.failure: str | None = None  # why compiled decoding was turned off
        self._caches: dict[tuple[int, int, int], Any] = {}
        if self.mode == "compiled":
            import torch._dynamo

            # Each padded shape is one compilation; the default limit (8) would silently stop compiling.
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)

    def generate(self, embeds: torch.Tensor, mask: torch.Tensor, *, max_new_tokens: int,
                 num_beams: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(sequences with the decoder start token, per-token log-probabilities), one row per input row,
        both still on the model's device."""
        if self.mode == "compiled" and num_beams == 1:
            try:
                return self._compiled(embeds, mask, max_new_tokens)
            except Exception as exc:  # noqa: BLE001 - any failure of the compiled path falls back to eager
                self.turn_off(f"{type(exc).__name__}: {str(exc)[:300]}")
        return self._eager(embeds, mask, max_new_tokens, num_beams)

    def turn_off(self, reason: str) -> None:
        log.warning("compiled decoding is off for this process, answering eagerly: %s", reason)
        self.mode, self.failure = "eager", reason
        self._caches.clear()

    def verify(self, embeds: torch.Tensor, mask: torch.Tensor, max_new_tokens: int) -> bool:
        """Compile for this shape and compare with eager decoding; turn compiled decoding off on a mismatch."""
        if self.mode != "compiled":
            return False
        eager_ids = self._eager(embeds, mask, max_new_tokens, 1)[0]
        compiled_ids = self.generate(embeds, mask, max_new_tokens=max_new_tokens)[0]
        if self.mode != "compiled":  # it raised and fell back
            return False
        if not _same_answers(eager_ids, compiled_ids, self.lm.generation_config.pad_token_id):
            self.turn_off("compiled answers differ from eager answers at warm-up")
            return False
        return True

    # -- the two ways --------------------------------------------------------------------------------------

    def _eager(self, embeds, mask, max_new_tokens, num_beams):
        out = self.lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                               num_beams=num_beams, do_sample=False, output_scores=True, return_dict_in_generate=True)
        return out.sequences, self._logprobs(out)

    def _compiled(self, embeds, mask, max_new_tokens):
        rows, length, width = embeds.shape
        padded_rows, padded_length = row_bucket(rows), round_up(length)
        if padded_rows > rows:  # extra rows repeat row 0: they decode exactly as long as it does
            extra = padded_rows - rows
            embeds = torch.cat([embeds, embeds[:1].expand(extra, -1, -1)])
            mask = torch.cat([mask, mask[:1].expand(extra, -1)])
        if padded_length > length:  # masked positions: no real position attends to them
            embeds = torch.cat([embeds, embeds.new_zeros(padded_rows, padded_length - length, width)], dim=1)
            mask = torch.cat([mask, mask.new_zeros(padded_rows, padded_length - length)], dim=1)
        cache = self._cache(padded_rows, padded_length, round_up(max_new_tokens + 1))
        cache.reset()
        config = self.compile_config or default_compile_config()
        out = self.lm.generate(inputs_embeds=embeds, attention_mask=mask, past_key_values=cache,
                               max_new_tokens=max_new_tokens, num_beams=1, do_sample=False, output_scores=True,
                               return_dict_in_generate=True, compile_config=config)
        # Copies out of the graph-owned cache memory before the next replay can overwrite anything.
        return out.sequences[:rows].clone(), self._logprobs(out)[:rows].clone()

    def _cache(self, rows: int, encoder_length: int, decoder_length: int):
        """Both static caches for this shape, initialised before any capture (see the module docstring)."""
        key = (rows, encoder_length, decoder_length)
        if key not in self._caches:
            from transformers.cache_utils import EncoderDecoderCache, StaticCache

            config = self.lm.config.get_text_config(decoder=True)
            caches = [StaticCache(config=config, max_cache_len=decoder_length),
                      StaticCache(config=config, max_cache_len=encoder_length)]
            for cache in caches:
                cache.early_initialization(batch_size=rows, num_heads=config.num_heads, head_dim=config.d_kv,
                                           dtype=self.lm.dtype, device=self.lm.device)
            self._caches[key] = EncoderDecoderCache(*caches)
        return self._caches[key]

    def _logprobs(self, out) -> torch.Tensor:
        return self.lm.compute_transition_scores(out.sequences, out.scores, getattr(out, "beam_indices", None),
                                                 normalize_logits=True)


def _same_answers(a: torch.Tensor, b: torch.Tensor, pad: int | None) -> bool:
    def rows(ids: torch.Tensor) -> list[list[int]]:
        return [[t for t in row if t != pad] for row in ids.tolist()]

    return rows(a) == rows(b)
