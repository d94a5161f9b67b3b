"""The shape of the code, checked: no import cycles, and no source file too big to read.

The layer contracts themselves are import-linter's (``pyproject.toml``, ``lint-imports``)."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("registry", "validators", "deployers", "controller", "api")
MAX_LINES = 600


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    graph = grimp.build_graph(*PACKAGES)
    cycles = sorted(
        {
            tuple(sorted((module, imported)))
            for module in graph.modules
            for imported in graph.find_modules_directly_imported_by(module)
            if graph.chain_exists(importer=imported, imported=module)
        }
    )
    assert cycles == [], "import cycles (function-local imports count too)"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_source_file_is_over_600_lines(package: str) -> None:
    too_big = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / package).rglob("*.py"))
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert too_big == {}, f"split these along their seams (at most {MAX_LINES} lines each)"
