"""Run a shipped API-format workflow headless, against a running ComfyUI or one started for the run.

    .venv/bin/python scripts/run_workflow.py example_workflows/api/mca_swap.json \\
        --subject my_dog.png --condition my_room.png --target "a photo of a dog on a sofa" --seed 7

Nodes are addressed by their titles (as shown in the graph): --subject / --condition upload an image to
the "Subject image" / "Condition image" loader, --target sets the "Target prompt" (and the generation
patch's target_text), --seed sets the sampler, --steps the inversions (the sampler takes its steps from them), and
--set "Title.input=value" sets anything else. Progress is printed as it comes; errors from ComfyUI are
printed readably and the exit status is 1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


class WorkflowError(RuntimeError):
    """ComfyUI refused or failed the workflow; the message is meant for people."""


def nodes_titled(prompt: dict, title: str) -> list[dict]:
    found = [node for node in prompt.values() if node.get("_meta", {}).get("title") == title]
    found += [node for node in prompt.values() if node["class_type"] == title and node not in found]
    if not found:
        titles = sorted({n.get("_meta", {}).get("title", n["class_type"]) for n in prompt.values()})
        raise WorkflowError(f"no node titled '{title}' in this workflow; titles: {', '.join(titles)}")
    return found


def set_input(prompt: dict, title: str, name: str, value) -> None:
    for node in nodes_titled(prompt, title):
        node["inputs"][name] = value


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_arguments(prompt: dict, args, upload) -> dict:
    """A copy of ``prompt`` with the command line's images, prompts, seed, steps and --set applied."""
    prompt = json.loads(json.dumps(prompt))
    for role, path in (("Subject image", args.subject), ("Condition image", args.condition)):
        if path:
            set_input(prompt, role, "image", upload(Path(path)))
    if args.target:
        set_input(prompt, "Target prompt", "text", args.target)
        for node in prompt.values():
            if node["class_type"] == "MCA_AttentionPatch" and "target_text" in node["inputs"]:
                node["inputs"]["target_text"] = args.target
    for node in prompt.values():
        if args.seed is not None and node["class_type"] == "MCA_Sampler":
            node["inputs"]["seed"] = args.seed
        if args.steps is not None and node["class_type"] == "MCA_DDIMInvert":
            node["inputs"]["steps"] = args.steps
    for assignment in args.set or []:
        target, _, value = assignment.partition("=")
        title, _, name = target.rpartition(".")
        if not title or not name:
            raise WorkflowError(f"--set needs 'Title.input=value', got '{assignment}'")
        set_input(prompt, title, name, parse_value(value))
    return prompt


def readable_error(data: dict) -> str:
    if "node_errors" in data and data["node_errors"]:
        lines = [data.get("error", {}).get("message", "invalid workflow")]
        for node_id, error in data["node_errors"].items():
            for item in error.get("errors", []):
                lines.append(f"  node {node_id} ({error.get('class_type')}): {item.get('message')}: "
                             f"{item.get('details')}")
        return "\n".join(lines)
    if "exception_message" in data:
        return f"node {data.get('node_id')} ({data.get('node_type')}): {data['exception_message'].strip()}"
    return json.dumps(data)


async def run(url: str, prompt: dict, timeout: float, log=print) -> list[dict]:
    """Queue ``prompt``, print progress until it ends, return its output images."""
    import aiohttp

    client_id = str(uuid.uuid4())
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{url}/ws?clientId={client_id}") as socket:
            async with session.post(f"{url}/prompt", json={"prompt": prompt, "client_id": client_id}) as response:
                answer = await response.json()
                if response.status != 200 or answer.get("node_errors"):
                    # ComfyUI answers 200 and runs only the valid outputs when some output is invalid
                    raise WorkflowError(readable_error(answer))
            prompt_id = answer["prompt_id"]
            async with asyncio.timeout(timeout):
                async for message in socket:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(message.data)
                    data = event.get("data", {})
                    if data.get("prompt_id") not in (None, prompt_id):
                        continue
                    if event["type"] == "progress":
                        log(f"  node {data['node']}: step {data['value']}/{data['max']}")
                    elif event["type"] == "executing" and data.get("node"):
                        log(f"running node {data['node']} ({prompt[data['node']]['class_type']})")
                    elif event["type"] == "execution_error":
                        raise WorkflowError(readable_error(data))
                    elif event["type"] in ("execution_success",) or (
                            event["type"] == "executing" and data.get("node") is None):
                        break
        history = await _history_entry(session, url, prompt_id)
    return [image for output in history["outputs"].values() for image in output.get("images", [])]


async def _history_entry(session, url: str, prompt_id: str, wait: float = 60.0) -> dict:
    """The prompt's history entry; ComfyUI stores it just after its last websocket message, so poll."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        async with session.get(f"{url}/history/{prompt_id}") as response:
            history = await response.json()
        if prompt_id in history:
            return history[prompt_id]
        if asyncio.get_running_loop().time() > deadline:
            raise WorkflowError(f"the prompt finished but ComfyUI kept no history for it ({prompt_id})")
        await asyncio.sleep(0.2)


def uploader(url: str):
    import requests

    def upload(path: Path) -> str:
        with open(path, "rb") as file:
            response = requests.post(f"{url}/upload/image", files={"image": (path.name, file)},
                                     data={"overwrite": "true"}, timeout=60)
        if not response.ok:
            raise WorkflowError(f"uploading {path} failed: {response.text}")
        return response.json()["name"]

    return upload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", type=Path, help="an API-format workflow (example_workflows/api/*.json)")
    parser.add_argument("--url", help="a running ComfyUI, e.g. http://127.0.0.1:8188 (default: start one)")
    parser.add_argument("--subject", help="subject image file")
    parser.add_argument("--condition", help="condition image file (swap / add)")
    parser.add_argument("--target", help="target prompt text")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--set", action="append", metavar="TITLE.INPUT=VALUE")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)
    prompt = json.loads(args.workflow.read_text())
    server = None
    try:
        url = args.url
        if url is None:
            from comfy_server import ComfyServer

            server = ComfyServer(Path(tempfile.mkdtemp(prefix="mca_run_"))).start()
            url = server.url
            print(f"started ComfyUI at {url} (log: {server.log_path})")
        images = asyncio.run(run(url, apply_arguments(prompt, args, uploader(url)), args.timeout))
    except WorkflowError as error:
        print(f"ComfyUI error:\n{error}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
    for image in images:
        folder = server.output_dir if server else "ComfyUI's output folder"
        print(f"output image: {folder}/{image['subfolder'] + '/' if image['subfolder'] else ''}{image['filename']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
