"""Run a shipped API-format workflow headless, against a running ComfyUI or one started for the run.

    .venv/bin/python scripts/run_workflow.py example_workflows/api/mca_swap.json \\
        --subject my_dog.png --condition my_room.png --target "a photo of a dog on a sofa" --seed 7

Nodes are addressed by their titles (as shown in the graph): --subject / --condition upload an image to
the "Subject image" / "Condition image" loader, --target sets the "Target prompt" (and the generation
patch's target_text), --seed sets the sampler, --steps the inversions (the sampler takes its steps from them), and
--set "Title.input=value" sets anything else. Progress is printed as it comes; the output images are
downloaded into --out (default: the current folder) and their paths printed. Errors from ComfyUI are printed
readably and the exit status is 1; a wrong --url or input file is one line and the exit status 2.
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
sys.path.insert(0, str(REPO / "testbed"))  # comfy_server: a ComfyUI for the run when no --url


class WorkflowError(RuntimeError):
    """ComfyUI refused or failed the workflow; the message is meant for people."""


class InputError(ValueError):
    """A command-line argument cannot be used; the one-line message says what to do instead."""


def load_workflow(path: Path) -> dict:
    """The API-format workflow in ``path``; InputError when it is missing or not one."""
    if not Path(path).is_file():
        raise InputError(f"workflow file {path} does not exist: give an API-format workflow, "
                         f"e.g. example_workflows/api/mca_swap.json")
    try:
        prompt = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        prompt = None
    if not isinstance(prompt, dict) or not all(isinstance(n, dict) and "class_type" in n for n in prompt.values()):
        raise InputError(f"{path} is not an API-format workflow: use example_workflows/api/*.json, or export "
                         f"yours from ComfyUI with 'Export (API)'")
    return prompt


def check_input_files(args) -> None:
    """InputError naming the option whose file does not exist."""
    for option, path in (("--subject", args.subject), ("--condition", args.condition)):
        if path and not Path(path).is_file():
            raise InputError(f"{option} file {path} does not exist: give the path of an image file")


def check_server(url: str) -> None:
    """InputError unless ComfyUI answers at ``url``."""
    import requests

    try:
        response = requests.get(f"{url}/system_stats", timeout=10)
    except requests.RequestException:
        raise InputError(f"nothing answers at {url}: start ComfyUI (make run) or pass its address, "
                         f"e.g. --url http://127.0.0.1:8188") from None
    if not response.ok:
        raise InputError(f"{url} answers but is not ComfyUI ({url}/system_stats: HTTP {response.status_code}): "
                         f"fix --url")


def nodes_titled(prompt: dict, title: str) -> list[dict]:
    """The nodes titled ``title`` (or, failing that, of that class); WorkflowError naming the titles there are."""
    found = [node for node in prompt.values() if node.get("_meta", {}).get("title") == title]
    found += [node for node in prompt.values() if node["class_type"] == title and node not in found]
    if not found:
        titles = sorted({n.get("_meta", {}).get("title", n["class_type"]) for n in prompt.values()})
        raise WorkflowError(f"no node titled '{title}' in this workflow; titles: {', '.join(titles)}")
    return found


def set_input(prompt: dict, title: str, name: str, value) -> None:
    """Sets input ``name`` of every node titled ``title``."""
    for node in nodes_titled(prompt, title):
        node["inputs"][name] = value


def parse_value(text: str):
    """A JSON value when ``text`` is one (0.1, 3, true), else the text itself."""
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
    """ComfyUI's validation or execution error as lines for people."""
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
            try:
                await asyncio.wait_for(_follow(socket, prompt, prompt_id, log), timeout)
            except TimeoutError:
                raise WorkflowError(f"the workflow did not finish within {timeout:g} s (--timeout)") from None
        history = await _history_entry(session, url, prompt_id)
    return [image for output in history["outputs"].values() for image in output.get("images", [])]


async def _follow(socket, prompt: dict, prompt_id: str, log) -> None:
    """Prints the prompt's progress from the websocket until it ends; WorkflowError when it fails."""
    import aiohttp

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
        elif event["type"] in ("execution_success",) or (event["type"] == "executing" and data.get("node") is None):
            return


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


async def fetch_image(session, url: str, image: dict) -> bytes:
    """The bytes of an output image record ({filename, subfolder, type}) from ``/view``."""
    params = {"filename": image["filename"], "subfolder": image.get("subfolder", ""),
              "type": image.get("type", "output")}
    async with session.get(f"{url}/view", params=params) as response:
        if response.status != 200:
            raise WorkflowError(f"ComfyUI could not serve {image['filename']} ({response.status})")
        return await response.read()


async def download(url: str, images: list[dict], folder: Path) -> list[Path]:
    """Writes each output image to ``folder``/<subfolder>/<filename>; returns their absolute paths."""
    import aiohttp

    paths = []
    async with aiohttp.ClientSession() as session:
        for image in images:
            path = (Path(folder) / image.get("subfolder", "") / image["filename"]).resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(await fetch_image(session, url, image))
            paths.append(path)
    return paths


def uploader(url: str):
    """A function that uploads an image file to ComfyUI's input folder and returns its name there."""
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
    """Runs the workflow; 0 on success, 1 when ComfyUI refused or failed it, 2 for unusable arguments."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", type=Path, help="an API-format workflow (example_workflows/api/*.json)")
    parser.add_argument("--url", help="a running ComfyUI, e.g. http://127.0.0.1:8188 (default: start one)")
    parser.add_argument("--subject", help="subject image file")
    parser.add_argument("--condition", help="condition image file (swap / add)")
    parser.add_argument("--target", help="target prompt text")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--set", action="append", metavar="TITLE.INPUT=VALUE")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder the output images are downloaded to "
                                                                  "(default: the current folder)")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)
    server = None
    try:
        prompt = load_workflow(args.workflow)
        check_input_files(args)
        url = args.url
        if url is None:
            from comfy_server import ComfyServer

            server = ComfyServer(Path(tempfile.mkdtemp(prefix="mca_run_"))).start()
            url = server.url
            print(f"started ComfyUI at {url} (log: {server.log_path})")
        check_server(url)
        images = asyncio.run(run(url, apply_arguments(prompt, args, uploader(url)), args.timeout))
        paths = asyncio.run(download(url, images, args.out))
    except InputError as error:
        print(f"run_workflow: {error}", file=sys.stderr)
        return 2
    except WorkflowError as error:
        print(f"ComfyUI error:\n{error}", file=sys.stderr)
        return 1
    except connection_errors() as error:
        print(f"run_workflow: lost ComfyUI at {url} ({type(error).__name__}): is it still running?", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
    for path in paths:
        print(f"output image: {path}")
    return 0


def connection_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the server stopped answering."""
    import aiohttp
    import requests

    return aiohttp.ClientConnectionError, requests.ConnectionError, ConnectionError


if __name__ == "__main__":
    sys.exit(main())
