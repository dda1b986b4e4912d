"""The fashion post's training inputs, piece by piece and without training: the `file-name` hyperparameter,
the `input_file` channel, `Id` headers, the schema inferred from answers, the validation split by product,
and the `Loss:` / `Epoch Loss:` lines its metric definitions read. The whole job runs in
tests/training/test_from_the_posts_training.py."""

from __future__ import annotations

import re

import pytest

from loom.schema import DEFAULT_ATTRIBUTES, PRODUCT_TYPE_ATTRIBUTE, AttributeSchema
from training.config import ConfigError, from_hyperparameters
from training.data import DataError, VqaExample, infer_schema, read_vqa_rows, split_by_product
from training.metrics_regex import METRIC_DEFINITIONS, SEED_METRIC_DEFINITIONS, SeedLossLines, metric_line
from training.train import JobPaths


def test_the_posts_hyperparameters_are_read():
    config = from_hyperparameters({"epochs": 10, "file-name": "vqa_train.csv"})  # JSON values, as the post wrote
    assert (config.epochs, config.train_file, config.max_steps) == (10.0, "vqa_train.csv", 0)
    config = from_hyperparameters({"epochs": "10", "file-name": '"vqa_train.csv"'})  # SDK 2.x JSON-quotes strings
    assert config.train_file == "vqa_train.csv"
    assert config.to_hyperparameters()["train_file"] == "vqa_train.csv"  # recorded in the manifest


@pytest.mark.parametrize("hyperparameters, reason", [
    ({"file-name": "a.csv", "train_file": "b.csv"}, "name the same setting"),
    ({"file-name": "../etc/passwd"}, "not a path"),
    ({"file-name": ".."}, "not a path"),
    ({"val_fraction": "1"}, "val_fraction must be in (0, 1)"),
    ({"file_name": "a.csv"}, "unknown hyperparameter(s) 'file_name'"),
])
def test_bad_post_settings_are_refused_with_a_reason(hyperparameters, reason):
    with pytest.raises(ConfigError) as raised:
        from_hyperparameters(hyperparameters)
    assert reason in str(raised.value)


def test_input_file_stands_in_for_a_missing_train_channel(tmp_path):
    data = tmp_path / "input" / "data"
    (data / "input_file").mkdir(parents=True)
    paths = JobPaths.resolve(tmp_path)
    assert (paths.train, paths.train_channel) == (data / "input_file", "input_file")
    (data / "train").mkdir()
    paths = JobPaths.resolve(tmp_path)
    assert (paths.train, paths.train_channel) == (data / "train", "train")  # Loom's own name wins
    env = {"SM_CHANNEL_INPUT_FILE": str(data / "input_file"), "SM_CHANNEL_IMAGES": str(tmp_path)}
    paths = JobPaths.resolve(env=env)  # in a job: the SM_CHANNEL_* variable SageMaker sets
    assert (paths.train, paths.train_channel) == (data / "input_file", "input_file")


@pytest.mark.parametrize("header", ["Id,Question,Answer", "id,question,answer", "ID,QUESTION,ANSWER"])
def test_the_header_is_read_in_any_case(tmp_path, header):
    path = tmp_path / "vqa.csv"
    path.write_text(f"{header}\n7,What is the fit of the shirt in this picture?,Fit: Slim Fit\n", encoding="utf-8")
    assert read_vqa_rows(path) == [("7", "What is the fit of the shirt in this picture?", "Fit: Slim Fit")]


def test_a_byte_order_mark_is_not_part_of_the_header(tmp_path):
    path = tmp_path / "vqa.csv"
    path.write_bytes("\ufeffId,Question,Answer\n7,q?,Fit: Slim Fit\n".encode("utf-8"))
    assert read_vqa_rows(path) == [("7", "q?", "Fit: Slim Fit")]


def test_a_wrong_column_is_still_refused(tmp_path):
    path = tmp_path / "vqa.csv"
    path.write_text("product,Question,Answer\n7,q?,Fit: Slim\n", encoding="utf-8")
    with pytest.raises(DataError, match="header must be id,Question,Answer"):
        read_vqa_rows(path)


def rows_for(schema: AttributeSchema, products: dict[str, dict[str, str]]) -> list[tuple[str, str, str]]:
    return [(pid, schema.question(name), schema.format_answer(name, value))
            for pid, values in products.items() for name, value in values.items()]


