"""The OpenAPI document tells the truth about errors and auth."""

from __future__ import annotations

from pathlib import Path

from api.app import create_app
from registry.settings import Settings


def test_every_api_operation_declares_problem_errors(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    spec = app.openapi()
    assert "Problem" in spec["components"]["schemas"]
    operations = [
        (path, method, op)
        for path, item in spec["paths"].items()
        if path.startswith("/api/v1")
        for method, op in item.items()
    ]
    assert len(operations) >= 14
    for path, method, op in operations:
        responses = op["responses"]
        for code in ("401", "403", "422"):
            assert code in responses, (method, path, code)
        for code, response in responses.items():
            if code[0] in "45":
                assert list(response["content"]) == ["application/problem+json"], (path, code)
        assert op.get("security"), (method, path)
