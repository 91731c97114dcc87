"""The API prompt of one item: the shipped workflow with the item's inputs, mask files and captured outputs.

Nodes are found by following links from the one ``MCA_Sampler`` and the one ``MCA_AttentionPatch``, so a
user's own variant of the shipped graph works as long as it keeps that shape. Besides the result, the
prompt saves what the metrics need at the result's resolution: the subject and condition images as
the sampler saw them (after ImageScale) and the subject and edit masks the patch used, batched behind the
result in its SaveImage. A sweep of the patch's schedule settings can be one prompt per item: a chain of
MCA Schedule Sweep nodes makes the sampler return one result per cell, batched ahead of those captures.
"""
from __future__ import annotations

import copy
import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from mca_eval.comfy_api import run_workflow_module
from mca_eval.items import EvalItem
from mca_eval.sweep import PATCH_NODE, SCHEDULE_SETTINGS, Axis, cells

SAMPLER_NODE = "MCA_Sampler"
SLM_NODE = "MCA_SLMMask"
SAVE_NODE = "SaveImage"
SWEEP_NODE = "MCA_ScheduleSweep"
SEPARATE_PASSES = {"steps": "each step count needs its own inversion"}  # why an input needs a pass per value
IMAGE_ROLES = ("subject", "condition")
MASK_ROLES = ("subject_mask", "edit_mask")
RESULT_ROLE = "result"
CAPTURE_PREFIX = "mca_eval"


class WorkflowShapeError(ValueError):
    """The workflow lacks a node or link the harness needs; the message names it."""


@dataclass(frozen=True)
class PreparedPrompt:
    """An API prompt ready to queue, the files to upload first (name, path) and the roles it saves."""

    prompt: dict
    uploads: tuple[tuple[str, Path], ...]
    roles: tuple[str, ...]
    subfolder: str
    cells: int = 1  # results ahead of the captures in the saved batch: one per sweep cell made in this prompt

    @property
    def batch_roles(self) -> tuple[str, ...]:
        """The role of each image of the saved batch, in order: ``cells`` results, then the captures."""
        return (RESULT_ROLE,) * self.cells + self.roles[1:]

    @property
    def fingerprint(self) -> str:
        """Hash of the prompt: equal fingerprints mean the same inputs, settings and workflow."""
        return hashlib.sha256(json.dumps(self.prompt, sort_keys=True).encode()).hexdigest()[:16]

    def submission(self) -> tuple[dict, str]:
        """The prompt to queue now and the subfolder its images go to: a fresh one per submission. ComfyUI serves
        a prompt it has run from its cache, outputs included, so the same prompt queued again (an item redone on
        the server that made it) would hand back the names of files this run's cleanup already removed; a new
        folder makes SaveImage write them again (the nodes before it may still come from the cache)."""
        subfolder = f"{self.subfolder}/{uuid.uuid4().hex[:8]}"
        prompt = copy.deepcopy(self.prompt)
        prompt[only_node(prompt, SAVE_NODE)]["inputs"]["filename_prefix"] = f"{subfolder}/{CAPTURE_PREFIX}"
        return prompt, subfolder


def load_template(path: Path) -> dict:
    """An API-format workflow (``example_workflows/api/*.json``)."""
    try:
        prompt = run_workflow_module().load_workflow(Path(path))
    except run_workflow_module().InputError as error:
        raise WorkflowShapeError(str(error)) from None
    for class_type in (SAMPLER_NODE, PATCH_NODE, SAVE_NODE):
        only_node(prompt, class_type)
    return prompt


def only_node(prompt: dict, class_type: str) -> str:
    """Id of the one node of ``class_type``."""
    ids = [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]
    if len(ids) != 1:
        raise WorkflowShapeError(f"the workflow must hold exactly one {class_type} node, it holds {len(ids)}")
    return ids[0]


def link(prompt: dict, node_id: str, name: str) -> list | None:
    """The ``[source id, slot]`` link of an input, or None when it is a widget value or absent."""
    value = prompt[node_id]["inputs"].get(name)
    return value if isinstance(value, list) else None


def source(prompt: dict, node_id: str, name: str, class_type: str | None = None) -> str | None:
    """Id of the node feeding input ``name`` (None if unlinked or not of ``class_type``)."""
    found = link(prompt, node_id, name)
    if found is None or (class_type and prompt[found[0]]["class_type"] != class_type):
        return None
    return found[0]


