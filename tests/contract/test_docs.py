"""Every ```python block in docs/ and README.md runs, so the examples cannot rot.

Blocks of one page run in order in one namespace (a page reads as one script). Blocks fenced
as ```py are shown but not run (for snippets that need a real server or a framework app).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([*(ROOT / "docs").glob("**/*.md"), ROOT / "README.md"])
BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_examples_run(page: Path) -> None:
    """The page's python examples run top to bottom without error."""
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for index, match in enumerate(BLOCK.finditer(page.read_text())):
        line = page.read_text()[: match.start()].count("\n") + 2
        code = compile(match.group(1), f"{page.name}:block{index}@line{line}", "exec")
        exec(code, namespace)
