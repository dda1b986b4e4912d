"""The training image's package: catalog to VQA data, LoRA fine-tuning, evaluation, calibration, merge."""

import logging

# peft imports bitsandbytes, whose CPU backend logs a warning on every import that an optional package for
# 4-bit CPU kernels is missing. Loom never runs 4-bit layers; its 8-bit option does not use that kernel.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