def add_node(prompt: dict, class_type: str, **inputs) -> str:
    """Adds a node with the next free numeric id; returns the id."""
    numeric = [int(key) for key in prompt if key.isdigit()]
    node_id = str(max(numeric, default=0) + 1)
    prompt[node_id] = {"class_type": class_type, "inputs": inputs}
    return node_id


def pixels_link(prompt: dict, sampler: str, row: str) -> list | None:
    """The IMAGE that row ``subject``/``condition`` was inverted from (None for an empty latent)."""
    invert = source(prompt, sampler, row, "MCA_DDIMInvert")
    encode = source(prompt, invert, "latent", "VAEEncode") if invert else None
    return link(prompt, encode, "pixels") if encode else None


def check_sweep(template: dict, axes: tuple[Axis, ...]) -> None:
    """Every axis names an existing input of an existing node (a typo would silently sweep nothing)."""
    nodes_titled = run_workflow_module().nodes_titled
    for axis in axes:
        try:
            nodes = nodes_titled(template, axis.title)
        except run_workflow_module().WorkflowError as error:
            raise WorkflowShapeError(f"--sweep {axis.name}: {error}") from None
        for node in nodes:
            if axis.input not in node["inputs"]:
                raise WorkflowShapeError(f"--sweep {axis.name}: {node['class_type']} has no input '{axis.input}'; "
                                         f"its inputs: {', '.join(sorted(node['inputs']))}")


def shared_pass_refusal(template: dict, axes: tuple[Axis, ...]) -> str | None:
    """Why the cells of ``axes`` cannot all come from one prompt per item (None when they can): MCA Schedule Sweep
    varies only the patch's schedule settings, each once."""
    nodes_titled, swept = run_workflow_module().nodes_titled, set()
    for axis in axes:
        classes = {node["class_type"] for node in nodes_titled(template, axis.title)}
        if classes != {PATCH_NODE} or axis.input not in SCHEDULE_SETTINGS:
            return f"{axis.name} cannot share a pass: " + SEPARATE_PASSES.get(
                axis.input, f"MCA Schedule Sweep varies only the MCA Attention Patch's {', '.join(SCHEDULE_SETTINGS)}")
        if axis.input in swept:
            return f"{axis.input} is swept twice"
        swept.add(axis.input)
    return None


def upload_name(path: Path) -> str:
    """Upload name from the file's content: equal files share one name, so ComfyUI's cache can reuse work."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:20]
    return f"mca_eval_{digest}{Path(path).suffix.lower() or '.png'}"


def prepare(template: dict, item: EvalItem, overrides: tuple[str, ...], steps: int | None, seed: int | None,
            prefix: str, schedule_sweep: tuple[Axis, ...] = ()) -> PreparedPrompt:
    """The item's prompt: texts and phrases, images, --set overrides, sweep values, mask files, outputs.

    ``schedule_sweep``: axes (patch schedule settings, see ``shared_pass_refusal``) whose every cell this one
    prompt makes, through MCA Schedule Sweep nodes; the patch's own widgets stay as they are."""
    prompt = copy.deepcopy(template)
    sampler, patch = only_node(prompt, SAMPLER_NODE), only_node(prompt, PATCH_NODE)
    _set_texts(prompt, sampler, patch, item)
    uploads = {role: (upload_name(path), Path(path)) for role, path in
               (("subject", item.subject_image), ("condition", item.condition_image),
                ("subject_mask", item.subject_mask), ("edit_mask", item.edit_mask)) if path is not None}
    names = {path: name for name, path in uploads.values()}  # equal files have equal names
    sweep_sets = [f"{name if '.' in name else PATCH_NODE + '.' + name}={json.dumps(value)}"
                  for name, value in item.sweep]
    args = SimpleNamespace(subject=item.subject_image, condition=item.condition_image, target=item.target_prompt,
                           seed=item.seed if item.seed is not None else seed, steps=steps,
                           set=[*overrides, *sweep_sets])
    prompt = run_workflow_module().apply_arguments(prompt, args, lambda path: names[Path(path)])
    for role in MASK_ROLES:
        if role in uploads:
            _use_mask_file(prompt, sampler, patch, role, uploads[role][0])
    if schedule_sweep:
        _link_schedule_sweep(prompt, patch, schedule_sweep)
    subfolder = f"{prefix}/{item.id}"
    roles = _capture_outputs(prompt, sampler, patch, subfolder)
    return PreparedPrompt(prompt=prompt, uploads=tuple(dict.fromkeys(uploads.values())), roles=roles,
                          subfolder=subfolder, cells=len(cells(schedule_sweep)))


