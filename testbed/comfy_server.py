"""The real ComfyUI (``main.py``) as a child process on loopback, with its own model and IO folders."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMFY_DIR = Path(os.environ.get("COMFYUI_PATH") or REPO / ".comfyui" / "ComfyUI").resolve()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def device_flags() -> list[str]:
    """``--cpu`` unless torch sees a GPU."""
    import torch

    return [] if torch.cuda.is_available() else ["--cpu"]


class ComfyServer:
    """The real ComfyUI (``main.py``) with the pack, on loopback, with its own model/IO folders."""

    def __init__(self, root: Path, models: dict[str, list[Path]] | None = None):
        """``models``: files linked into a private models folder, besides ComfyUI's own models folder."""
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "server.log"
        self.output_dir = root / "output"
        models_dir = root / "models"
        for folder, files in (models or {}).items():
            (models_dir / folder).mkdir(parents=True, exist_ok=True)
            for file in files:
                link = models_dir / folder / file.name
                if not link.exists():
                    link.symlink_to(file)
        config = root / "extra_model_paths.yaml"
        config.write_text(f"mca_private:\n  base_path: {models_dir}\n" +
                          "".join(f"  {folder}: {folder}\n" for folder in (models or {})))
        for sub in ("output", "input", "temp", "user"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.command = [
            sys.executable, str(COMFY_DIR / "main.py"), *device_flags(), "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-auto-launch", "--extra-model-paths-config", str(config),
            "--output-directory", str(root / "output"), "--input-directory", str(root / "input"),
            "--temp-directory", str(root / "temp"), "--user-directory", str(root / "user"),
            "--database-url", "sqlite:///:memory:",
        ]
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> "ComfyServer":
        import requests

        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, cwd=COMFY_DIR, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/system_stats", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def get(self, route: str):
        import requests

        response = requests.get(self.url + route, timeout=30)
        response.raise_for_status()
        return response.json()

    def run_prompt(self, prompt: dict, timeout: float = 600.0) -> dict:
        """POST an API-format prompt and wait for its history entry; returns that entry."""
        import requests

        response = requests.post(self.url + "/prompt", json={"prompt": prompt, "client_id": str(uuid.uuid4())},
                                 timeout=30)
        if not response.ok:
            raise AssertionError(f"/prompt refused the workflow: {response.text}")
        prompt_id = response.json()["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") == "success" or entry.get("outputs"):
                    return entry
                raise AssertionError(f"workflow failed: {entry['status']}")
            time.sleep(0.5)
        raise TimeoutError(f"workflow did not finish in {timeout} s")
