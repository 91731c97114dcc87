"""mca-eval without a server: metric maths on random-weight DINO / CLIP, masks, readers, workflow edits, report."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mca_eval import metrics, models, readers, report, workflow
from mca_eval.items import BenchmarkError, EvalItem
from mca_eval.regions import MaskError
from mca_eval.sweep import expand, parse_axis
from random_metric_models import EXAMPLES, write_metric_models
from comfy_server import REPO


@pytest.fixture(scope="session")
def metric_model_folders(tmp_path_factory):
    return write_metric_models(tmp_path_factory.mktemp("metric_models"))


@pytest.fixture(scope="session")
def loaded_models(metric_model_folders):
    return models.load_metric_models(metric_model_folders["dino"], metric_model_folders["clip"], None)


def example(name: str, size: int = 128) -> np.ndarray:
    with Image.open(EXAMPLES / f"mca_example_{name}.png") as image:
        return np.asarray(image.convert("RGB").resize((size, size)), dtype=np.float32) / 255.0


def box_mask(size: int, start: int, stop: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[start:stop, start:stop] = True
    return mask


def disc_mask(size: int, radius: float) -> np.ndarray:
    """A disc: its bounding box holds background pixels too (corners), which a region must not let in."""
    y, x = np.mgrid[:size, :size]
    return (y - size / 2) ** 2 + (x - size / 2) ** 2 < radius ** 2


def swap_case():
    """result = condition (coffee) with the cat pasted inside the edit disc; subject = cat."""
    cat, coffee = example("cat"), example("coffee")
    edit = disc_mask(128, 36)
    result = np.where(edit[..., None], cat, coffee)
    return result, cat, coffee, edit, edit


def test_identical_images_give_similarity_one(loaded_models):
    image, mask = example("cat"), box_mask(128, 32, 96)
    values = metrics.edit_metrics(loaded_models, image, image, image, mask, mask, "a photo of a cat")
    for name in ("dino_sub", "dino_back", "clip_i_sub", "clip_i_back"):
        assert values[name] == pytest.approx(1.0, abs=1e-5), name
    assert -1.0 <= values["clip_t"] <= 1.0 and values["image_reward"] is None
    generation = metrics.generation_metrics(loaded_models, image, [Image.open(EXAMPLES / "mca_example_cat.png")
                                                                   .resize((128, 128))], "a cat")
    assert generation["dino"] == pytest.approx(1.0, abs=1e-3) and generation["clip_i"] == pytest.approx(1.0, abs=1e-3)


def test_changing_only_the_background_moves_back_and_not_sub(loaded_models):
    result, subject, condition, subject_mask, edit = swap_case()
    before = metrics.edit_metrics(loaded_models, result, subject, condition, subject_mask, edit, "a cat")
    noisy = np.where(edit[..., None], result, np.random.default_rng(0).random(result.shape, dtype=np.float32))
    after = metrics.edit_metrics(loaded_models, noisy, subject, condition, subject_mask, edit, "a cat")
    for name in ("dino_sub", "clip_i_sub"):
        assert after[name] == pytest.approx(before[name], abs=1e-6), name
    for name in ("dino_back", "clip_i_back"):
        assert before[name] == pytest.approx(1.0, abs=1e-5)  # the background is the condition's
        assert after[name] < before[name] - 1e-4, name


def test_changing_only_the_subject_moves_sub_and_not_back(loaded_models):
    result, subject, condition, subject_mask, edit = swap_case()
    before = metrics.edit_metrics(loaded_models, result, subject, condition, subject_mask, edit, "a cat")
    other = np.where(edit[..., None], example("astronaut"), result)
    after = metrics.edit_metrics(loaded_models, other, subject, condition, subject_mask, edit, "a cat")
    for name in ("dino_back", "clip_i_back"):
        assert after[name] == pytest.approx(before[name], abs=1e-6), name
    for name in ("dino_sub", "clip_i_sub"):
        assert before[name] == pytest.approx(1.0, abs=1e-5)  # the subject region is the subject's
        assert after[name] < before[name] - 1e-4, name


@pytest.mark.parametrize("mask, words", [
    (np.zeros((128, 128), bool), "empty"),
    (box_mask(160, 130, 150), "outside the image"),
    (np.ones((128, 128), bool), "whole image"),
])
def test_unusable_masks_give_clear_errors(loaded_models, mask, words):
    image = example("cat")
    with pytest.raises(MaskError, match=words):
        metrics.edit_metrics(loaded_models, image, image, image, box_mask(128, 10, 20), mask, "a cat")


def test_missing_model_folder_names_the_folder_and_files(tmp_path, metric_model_folders):
    with pytest.raises(models.ModelFolderError) as error:
        models.load_dino(tmp_path / "dino-vits16", "cpu")
    assert str(tmp_path / "dino-vits16") in str(error.value) and "config.json" in str(error.value)
    assert "model.safetensors" in str(error.value) and "facebook/dino-vits16" in str(error.value)
    partial = tmp_path / "clip"
    partial.mkdir()
    for name in ("config.json", "model.safetensors"):
        (partial / name).write_bytes((metric_model_folders["clip"] / name).read_bytes())
    with pytest.raises(models.ModelFolderError, match="lacks vocab.json"):
        models.load_clip(partial, "cpu")


def test_image_reward_is_na_with_a_reason_when_absent(tmp_path):
    scorer, reason = models.load_image_reward(tmp_path, "cpu")
    assert scorer is None and ("not installed" in reason or "ImageReward.pt" in reason)


def write_item(out: Path, item_id: str, record: dict, values: dict | None) -> None:
    folder = out / "items" / item_id
    folder.mkdir(parents=True)
    (folder / "item.json").write_text(json.dumps(record))
    if values is not None:
        (folder / "metrics.json").write_text(json.dumps(values))


def test_csv_and_markdown_match_a_hand_computed_case(tmp_path):
    items = [EvalItem(id=f"i{n}", task="swap", subject_image=EXAMPLES / "mca_example_cat.png", target_prompt="p")
             for n in (1, 2, 3)]
    write_item(tmp_path, "i1", {"server": "http://a", "seconds": 2.0},
               {"dino_sub": 0.5, "dino_back": 0.25, "clip_i_sub": 0.75, "clip_i_back": 1.0, "clip_t": 0.2,
                "image_reward": None})
    write_item(tmp_path, "i2", {"server": "http://b", "seconds": 4.5},
               {"dino_sub": 0.7, "dino_back": 0.75, "clip_i_sub": 0.25, "clip_i_back": 0.5, "clip_t": 0.3,
                "image_reward": None})
    rows = report.collect_rows(items, tmp_path)  # i3 was never generated
    report.write_csv(rows, tmp_path / "results.csv")
    with open(tmp_path / "results.csv", newline="") as file:
        table = list(csv.reader(file))
    assert table == [
        ["item", "task", "status", "server", "seconds", "dino_sub", "dino_back", "clip_i_sub", "clip_i_back",
         "clip_t", "image_reward"],
        ["i1", "swap", "ok", "http://a", "2.000", "0.500000", "0.250000", "0.750000", "1.000000", "0.200000", ""],
        ["i2", "swap", "ok", "http://b", "4.500", "0.700000", "0.750000", "0.250000", "0.500000", "0.300000", ""],
        ["i3", "swap", "not generated", "", "", "", "", "", "", "", ""]]
    text = report.markdown(rows, "swap", "the ImageReward package is not installed")
    lines = text.splitlines()
    assert "| method | items | DINO_sub | DINO_back | CLIP-I_sub | CLIP-I_back | CLIP-T | ImageReward |" in lines
    assert "| MCA-Ctrl (paper, SD1.5, DreamEditBench) | | 0.643 | 0.678 | 0.811 | 0.868 | — | 0.321 |" in lines
    assert "| this run | 2 | 0.600 | 0.500 | 0.500 | 0.750 | 0.250 | n/a |" in lines
    assert "ImageReward n/a: the ImageReward package is not installed." in lines
    assert any("i3 (not generated)" in line for line in lines)
    generation = report.markdown([], "generation")
    assert "| MCA-Ctrl (paper, SD1.5, DreamBench) | | 0.672 | 0.844 | 0.306 | 0.413 |" in generation


def test_manifest_reader_resolves_paths_and_rejects_typos(tmp_path):
    (tmp_path / "imgs").mkdir()
    for name in ("cat", "coffee"):
        (tmp_path / "imgs" / f"{name}.png").write_bytes((EXAMPLES / f"mca_example_{name}.png").read_bytes())
    (tmp_path / "manifest.csv").write_text(
        "id,subject_image,subject_phrase,condition_image,condition_phrase,target_prompt,seed\n"
        "a,imgs/cat.png,the cat,imgs/coffee.png,the cup,a cat on a saucer,7\n")
    [item] = readers.load_benchmark(tmp_path, "swap")
    assert item.subject_image == (tmp_path / "imgs" / "cat.png").resolve() and item.seed == 7
    assert item.condition_phrase == "the cup" and item.subject_mask is None
    (tmp_path / "typo.json").write_text(json.dumps([{"subject_image": "imgs/cat.png", "target_promt": "x"}]))
    with pytest.raises(BenchmarkError, match="unknown field.*target_promt"):
        readers.load_benchmark(tmp_path / "typo.json", "swap")
    with pytest.raises(BenchmarkError, match="needs condition_image"):
        readers.read_manifest(_write(tmp_path / "m.json", [{"subject_image": "imgs/cat.png", "target_prompt": "x"}]),
                              "swap")


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


DREAMBENCH_TEXT = """Classes

