"""API-format workflows saved before an input was renamed (or added) still run: the server reads the old name
as the new one, before it validates the prompt (ComfyUI's on-prompt handlers, in 0.3.75 and the newest source)."""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

RENAMED = {  # node id -> {old input name: its name now}
    "MCA_AttentionPatch": {"salq_layers": "salq_sites", "salq_first_layer": "salq_first_site"},
}
ADDED = {  # node id -> {input added later: the value that behaves as the node did before it}
    "MCA_AttentionPatch": {"salq_sites": -1.0},
    "MCA_SAMLoader": {"device": "auto"},
    "MCA_GroundingDINOLoader": {"device": "auto"},
}


def read_old_inputs(prompt: dict) -> list[str]:
    """Rename the old inputs of the pack's nodes in an API-format ``prompt`` (in place); what was changed.

    A node with an old name, or a node whose only change was an added input, gets the added inputs it lacks;
    today's workflows pass unchanged (a missing input there is still the host's error)."""
    changed = []
    for key, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            continue
        kind, inputs = node.get("class_type"), node["inputs"]
        renames = RENAMED.get(kind, {})
        old = [name for name, new in renames.items() if name in inputs and new not in inputs]
        if renames and not old:
            continue
        for name in old:
            inputs[renames[name]] = inputs.pop(name)
            changed.append(f"node {key} ({kind}): {name} read as {renames[name]}")
        for name, value in ADDED.get(kind, {}).items():
            if name not in inputs:
                inputs[name] = value
                changed.append(f"node {key} ({kind}): {name} = {value!r}, as before it existed")
    return changed


def on_prompt(json_data: dict) -> dict:
    """ComfyUI's on-prompt hook: the queued prompt with the pack's old input names read as today's."""
    prompt = json_data.get("prompt") if isinstance(json_data, dict) else None
    if isinstance(prompt, dict):
        for change in read_old_inputs(prompt):
            logger.info("MCA-Ctrl: an older workflow: %s.", change)
    return json_data


def accept_old_inputs() -> None:
    """Install ``on_prompt`` on the running server (none runs when ComfyUI is imported as a library)."""
    from server import PromptServer

    server = getattr(PromptServer, "instance", None)
    if server is not None and on_prompt not in server.on_prompt_handlers:
        server.add_on_prompt_handler(on_prompt)
