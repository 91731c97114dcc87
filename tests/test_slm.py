"""SLM: tiny random SAM and Grounding DINO loaded through the loader nodes, offline, on both transformers."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import random_models
from slm_models import DETECTION_SIZE, write_models

PHRASE = "a cat"


@pytest.fixture(scope="module")
def models_root(tmp_path_factory, pack):
    import folder_paths

    folders = write_models(tmp_path_factory.mktemp("slm_models"))
    for name, path in folders.items():
        folder_paths.add_model_folder_path(name, str(path))
    return folders


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection attempt other than loopback fails the test: the SLM must never reach a hub."""
    attempts = []
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if host not in ("127.0.0.1", "localhost", "::1"):
            attempts.append(address)
            raise OSError(f"network access attempted: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield
    assert attempts == [], f"the SLM tried to reach the network: {attempts}"


@pytest.fixture(scope="module")
def nodes(pack):
    import mca_ctrl.nodes.slm_nodes

    return mca_ctrl.nodes.slm_nodes


@pytest.fixture(scope="module")
def loaded(nodes, models_root):
    sam = nodes.MCASAMLoader.execute("tiny_sam.pth", "cpu")[0]
    dino = nodes.MCAGroundingDINOLoader.execute("tiny_dino.pth", "cpu")[0]
    return sam, dino


def images(count: int, seed: int = 0, channels: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 64, 64, channels, generator=generator)


def segment(nodes, loaded, image, **kw):
    options = dict(phrase=PHRASE, box_threshold=0.3, text_threshold=0.25, dilation=0, if_nothing_found="error",
                   detection_size=DETECTION_SIZE)
    options.update(kw)
    return nodes.MCASLMMask.execute(*loaded, image, **options)


def best_score(loaded, image) -> float:
    from mca_ctrl.slm import detect

    pixels = (image[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    with loaded[1] as dino:
        return detect(dino, pixels, PHRASE, 0.0, 0.25, DETECTION_SIZE).best_score


def test_loaders_list_the_folder_and_load(nodes, models_root, loaded):
    sam_inputs = nodes.MCASAMLoader.INPUT_TYPES()["required"]["model_name"][1]["options"]
    dino_inputs = nodes.MCAGroundingDINOLoader.INPUT_TYPES()["required"]["model_name"][1]["options"]
    assert "tiny_sam.pth" in sam_inputs and "tiny_dino.pth" in dino_inputs
    assert not any(name.endswith(".json") for name in dino_inputs)
    assert loaded[0].module.image_encoder.img_size == 64


def test_mask_outputs_shapes_ranges_and_union(nodes, loaded):
    batch = images(2)
    mask, objects, preview = segment(nodes, loaded, batch, box_threshold=0.0)
    assert mask.shape == (2, 64, 64) and mask.dtype == torch.float32
    assert objects.dim() == 3 and objects.shape[1:] == (64, 64) and objects.shape[0] >= 2
    assert preview.shape == (2, 64, 64, 3) and preview.dtype == torch.float32
    for tensor in (mask, objects, preview):
        assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0
    single_mask, single_objects, _ = segment(nodes, loaded, batch[:1], box_threshold=0.0)
    assert torch.equal(single_mask[0], single_objects.amax(0)), "union must be the OR of the object masks"
    assert torch.equal(single_mask[0], mask[0])


def test_dilation_grows_masks_by_the_expected_pixels(nodes, loaded):
    from mca_ctrl.slm import dilate

    square = torch.zeros(1, 64, 64)
    square[0, 20:30, 20:30] = 1
    grown = dilate(square, 3)
    assert int(grown.sum()) == 16 * 16 and bool(grown[0, 17:33, 17:33].all())
    plain, _, _ = segment(nodes, loaded, images(1), box_threshold=0.0)
    dilated, _, _ = segment(nodes, loaded, images(1), box_threshold=0.0, dilation=2)
    assert torch.equal(dilated, dilate(plain, 2))
    assert dilated.sum() >= plain.sum()


def middle_without_detection(loaded):
    """Three images ordered so that the middle one scores lowest; a threshold between the scores."""
    candidates = [images(1, seed) for seed in range(6)]
    scores = [best_score(loaded, c[0]) for c in candidates]
    order = sorted(range(6), key=scores.__getitem__)
    low, next_low = scores[order[0]], scores[order[1]]
    assert next_low > low, "the tiny detector should score different images differently"
    batch = torch.cat([candidates[order[1]], candidates[order[0]], candidates[order[2]]])
    return batch, (low + next_low) / 2, low


def test_middle_image_without_detection_empty_mask_only_for_it(nodes, loaded):
    batch, threshold, _ = middle_without_detection(loaded)
    mask, objects, _ = segment(nodes, loaded, batch, box_threshold=threshold, if_nothing_found="empty mask")
    assert mask.shape[0] == 3
    assert float(mask[1].sum()) == 0.0
    assert float(mask[0].sum()) > 0 and float(mask[2].sum()) > 0, "later images must not be dropped"


def test_middle_image_without_detection_error_names_phrase_and_score(nodes, loaded):
    batch, threshold, low = middle_without_detection(loaded)
    with pytest.raises(ValueError, match=rf"nothing found for '{PHRASE}' in image 2 of 3 \(best score {low:.2f}"):
        segment(nodes, loaded, batch, box_threshold=threshold)


@pytest.mark.parametrize("channels", [4, 1])
def test_rgba_and_grayscale_images(nodes, loaded, channels):
    mask, _, preview = segment(nodes, loaded, images(1, channels=channels), box_threshold=0.0)
    assert mask.shape == (1, 64, 64) and preview.shape == (1, 64, 64, 3)


def test_region_replaces_detection_for_subject_addition(nodes, loaded):
    region = random_models.square_mask(64, 10, 30)
    mask, objects, _ = segment(nodes, loaded, images(1), region=region, dilation=1)
    assert int(mask.sum()) == 22 * 22 and objects.shape[0] == 1


def test_a_region_of_another_size_is_resized_to_the_image(nodes, loaded):
    region = random_models.square_mask(32, 5, 15)  # half the image's size: the same square once resized
    mask, _, _ = segment(nodes, loaded, images(1), region=region)
    assert torch.equal(mask, random_models.square_mask(64, 10, 30))


def test_slm_models_move_to_the_device_once_per_call(nodes, loaded, monkeypatch):
    entered = []
    real = type(loaded[0]).__enter__

    def counting(self):
        entered.append(self)
        return real(self)

    monkeypatch.setattr(type(loaded[0]), "__enter__", counting)
    segment(nodes, loaded, images(3), box_threshold=0.0)
    assert len(entered) == 2, "DINO and SAM each move to the device once for a batch of 3"


def test_truncated_and_missing_checkpoints_give_clear_errors(nodes, models_root):
    source = models_root["sams"] / "tiny_sam.pth"
    truncated = models_root["sams"] / "truncated_sam.pth"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated_sam.pth .* is not a PyTorch weights file.*Download it again"):
        nodes.MCASAMLoader.execute("truncated_sam.pth", "cpu")
    with pytest.raises(FileNotFoundError, match="sam_vit_h_4b8939.pth.*nothing is downloaded"):
        nodes.MCASAMLoader.execute("absent.pth", "cpu")


@pytest.mark.parametrize("seed", range(16))
def test_random_bytes_are_named_and_refused(nodes, models_root, seed):
    name = f"random_{seed}.pth"
    (models_root["sams"] / name).write_bytes(np.random.RandomState(seed).bytes(4096))
    with pytest.raises(ValueError, match=rf"{name} .* is not a PyTorch weights file"):
        nodes.MCASAMLoader.execute(name, "cpu")


def test_garbage_safetensors_is_named_and_refused(nodes, models_root):
    (models_root["sams"] / "garbage.safetensors").write_bytes(np.random.RandomState(0).bytes(4096))
    with pytest.raises(ValueError, match="garbage.safetensors .* is not a readable .safetensors file.*Download"):
        nodes.MCASAMLoader.execute("garbage.safetensors", "cpu")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch mca_pickle_ran",))


def test_a_pickle_with_code_is_refused_as_such_and_never_runs(nodes, models_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"weights": torch.zeros(2), "payload": _RunsCode()}, models_root["sams"] / "code.pth")
    with pytest.raises(ValueError, match=r"code.pth was not loaded: it is a pickle that contains Python code.*"
                                         r"torch: .*GLOBAL posix.system"):
        nodes.MCASAMLoader.execute("code.pth", "cpu")
    assert not (tmp_path / "mca_pickle_ran").exists()


def test_weights_of_another_model_are_named_and_refused(nodes, models_root):
    import shutil

    shutil.copy(models_root["grounding-dino"] / "tiny_dino.pth", models_root["sams"] / "dino_in_sams.pth")
    with pytest.raises(ValueError, match="dino_in_sams.pth is not a segment-anything \\(SAM\\) checkpoint"):
        nodes.MCASAMLoader.execute("dino_in_sams.pth", "cpu")


def run_detection(checkpoint: Path, extra_path: str | None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if extra_path:
        env["PYTHONPATH"] = extra_path
    script = Path(__file__).with_name("slm_detect_script.py")
    out = subprocess.run([sys.executable, str(script), str(checkpoint), PHRASE], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_same_boxes_under_transformers_4_and_5(models_root):
    transformers5 = Path(sys.executable).parent.parent / "transformers5"
    assert transformers5.is_dir(), "run `make test` (its set-up installs transformers 5 into .venv/transformers5)"
    checkpoint = models_root["grounding-dino"] / "tiny_dino.pth"
    v4, v5 = run_detection(checkpoint, None), run_detection(checkpoint, str(transformers5))
    assert v4["transformers"].startswith("4.") and v5["transformers"].startswith("5."), (v4["transformers"],
                                                                                        v5["transformers"])
    for a, b in zip(v4["results"], v5["results"]):
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-4)
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-4)
