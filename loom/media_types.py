"""The media types of Loom's wire formats, one owner for each (standard library only).

JSON Lines has no registered media type; SageMaker Batch Transform and Async Inference pass whatever the job
names, and Loom names `application/jsonlines` (docs/endpoint-contract.md). The server also reads the two
spellings other tools use.
"""

from __future__ import annotations

JSON_TYPE = "application/json"
JSONLINES_TYPE = "application/jsonlines"
JSONLINES_TYPES = frozenset({JSONLINES_TYPE, "application/x-jsonlines", "application/jsonl"})
