"""The SageMaker bring-your-own-container contract of the `train` program: folders, SM_* variables,
the failure file and exit codes. (The full successful run is in test_train_integration.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from training.train import JobPaths, layout_job, main

ROOT = Path(__file__).resolve().parents[2]


def test_paths_under_a_local_root(tmp_path):
    paths = JobPaths.resolve(tmp_path, env={"SM_MODEL_DIR": "/elsewhere"})  # an explicit root ignores SM_*
    assert paths.hyperparameters == tmp_path / "input/config/hyperparameters.json"
    assert paths.train == tmp_path / "input/data/train"
    assert paths.validation == tmp_path / "input/data/validation"
    assert paths.images == tmp_path / "input/data/images"
    assert paths.base_model == tmp_path / "input/data/base_model"
    assert paths.model == tmp_path / "model"
    assert paths.output_data == tmp_path / "output/data"
    assert paths.failure == tmp_path / "output/failure"
    assert paths.checkpoints == tmp_path / "checkpoints"


def test_default_root_is_opt_ml_and_sm_variables_win():
    paths = JobPaths.resolve(env={})
    assert paths.model == Path("/opt/ml/model") and paths.failure == Path("/opt/ml/output/failure")
    assert paths.hyperparameters == Path("/opt/ml/input/config/hyperparameters.json")
    assert paths.checkpoints == Path("/opt/ml/checkpoints")
    assert paths.clip == Path("/opt/ml/input/data/clip")
    paths = JobPaths.resolve(env={"SM_MODEL_DIR": "/m", "SM_CHANNEL_TRAIN": "/t", "SM_CHANNEL_IMAGES": "/i",
                                  "SM_CHANNEL_BASE_MODEL": "/b", "SM_OUTPUT_DATA_DIR": "/o/d",
                                  "SM_INPUT_CONFIG_DIR": "/c", "SM_CHANNEL_CLIP": "/clip"})
    assert (paths.model, paths.train, paths.images, paths.base_model, paths.output_data, paths.clip) == (
        Path("/m"), Path("/t"), Path("/i"), Path("/b"), Path("/o/d"), Path("/clip"))
    assert paths.hyperparameters == Path("/c/hyperparameters.json")
    assert paths.validation == Path("/opt/ml/input/data/validation")


def test_layout_job_writes_string_hyperparameters_and_channels(tmp_path):
    for name in ("data", "images", "base"):
        (tmp_path / name).mkdir()
    paths = layout_job(tmp_path / "ml", train=tmp_path / "data", validation=tmp_path / "data",
                       images=tmp_path / "images", base_model=tmp_path / "base",
                       hyperparameters={"max_steps": 5, "baseline": "false"})
    assert json.loads(paths.hyperparameters.read_text()) == {"max_steps": "5", "baseline": "false"}
    assert paths.train.resolve() == (tmp_path / "data").resolve()
    assert paths.base_model.resolve() == (tmp_path / "base").resolve()


@pytest.fixture(scope="module")
def prepared(catalog_dir, tmp_path_factory):
    from training.prepare import prepare

    out = tmp_path_factory.mktemp("contract_prepared")
    prepare(catalog_dir, out, attributes=["baseColour", "Pattern"], article_types=["Shirts", "Tshirts"],
            val_fraction=0.2, seed=0)
    return out


def _job(tmp_path, prepared, catalog_dir, base, **hyperparameters):
    return layout_job(tmp_path / "ml", train=prepared, validation=prepared, images=catalog_dir / "images",
                      base_model=base, hyperparameters={"device": "cpu", **hyperparameters})


def _failure(paths: JobPaths) -> str:
    assert paths.failure.is_file(), "a failed job must write output/failure"
    return paths.failure.read_text()


def test_unknown_hyperparameter_fails_with_a_reason(tmp_path, prepared, catalog_dir, untrained_artifact, capsys):
    paths = _job(tmp_path, prepared, catalog_dir, untrained_artifact, epochs="1", learning_rte="1e-4")
    assert main(["--sm-root", str(paths.root)]) == 2
    reason = _failure(paths)
    assert reason.startswith("ConfigError: unknown hyperparameter(s) 'learning_rte'")
    assert "learning_rte" in capsys.readouterr().err
    assert not paths.model.exists() or not any(paths.model.iterdir())


def test_without_a_schema_file_answers_that_are_not_label_value_fail(tmp_path, prepared, catalog_dir,
                                                                     untrained_artifact):
    # Without attribute_schema.json the schema is inferred from the answers (tests/training/test_from_the_posts_training.py);
    # an answer that is not `Label: Value` then leaves nothing to infer it from: a user error, exit 2.
    data = tmp_path / "no_schema"
    shutil.copytree(prepared, data)
    (data / "attribute_schema.json").unlink()
    lines = (data / "vqa_train.csv").read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",Long Sleeves"
    (data / "vqa_train.csv").write_text("\n".join(lines) + "\n")
    paths = _job(tmp_path, data, catalog_dir, untrained_artifact)
    assert main(["--sm-root", str(paths.root)]) == 2
    assert _failure(paths).startswith("DataError: ") and "no attribute schema can be inferred" in _failure(paths)


def test_missing_images_are_named(tmp_path, prepared, catalog_dir, untrained_artifact):
    images = tmp_path / "images"
    shutil.copytree(catalog_dir / "images", images)
    first_id = (prepared / "vqa_train.csv").read_text().splitlines()[1].split(",")[0]
    (images / f"{first_id}.jpg").unlink()
    paths = layout_job(tmp_path / "ml", train=prepared, validation=prepared, images=images,
                       base_model=untrained_artifact, hyperparameters={"device": "cpu"})
    assert main(["--sm-root", str(paths.root)]) == 2
    reason = _failure(paths)
    assert reason.startswith("DataError: 1 image(s) missing") and first_id in reason


def test_a_bad_vqa_header_is_refused(tmp_path, prepared, catalog_dir, untrained_artifact):
    data = tmp_path / "bad_header"
    shutil.copytree(prepared, data)
    # Case is not a difference (the reference data set writes `Id`: tests/training/test_from_the_posts_training.py); a column is.
    text = (data / "vqa_train.csv").read_text().replace("id,Question,Answer", "product,Question,Answer", 1)
    (data / "vqa_train.csv").write_text(text)
    paths = _job(tmp_path, data, catalog_dir, untrained_artifact)
    assert main(["--sm-root", str(paths.root)]) == 2
    assert "header must be id,Question,Answer (any case)" in _failure(paths)


def test_an_unloadable_base_model_fails_with_exit_1(tmp_path, prepared, catalog_dir, capsys):
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    paths = _job(tmp_path, prepared, catalog_dir, None, base_model=str(empty))
    assert main(["--sm-root", str(paths.root)]) == 1
    assert _failure(paths).strip()
    assert "Traceback" in capsys.readouterr().err  # unexpected errors keep their traceback in the log


def test_the_entry_point_runs_as_a_module_and_tolerates_the_train_argument(tmp_path, prepared, catalog_dir,
                                                                           untrained_artifact):
    # SageMaker starts the image as `docker run IMAGE train`; here as `python -m training.train train ...`.
    paths = _job(tmp_path, prepared, catalog_dir, untrained_artifact, max_steps="0", epochs="-1")
    done = subprocess.run([sys.executable, "-m", "training.train", "train", "--sm-root", str(paths.root)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert _failure(paths).startswith("ConfigError: epochs must be positive")


def test_a_stale_failure_file_is_removed_by_the_next_run(tmp_path, prepared, catalog_dir, untrained_artifact):
    paths = _job(tmp_path, prepared, catalog_dir, untrained_artifact, batch_size="0")
    paths.failure.parent.mkdir(parents=True, exist_ok=True)
    paths.failure.write_text("old reason\n")
    assert main(["--sm-root", str(paths.root)]) == 2
    assert _failure(paths).startswith("ConfigError: batch_size must be at least 1")


def test_training_image_installs_only_the_train_extra_on_the_pinned_torch():
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(str(ROOT / "containers" / "training" / "Dockerfile"))
    # BASE_IMAGE names the cuda-base stage, a literal FROM of the CUDA PyTorch image (Dependabot reads it)
    assert parser.baseimage == "cuda-base" and "FROM pytorch/pytorch:2.13.0-cuda" in parser.content
    assert any("2.13.0" in image and "cuda" in image for image in parser.parent_images)  # torch pin of pyproject.toml
    copies = [i["value"].split()[0] for i in parser.structure if i["instruction"] == "COPY"]
    # the contract, the model runtime (the predictor and image decoder: one path for training and serving),
    # training; never the web server or the operator's commands
    assert copies == ["pyproject.toml", "loom/", "runtime/", "training/"]
    runs = " ".join(i["value"] for i in parser.structure if i["instruction"] == "RUN")
    assert '".[train]"' in runs and "serve]" not in runs and "command -v train" in runs
    assert parser.cmd == '["train"]' or "train" in parser.cmd
    # The hub cache on the job's volume (/tmp is one of SageMaker's default training paths), not the image layer.
    assert parser.envs["HF_HOME"].startswith("/tmp/")


def test_merged_model_is_saved_in_the_asked_dtype_and_reloads(untrained_artifact, tmp_path):
    import torch
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    from training.config import ConfigError, from_hyperparameters
    from training.merge import save_merged

    assert from_hyperparameters({"save_dtype": "bf16"}).save_dtype == "bf16"
    with pytest.raises(ConfigError, match="save_dtype"):
        from_hyperparameters({"save_dtype": "fp16"})  # Flan-T5 overflows in fp16
    model = Blip2ForConditionalGeneration.from_pretrained(untrained_artifact)
    processor = Blip2Processor.from_pretrained(untrained_artifact)
    size_fp32 = sum(f.stat().st_size for f in save_merged(model, processor, tmp_path / "fp32").glob("*.safetensors"))
    out = save_merged(model, processor, tmp_path / "bf16", dtype=torch.bfloat16)
    reloaded = Blip2ForConditionalGeneration.from_pretrained(out)
    assert {p.dtype for p in reloaded.parameters()} == {torch.bfloat16}
    size_bf16 = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    assert size_bf16 < 0.6 * size_fp32


def test_tiny_base_vocabulary_is_the_same_on_every_run(catalog_dir):
    # The demo caches the tiny base by its vocabulary; set order varies with PYTHONHASHSEED.
    script = ("import json, sys; from training import tiny_base; from loom.schema import DEFAULT_ATTRIBUTES;"
              "s = tiny_base.AttributeSchema.from_names(DEFAULT_ATTRIBUTES);"
              "v = tiny_base.catalog_values(sys.argv[1], DEFAULT_ATTRIBUTES);"
              "print(json.dumps(tiny_base.vocabulary_texts(s, v)))")
    runs = {subprocess.run([sys.executable, "-c", script, str(catalog_dir)], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2", "3")}
    assert len(runs) == 1 and "Long Sleeves" in runs.pop()


def test_values_by_product_groups_answers_in_file_order():
    from training.data import VqaExample, values_by_product

    rows = [VqaExample("7", "q", "Colour: Red", "baseColour", "Red"),
            VqaExample("3", "q", "Fit: Slim Fit", "Fit", "Slim Fit"),
            VqaExample("7", "q", "Pattern: Solid", "Pattern", "Solid")]
    assert values_by_product(rows) == {"7": {"baseColour": "Red", "Pattern": "Solid"}, "3": {"Fit": "Slim Fit"}}
    assert list(values_by_product(rows)) == ["7", "3"]


def _extra_distributions(extra: str) -> set[str]:
    """The distributions pip installs for `.[extra]`: pyproject.toml's list, then each one's requirements."""
    import importlib.metadata as md
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    todo, seen = [Requirement(r) for r in extras[extra]], set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name == "loom":
            todo += [Requirement(r) for e in req.extras for r in extras[e]]
        elif name not in seen:
            seen.add(name)
            todo += [r for r in map(Requirement, md.requires(req.name) or [])
                     if r.marker is None or r.marker.evaluate({"extra": ""})]
    return seen


def test_the_training_image_installs_every_library_the_server_code_it_runs_imports():
    """The training image copies runtime/ and installs only `.[train]`: every third-party module that the
    runtime modules training loads import (the predictor, the decoder, the CLIP tagger of the baseline) must
    come with that extra, or `train` fails in the image while passing here, where `.[dev]` has it all."""
    import ast
    import importlib.metadata as md

    from packaging.utils import canonicalize_name

    def imported(path: Path) -> set[str]:
        names = set()
        tree = ast.parse(path.read_text())
        for block in [n for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]:
            block.body = []  # imports for annotations only never run
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        return names

    # What training imports from the runtime, lazily or not, and what those modules import in turn: read in a
    # fresh interpreter, since this one has imported the whole server (app, serve) for other tests.
    wanted = sorted({n for path in (ROOT / "training").rglob("*.py") for n in imported(path)
                     if n.startswith("runtime.")})
    probe = ("import importlib, json, sys\n"
             f"for name in {wanted!r}: importlib.import_module(name)\n"
             "print(json.dumps({m: sys.modules[m].__file__ for m in sys.modules\n"
             "                  if m.startswith(('runtime.', 'inference.'))}))")
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-2000:]
    files = json.loads(run.stdout.strip().splitlines()[-1])
    server_modules = sorted(files)
    assert "runtime.predictor" in server_modules and "runtime.clip_service" in server_modules
    assert not [m for m in server_modules if m.startswith("inference.")]  # the web server is the inference image's alone
    installed, owners = _extra_distributions("train"), md.packages_distributions()
    missing = {}
    ours = set(sys.stdlib_module_names) | {"loom", "runtime", "training", "inference"}
    for module in server_modules:
        for top in {n.split(".")[0] for n in imported(Path(files[module]))} - ours:
            if not {canonicalize_name(d) for d in owners.get(top, [top])} & installed:
                missing.setdefault(top, []).append(module)
    assert not missing, f"imported by server code that training runs, not installed by .[train]: {missing}"
