"""A ``ScanReport`` as SARIF 2.1.0, for code-scanning dashboards."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from validators.report import Finding, ScanReport, Severity

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"

#: Rule ids the scanner emits, with a one-line description. Unknown ids (a new rule in the
#: pickle scanner, say) get a description made from the id.
RULE_DESCRIPTIONS: dict[str, str] = {
    "scanner.error": "The scanner failed on a file, which is therefore not known to be safe",
    "format.unknown": "A file in a format the scanner does not know",
    "format.polyglot": "A file that is also a zip archive (read differently by different loaders)",
    "artifact.symlink": "A symlink in the artifact",
    "artifact.special_file": "A device, FIFO or socket in the artifact",
    "archive.path": "An archive member with an absolute path or a '..' component (zip slip)",
    "archive.link": "A symlink or hardlink in an archive",
    "archive.device": "A device or FIFO member in an archive",
    "archive.duplicate": "An archive member name that appears twice",
    "archive.member_type": "An archive member of an unusual type",
    "archive.corrupt": "An archive or member that cannot be read",
    "archive.onnx_not_extracted": "ONNX members left unscanned because the archive is unsafe",
    "limit.archive_members": "An archive with more members than the policy allows",
    "limit.declared_bytes": "An archive whose members declare more bytes than allowed",
    "limit.compression_ratio": "A compression ratio above the policy's (decompression bomb)",
    "limit.archive_depth": "Archives nested deeper than the policy allows",
    "limit.tar_header": "A tar pax or long-name header larger than the scanner reads",
    "limit.file_bytes": "A file larger than the policy allows",
    "limit.model_bytes": "An ONNX model (with external data) larger than allowed",
    "limit.tensor_elements": "A tensor declaring more elements than allowed",
    "onnx.corrupt": "A file that looks like ONNX but does not parse",
    "onnx.domain": "An ONNX operator or opset from a domain that is not allowed",
    "onnx.shape": "An ONNX tensor with a negative dimension",
    "onnx.tensor_data": "ONNX tensor data whose size does not match its shape",
    "onnx.external_data.path": "ONNX external data outside the model folder "
    "(CVE-2024-27318, CVE-2024-5187)",
    "onnx.external_data.symlink": "ONNX external data reached through a symlink",
    "onnx.external_data.missing": "ONNX external data file that does not exist",
    "onnx.external_data.range": "ONNX external data range outside its file",
    "safetensors.header_length": "A safetensors header length that does not fit the file",
    "safetensors.header_encoding": "A safetensors header that is not UTF-8",
    "safetensors.header_json": "A safetensors header that is not a JSON object",
    "safetensors.metadata": "safetensors __metadata__ that is not a map of strings",
    "safetensors.tensor": "A safetensors entry without dtype, shape and data_offsets",
    "safetensors.dtype": "A safetensors tensor of unknown dtype",
    "safetensors.shape": "A safetensors shape that is not a list of natural numbers",
    "safetensors.offsets": "safetensors data offsets outside the data buffer",
    "safetensors.size": "A safetensors tensor whose byte size does not match its shape",
    "safetensors.overlap": "safetensors tensors sharing bytes",
    "npy.header": "A .npy header that cannot be read",
    "npy.malformed": "A file named or declared .npy that does not start like one",
    "pickle.not-a-pickle": "A file named or declared a pickle that does not read as one",
    "pickle.unknown-callable": "A pickle calls something off the allow-list of callables",
    "pickle.build-on-global": "A pickle's BUILD rewrites an object it imported",
    "pickle.unimportable-global": "A pickle names a global no module path spells",
    "torchscript.file-access": "TorchScript code calls an operator that reads or writes files",
    "torchscript.python-escape": "TorchScript code names what only Python has",
    "torchscript.custom-op": "TorchScript code calls an operator outside PyTorch's namespaces",
    "torchscript.malformed": "TorchScript code that does not parse",
    "limit.torchscript_code": "A TorchScript code file larger than the scanner reads",
    "keras.lambda": "A Keras Lambda layer (Python code run when the model loads)",
    "keras.custom-object": "A Keras object from a module outside Keras",
    "keras.unsafe-api": "A Keras config calling one of Keras's own unsafe APIs",
    "keras.malformed": "A Keras config that cannot be read",
    "keras.h5.malformed": "A Keras H5 file that h5py cannot read",
    "limit.keras_config": "A Keras config larger than the scanner reads",
    "savedmodel.dangerous-op": "A SavedModel graph op that touches files, the network or Python",
    "savedmodel.malformed": "A saved_model.pb that does not parse as a SavedModel",
    "limit.savedmodel_bytes": "A saved_model.pb over protobuf's 2 GiB limit",
    "limit.savedmodel_nodes": "A SavedModel with more graph items than the scanner reads",
}

_OFFSET = re.compile(r"@(\d+)$")


def level(severity: Severity) -> str:
    """SARIF level: error for HIGH and CRITICAL, warning for MEDIUM, note for LOW."""
    if severity >= Severity.HIGH:
        return "error"
    return "warning" if severity == Severity.MEDIUM else "note"


def split_location(location: str) -> tuple[str, int | None]:
    """(artifact uri, byte offset) from a finding location such as
    ``model.pt:archive/data.pkl@1234`` or ``model.onnx#graph/node:Conv_3``."""
    offset = None
    match = _OFFSET.search(location)
    if match:
        offset = int(match.group(1))
        location = location[: match.start()]
    uri = location.split("#", 1)[0].split(":", 1)[0]
    return uri or ".", offset


def _result(finding: Finding, rule_index: int) -> dict[str, Any]:
    uri, offset = split_location(finding.location)
    physical: dict[str, Any] = {"artifactLocation": {"uri": quote(uri, safe="/")}}
    if offset is not None:
        physical["region"] = {"byteOffset": offset}
    return {
        "ruleId": finding.rule_id,
        "ruleIndex": rule_index,
        "level": level(finding.severity),
        "message": {"text": f"{finding.message} ({finding.location})"},
        "locations": [
            {
                "physicalLocation": physical,
                "logicalLocations": [{"fullyQualifiedName": finding.location}],
            }
        ],
        "properties": {"severity": str(finding.severity)},
    }


def to_sarif(report: ScanReport) -> dict[str, Any]:
    """The report as a SARIF 2.1.0 log with one run."""
    rule_ids = sorted({f.rule_id for f in report.findings})
    index = {rule_id: i for i, rule_id in enumerate(rule_ids)}
    rules = [
        {
            "id": rule_id,
            "name": rule_id.replace(".", "_"),
            "shortDescription": {
                "text": RULE_DESCRIPTIONS.get(rule_id, rule_id.replace(".", " ").replace("_", " "))
            },
        }
        for rule_id in rule_ids
    ]
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "modelreg",
                        "version": report.tool_versions.get("modelreg-scanner", "unknown"),
                        "rules": rules,
                    }
                },
                "results": [_result(f, index[f.rule_id]) for f in report.findings],
                "invocations": [
                    {
                        "executionSuccessful": report.verdict != "error",
                        "properties": {
                            "verdict": report.verdict,
                            "status": report.status,
                            "filesScanned": len(report.files_scanned),
                            "bytesScanned": report.bytes_scanned,
                        },
                    }
                ],
            }
        ],
    }
