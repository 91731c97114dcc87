"""The per-item error log (``errors.log``): one tab-separated line per failure; the run goes on."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ErrorLog:
    """Appends ``time  item  stage  where  message`` lines to ``path``."""

    path: Path

    def add(self, item_id: str, stage: str, where: str, error: BaseException | str) -> str:
        """Records one failure; returns the one-line message written."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        text = " / ".join(line.strip() for line in str(text).splitlines() if line.strip()) or "unknown error"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}\t{item_id}\t{stage}\t{where}\t{text}\n")
        return text

    def entries(self) -> list[dict[str, str]]:
        """The logged failures, oldest first."""
        if not self.path.exists():
            return []
        keys = ("time", "item", "stage", "where", "message")
        return [dict(zip(keys, line.rstrip("\n").split("\t", 4)))
                for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