def test_the_schema_inferred_from_answers_is_the_catalogs():
    names = [PRODUCT_TYPE_ATTRIBUTE, *DEFAULT_ATTRIBUTES]
    catalog = AttributeSchema.from_names(names)
    rows = rows_for(catalog, {"1": {n: "A" for n in names}, "2": {n: "B" for n in names}})
    inferred = infer_schema(rows)
    assert inferred.names == names  # "Colour: Red" -> baseColour, "Product Type: Shirts" -> articleType
    assert [inferred.question(n) for n in names] == [catalog.question(n) for n in names]
    assert inferred.type_attribute == PRODUCT_TYPE_ATTRIBUTE
    assert inferred.parse_answer("Colour: Red") == ("baseColour", "Red")


def test_an_inferred_schema_takes_any_label_and_its_most_common_question():
    rows = [("1", "How long are the sleeves?", "Sleeve Length: Long"),
            ("2", "What sleeve length does it have?", "Sleeve Length: Short"),
            ("3", "How long are the sleeves?", "Sleeve Length: Short"),
            ("1", "Which neckline?", "Neckline: V")]
    schema = infer_schema(rows)
    assert schema.names == ["Sleeve Length", "Neckline"] and schema.type_attribute is None
    assert schema.question("Sleeve Length") == "How long are the sleeves?"


def test_an_answer_without_a_label_leaves_nothing_to_infer():
    with pytest.raises(DataError, match="no attribute schema can be inferred"):
        infer_schema([("1", "q?", "Long Sleeves")])


def examples(products: dict[str, dict[str, str]]) -> list[VqaExample]:
    return [VqaExample(pid, f"{name}?", f"{name}: {value}", name, value)
            for pid, values in products.items() for name, value in values.items()]


def test_the_validation_split_is_by_product_and_keeps_rare_values_in_train():
    products = {str(i): {"Colour": ["Red", "Blue", "Green"][i % 3], "Fit": "Slim"} for i in range(50)}
    products["rare"] = {"Colour": "Mauve", "Fit": "Slim"}
    train, validation = split_by_product(examples(products), 0.2, seed=0)
    train_ids, val_ids = {e.id for e in train}, {e.id for e in validation}
    assert not train_ids & val_ids and train_ids | val_ids == set(products)
    assert len(val_ids) == round(0.2 * len(products)) and "rare" in train_ids
    # every row of a product stays with it; the same seed gives the same split
    assert all(len([e for e in validation if e.id == pid]) == 2 for pid in val_ids)
    assert split_by_product(examples(products), 0.2, seed=0) == (train, validation)
    assert split_by_product(examples(products), 0.2, seed=1)[1] != validation


def test_seed_loss_lines_match_the_posts_regexes_and_leave_loom_lines_alone():
    lines: list[str] = []
    log = SeedLossLines(lines.append)
    for step, (loss, epoch) in enumerate([(0.9, 0.5), (0.7, 1.0), (0.5, 1.5), (0.3, 2.0), (0.2, 2.5)], start=1):
        log(metric_line(train_loss=loss, step=step, epoch=epoch, learning_rate=1e-4))
    log("loom_metric val_exact_match=0.5")
    log.finish()
    loss_regex, epoch_regex = (d["Regex"] for d in SEED_METRIC_DEFINITIONS)
    assert loss_regex == r"Loss: ([0-9\.]+)" and epoch_regex == r"Epoch Loss: ([0-9\.]+)"  # the post's, verbatim
    epochs = [float(m.group(1)) for line in lines if (m := re.search(epoch_regex, line))]
    assert epochs == [pytest.approx(0.8), pytest.approx(0.4), pytest.approx(0.2)]  # two full epochs, then the rest
    plain = [float(m.group(1)) for line in lines if line.startswith("Loss: ") and (m := re.search(loss_regex, line))]
    assert plain == [0.9, 0.7, 0.5, 0.3, 0.2]
    # Loom's own definitions still read only their loom_metric lines
    train_loss = next(d["Regex"] for d in METRIC_DEFINITIONS if d["Name"] == "train:loss")
    assert [float(m.group(1)) for line in lines if (m := re.search(train_loss, line))] == [0.9, 0.7, 0.5, 0.3, 0.2]
