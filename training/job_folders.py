"""The folders SageMaker gives a training job: the one place their names are written down.

Both sides use it: the `train` program reads these folders inside the job (training/train.py), and the
launcher names the same channels and checkpoint folder in CreateTrainingJob (operations/launch.py).
https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-training-algo-running-container.html
"""

from __future__ import annotations

from pathlib import PurePosixPath

SM_ROOT = PurePosixPath("/opt/ml")
# Input channels: /opt/ml/input/data/<channel>. `base_model` is optional (else the hub id is loaded).
TRAIN_CHANNEL = "train"
VALIDATION_CHANNEL = "validation"
IMAGES_CHANNEL = "images"
BASE_MODEL_CHANNEL = "base_model"
# Optional: a CLIP artifact whose zero-shot tags are scored beside BLIP-2 (training/search/clip_baseline.py).
CLIP_CHANNEL = "clip"
CHANNELS = (TRAIN_CHANNEL, VALIDATION_CHANNEL, IMAGES_CHANNEL, BASE_MODEL_CHANNEL, CLIP_CHANNEL)
# Other channel names the `train` program reads, when the channel itself is not given: the fashion post's
# training job names its channels {"images": ..., "input_file": ...} (the CSV in input_file).
CHANNEL_ALIASES = {"input_file": TRAIN_CHANNEL}
# Managed spot training syncs this folder with CheckpointConfig.S3Uri.
CHECKPOINTS_DIR = SM_ROOT / "checkpoints"
