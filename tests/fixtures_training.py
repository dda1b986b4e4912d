"""Session fixture `trained_artifact`: a tiny BLIP-2 fine-tuned end to end through the `train` program.

Registered in conftest.py (`pytest_plugins = ["fixtures_training"]`) so that every test can reuse it:
the Lambda end-to-end tests, the demo and the report tests get a real, trained model artifact.
Building it takes about a minute on 2 quiet cores (tiny base ~35 s, LoRA 300 steps, evaluation, merge).
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Enough products that validation holds ~110 answers per attribute: showing precision >= 0.95 with 95 %
# confidence takes at least 59 stated answers, all right (loom/calibration.py); 320 products gave 57.
TRAINED_CATALOG_PRODUCTS = 600
TRAINED_CATALOG_SEED = 11


@dataclass(frozen=True)
class TrainedArtifact:
    """What the fixture built; every path is a folder."""

    model_dir: Path          # the artifact: merged model + processor + loom_manifest.json + metrics.json + evaluation/
    catalog_dir: Path        # the synthetic catalog (styles.csv, styles/, images/)
    data_dir: Path           # training.prepare output: vqa_train.csv, vqa_val.csv, attribute_schema.json
    base_dir: Path           # the tiny base model (save_pretrained folder)
    sm_root: Path            # the stand-in for /opt/ml the job ran in (checkpoints/, output/data/adapter/)
    adapter_dir: Path        # the LoRA adapter before merging
    metrics: dict[str, Any] = field(default_factory=dict)
    log: str = ""            # everything the train program printed


@pytest.fixture(scope="session")
def trained_artifact(tmp_path_factory) -> TrainedArtifact:
    import json

    from loom.schema import DEFAULT_ATTRIBUTES, AttributeSchema
    from training import tiny_base
    from training.tiny_base import TINY_BASE_HYPERPARAMETERS
    from training.prepare import prepare
    from training.synthetic import write_catalog
    from training.train import layout_job, main

    root = tmp_path_factory.mktemp("trained_artifact")
    catalog = root / "catalog"
    write_catalog(catalog, products=TRAINED_CATALOG_PRODUCTS, seed=TRAINED_CATALOG_SEED)
    data = root / "prepared"
    prepare(catalog, data, attributes=DEFAULT_ATTRIBUTES, article_types=("Shirts", "Tshirts"),
            val_fraction=0.2, seed=0)
    base = root / "tiny_base"
    schema = AttributeSchema.from_names(DEFAULT_ATTRIBUTES)
    tiny_base.build_tiny_base(base, schema, tiny_base.catalog_values(catalog, DEFAULT_ATTRIBUTES), seed=0)

    sm_root = root / "opt_ml"
    layout_job(sm_root, train=data, validation=data, images=catalog / "images", base_model=base,
               hyperparameters={**TINY_BASE_HYPERPARAMETERS, "device": "cpu"})
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["--sm-root", str(sm_root)])
    failure = sm_root / "output" / "failure"
    assert code == 0, f"train failed ({failure.read_text() if failure.exists() else 'no failure file'}):\n{out.getvalue()}"
    model_dir = sm_root / "model"
    return TrainedArtifact(model_dir=model_dir, catalog_dir=catalog, data_dir=data, base_dir=base, sm_root=sm_root,
                           adapter_dir=sm_root / "output" / "data" / "adapter",
                           metrics=json.loads((model_dir / "metrics.json").read_text()), log=out.getvalue())


@pytest.fixture(scope="session")
def trained_server(trained_artifact, tmp_path_factory):
    """The `serve` program on 127.0.0.1 with the trained artifact, started once for the tests that call it as
    a client would (the design documents' snippets, the SageMaker SDK's predictor)."""
    from inference.server.local_server import LocalServer

    with LocalServer(trained_artifact.model_dir,
                     log_path=tmp_path_factory.mktemp("trained_serve") / "serve.log") as running:
        running.wait_ready(180)
        yield running
