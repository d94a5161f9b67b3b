"""The PyTorch zip checkpoint: whether its member names follow the layout ``torch.save``
writes. The pickles inside it are scanned by the archive scanner like any other member.

Rule ids: ``torch.layout`` (LOW to HIGH) and ``torch.torchscript`` (MEDIUM).
"""

from __future__ import annotations

from validators.report import Finding, Severity

#: members a PyTorch zip checkpoint holds, below its single top-level folder
_TORCH_FILES = frozenset(
    {"data.pkl", "version", ".data/version", "byteorder", ".data/serialization_id",
     "constants.pkl", ".format_version", ".storage_alignment", "traced_inputs.pkl"}
)  # fmt: skip
_TORCH_FOLDERS = ("data/", "code/", "constants/", ".data/", "extra/")


def check_torch_zip(names: list[str], *, location: str) -> list[Finding]:
    """Check that zip member names follow the PyTorch checkpoint layout.

    The layout is one top-level folder holding ``data.pkl``, ``version`` (or
    ``.data/version``), storages under ``data/`` and optionally ``byteorder``,
    ``.data/serialization_id``, ``constants.pkl`` and TorchScript ``code/``. Storage names are
    not checked: the archive scanner reads every member that looks like a pickle anyway.
    """
    findings: list[Finding] = []
    files = [n for n in names if not n.endswith("/")]
    prefixes = {n.split("/", 1)[0] for n in files if "/" in n}
    top_level = [n for n in files if "/" not in n]
    for name in top_level:
        findings.append(
            Finding(
                Severity.MEDIUM,
                "torch.layout",
                f"member {name!r} is outside the checkpoint folder",
                f"{location}:{name}",
            )
        )
    if len(prefixes) != 1:
        findings.append(
            Finding(
                Severity.MEDIUM,
                "torch.layout",
                f"expected one top-level folder, found {len(prefixes)}",
                location,
            )
        )
        if not prefixes:
            return findings
    prefix = sorted(prefixes)[0]
    inner = {n.split("/", 1)[1] for n in files if n.startswith(prefix + "/")}
    for name in sorted(n for n in files if "/" in n and n.split("/", 1)[0] != prefix):
        findings.append(
            Finding(
                Severity.MEDIUM,
                "torch.layout",
                f"member {name!r} is outside {prefix}/",
                f"{location}:{name}",
            )
        )
    if "data.pkl" not in inner:
        findings.append(
            Finding(Severity.MEDIUM, "torch.layout", f"{prefix}/data.pkl is missing", location)
        )
    if "version" not in inner and ".data/version" not in inner:
        findings.append(
            Finding(Severity.LOW, "torch.layout", f"{prefix}/version is missing", location)
        )
    code_seen = False
    for name in sorted(inner):
        member = f"{location}:{prefix}/{name}"
        if ".." in name.split("/") or name.startswith("/") or "\\" in name:
            findings.append(
                Finding(
                    Severity.HIGH,
                    "torch.layout",
                    f"member path {name!r} escapes the folder",
                    member,
                )
            )
        elif name.startswith("code/"):
            code_seen = True
        elif name in _TORCH_FILES or name.startswith(_TORCH_FOLDERS):
            continue
        elif name.endswith(".pkl"):
            findings.append(
                Finding(
                    Severity.MEDIUM, "torch.layout", f"unexpected pickle member {name!r}", member
                )
            )
        else:
            findings.append(
                Finding(Severity.LOW, "torch.layout", f"unexpected member {name!r}", member)
            )
    if code_seen:
        findings.append(
            Finding(
                Severity.LOW,
                "torch.torchscript",
                "the checkpoint holds TorchScript code (code/), which runs when it is loaded "
                "with torch.jit.load; its code was inspected",
                f"{location}:{prefix}/code/",
            )
        )
    return findings