def _link_schedule_sweep(prompt: dict, patch: str, axes: tuple[Axis, ...]) -> None:
    """One MCA_ScheduleSweep per axis, chained in order (the first axis changes slowest, as ``sweep.cells``), the
    last one into the patch's ``sweep`` input."""
    chained: dict = {}
    for axis in axes:
        node = add_node(prompt, SWEEP_NODE, setting=axis.input, values=", ".join(map(str, axis.values)), **chained)
        chained = {"sweep": [node, 0]}
    prompt[patch]["inputs"].update(chained)


def _set_texts(prompt: dict, sampler: str, patch: str, item: EvalItem) -> None:
    for text, node, name, needed in ((item.subject_phrase, source(prompt, patch, "subject_mask", SLM_NODE), "phrase",
                                      "a subject mask detected by MCA SLM Mask"),
                                     (item.condition_phrase, source(prompt, patch, "edit_mask", SLM_NODE), "phrase",
                                      "an edit mask detected by MCA SLM Mask"),
                                     (item.condition_prompt, source(prompt, sampler, "condition_prompt"), "text",
                                      "a condition prompt node"),
                                     (item.subject_prompt, source(prompt, sampler, "subject_prompt"), "text",
                                      "a subject prompt node"),
                                     (item.subject_words, patch if "subject_words" in prompt[patch]["inputs"] else None,
                                      "subject_words", "subject_words input on its MCA Attention Patch")):
        if not text:
            continue
        if node is None:
            raise WorkflowShapeError(f"item {item.id} sets '{name}' but this workflow has no {needed}")
        prompt[node]["inputs"][name] = text


def _use_mask_file(prompt: dict, sampler: str, patch: str, role: str, name: str) -> None:
    """Mask file ``name`` (uploaded) in place of detection: SLM's region input, or the mask fed to GrowMask."""
    patch_input = role
    consumer = source(prompt, patch, patch_input)
    row = "subject" if role == "subject_mask" else "condition"
    like = pixels_link(prompt, sampler, row)
    if consumer and prompt[consumer]["class_type"] == SLM_NODE:
        like = link(prompt, consumer, "image") or like
        prompt[consumer]["inputs"]["region"] = _mask_chain(prompt, name, like)
    elif consumer and link(prompt, consumer, "mask"):
        prompt[consumer]["inputs"]["mask"] = _mask_chain(prompt, name, like)
    elif role == "subject_mask" or link(prompt, patch, patch_input):
        prompt[patch]["inputs"][patch_input] = _mask_chain(prompt, name, like)
    else:
        raise WorkflowShapeError(f"this workflow takes no {role} (a generation workflow derives its edit region)")


def _mask_chain(prompt: dict, name: str, like: list | None) -> list:
    """LoadImage(name) -> ImageScale like the image's own ImageScale -> ImageToMask(red)."""
    image = [add_node(prompt, "LoadImage", image=name), 0]
    scale = prompt[like[0]] if like else None
    if scale is not None and scale["class_type"] == "ImageScale":
        image = [add_node(prompt, "ImageScale", image=image, upscale_method="nearest-exact",
                          width=scale["inputs"]["width"], height=scale["inputs"]["height"],
                          crop=scale["inputs"]["crop"]), 0]
    return [add_node(prompt, "ImageToMask", image=image, channel="red"), 0]


def _capture_outputs(prompt: dict, sampler: str, patch: str, subfolder: str) -> tuple[str, ...]:
    """The result's SaveImage saves one batch: result, then the images and masks the metrics need.

    Batching them behind the result (ImageBatch) keeps the prompt at one output, so a workflow whose result
    branch is invalid is refused by ComfyUI as a whole, with its validation message, instead of running the
    captures alone. The batch order is the returned roles' order.
    """
    save = only_node(prompt, SAVE_NODE)
    images = link(prompt, save, "images")
    roles = [RESULT_ROLE]
    captures = [(role, pixels_link(prompt, sampler, role)) for role in IMAGE_ROLES]
    captures += [(role, [add_node(prompt, "MaskToImage", mask=found), 0] if (found := link(prompt, patch, role))
                  else None) for role in MASK_ROLES]
    for role, found in captures:
        if found:
            images = [add_node(prompt, "ImageBatch", image1=images, image2=found), 0]
            roles.append(role)
    prompt[save]["inputs"].update(images=images, filename_prefix=f"{subfolder}/{CAPTURE_PREFIX}")
    return tuple(roles)