subject_name,class
backpack,backpack
dog,dog

Prompts

Object Prompts

prompt_list = [
'a {0} {1} in the jungle'.format(unique_token, class_token),
'a red {0} {1}'.format(unique_token, class_token)
]

Live Subject Prompts

prompt_list = [
'a {0} {1} in the snow'.format(unique_token, class_token),
'a {0} {1} wearing a red hat'.format(unique_token, class_token),
'a {0} {1} in a chef outfit'.format(unique_token, class_token)
]
"""


def test_dreambench_reader_follows_the_public_layout(tmp_path):
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "prompts_and_classes.txt").write_text(DREAMBENCH_TEXT)
    for subject, count in (("backpack", 2), ("dog", 3)):
        (tmp_path / "dataset" / subject).mkdir()
        for index in range(count):
            (tmp_path / "dataset" / subject / f"{index:02d}.jpg").write_bytes(b"not read here")
    items = readers.load_benchmark(tmp_path, "generation")
    assert [item.id for item in items] == ["backpack_00", "backpack_01", "dog_00", "dog_01", "dog_02"]
    assert [item.target_prompt for item in items] == [
        "a backpack in the jungle", "a red backpack", "a dog in the snow", "a dog wearing a red hat",
        "a dog in a chef outfit"]
    dog = items[2]
    assert dog.subject_image.name == "00.jpg" and len(dog.references) == 3 and dog.subject_words == "dog"
    with pytest.raises(BenchmarkError, match="DreamBench"):
        readers.load_benchmark(tmp_path, "swap")


def test_prepared_prompt_wires_mask_files_sweep_values_and_outputs(tmp_path):
    template = workflow.load_template(REPO / "example_workflows" / "api" / "mca_swap.json")
    item = EvalItem(id="x", task="swap", subject_image=EXAMPLES / "mca_example_cat.png",
                    subject_mask=EXAMPLES / "mca_example_cat.png", condition_image=EXAMPLES / "mca_example_coffee.png",
                    condition_phrase="the mug", target_prompt="a cat on a saucer", subject_prompt="a photo of a cat")
    [cell] = expand([item], (parse_axis("sagi_end=0.3"),))
    prepared = workflow.prepare(template, cell, ("ImageScale.width=64",), steps=5, seed=3, prefix="run")
    nodes = prepared.prompt
    by_class = {}
    for node_id, node in nodes.items():
        by_class.setdefault(node["class_type"], []).append(node_id)
    patch = nodes[by_class["MCA_AttentionPatch"][0]]["inputs"]
    assert patch["sagi_end"] == 0.3
    subject_slm = nodes[patch["subject_mask"][0]]["inputs"]
    edit_slm = nodes[patch["edit_mask"][0]]["inputs"]
    assert "region" in subject_slm and "region" not in edit_slm and edit_slm["phrase"] == "the mug"
    to_mask = nodes[subject_slm["region"][0]]
    scale = nodes[to_mask["inputs"]["image"][0]]
    assert to_mask["class_type"] == "ImageToMask" and scale["class_type"] == "ImageScale"
    assert scale["inputs"]["width"] == 64 and scale["inputs"]["upscale_method"] == "nearest-exact"
    assert nodes[scale["inputs"]["image"][0]]["inputs"]["image"].startswith("mca_eval_")
    [save] = by_class["SaveImage"]  # one output: the result batched with what the metrics need
    assert nodes[save]["inputs"]["filename_prefix"] == "run/x__sagi_end=0.3/mca_eval"
    assert prepared.roles == ("result", "subject", "condition", "subject_mask", "edit_mask")
    chain, batch = [], nodes[save]["inputs"]["images"]
    while nodes[batch[0]]["class_type"] == "ImageBatch":
        chain.append(nodes[batch[0]]["inputs"]["image2"])
        batch = nodes[batch[0]]["inputs"]["image1"]
    assert nodes[batch[0]]["class_type"] == "VAEDecode" and len(chain) == 4
    assert [nodes[link[0]]["class_type"] for link in reversed(chain)] == [
        "ImageScale", "ImageScale", "MaskToImage", "MaskToImage"]
    assert all(nodes[i]["inputs"]["steps"] == 5 for i in by_class["MCA_DDIMInvert"])
    assert {name for name, _ in prepared.uploads} == {
        nodes[i]["inputs"]["image"] for i in by_class["LoadImage"]}
    again = workflow.prepare(template, cell, ("ImageScale.width=64",), steps=5, seed=3, prefix="run")
    changed = workflow.prepare(template, cell, ("ImageScale.width=64",), steps=6, seed=3, prefix="run")
    assert again.fingerprint == prepared.fingerprint != changed.fingerprint
    with pytest.raises(workflow.WorkflowShapeError, match="no input 'sagi_ends'"):
        workflow.check_sweep(template, (parse_axis("sagi_ends=0.1,0.2"),))
