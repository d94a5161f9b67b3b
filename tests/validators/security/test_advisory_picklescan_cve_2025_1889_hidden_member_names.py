"""picklescan CVE-2025-1889: pickles inside a PyTorch zip under non-standard names.

picklescan only scanned zip members whose names ended in a pickle extension (``data.pkl``),
so a second pickle stored as, say, ``archive/data/0`` or ``archive/config.json`` was never
looked at, while ``torch.load`` can be steered to it. (CVE id from Sonatype's disclosure; the
GHSA id is not verified here.) The fix on our side is that the archive scanner runs
``looks_like_pickle`` on every member and scans each one that looks like a pickle; this file
checks the pieces the pickle scanner owns: detection by content and the layout check.
"""

from __future__ import annotations

import pytest

from tests.support import corpus_pickle as c
from tests.support.corpus_pickle import scan, worst
from validators.report import Severity
from validators.security.pickle import check_torch_zip, looks_like_pickle

PAYLOADS = [
    pytest.param(c.call_global("os", "system"), id="protocol0"),
    pytest.param(c.call_global("os", "system", protocol=2), id="protocol2"),
    pytest.param(c.stack_global_call("os", "system"), id="protocol4"),
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_pickle_is_recognised_by_content_not_name(payload: bytes) -> None:
    assert looks_like_pickle(payload[:64])
    assert worst(scan(payload)) is Severity.CRITICAL


def test_unexpected_pickle_member_is_flagged_by_the_layout_check() -> None:
    names = ["archive/data.pkl", "archive/version", "archive/data/0", "archive/config.pkl"]
    findings = check_torch_zip(names, location="model.pt")
    assert [(f.severity, f.rule_id) for f in findings] == [(Severity.MEDIUM, "torch.layout")]
    assert "config.pkl" in findings[0].location


def test_storage_members_may_have_any_name() -> None:
    names = ["archive/data.pkl", "archive/version", "archive/data/weird-name.bin"]
    assert check_torch_zip(names, location="model.pt") == []
