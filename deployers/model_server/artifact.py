"""The artifact a model server serves: a local copy whose SHA-256 is the one expected.

``fetch_and_verify`` copies an artifact from a store (or hashes a local file) and refuses it
when its SHA-256 is not the expected one (``modelreg fetch-artifact`` and ``serve-model``).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from deployers.model_server.limits import CHUNK

if TYPE_CHECKING:
    from registry.storage import ArtifactStore

__all__ = ["ArtifactMismatch", "fetch_and_verify"]

log = logging.getLogger("modelreg.model_server")


class ArtifactMismatch(Exception):
    """The artifact's SHA-256 is not the one expected: it must not be served."""

    def __init__(self, source: str, *, expected: str, actual: str) -> None:
        super().__init__(
            f"refusing to serve {source}: its sha256 is {actual} but {expected} was expected"
        )
        self.source = source
        self.expected = expected
        self.actual = actual


def fetch_and_verify(
    *,
    sha256: str,
    artifact: Path | None = None,
    artifact_key: str | None = None,
    store: ArtifactStore | None = None,
    into: Path | None = None,
) -> Path:
    """The path of a local copy of the artifact whose SHA-256 is ``sha256``.

    Give either ``artifact`` (a local file, hashed where it is) or ``artifact_key`` with
    ``store`` (the object is streamed into the directory ``into``, hashed on the way).
    Raises :class:`ArtifactMismatch` when the digest differs; a downloaded copy is then removed.
    """
    expected = sha256.strip().lower()
    digest = hashlib.sha256()
    if artifact is not None and artifact_key is None:
        with artifact.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        path, source = artifact, str(artifact)
    elif artifact_key is not None and artifact is None and store is not None and into is not None:
        path = into / "artifact"  # a model file or a bundle: told apart by its content
        source = f"{artifact_key} from {store.describe()}"
        with path.open("wb") as out:
            for chunk in store.open_range(artifact_key):
                digest.update(chunk)
                out.write(chunk)
    else:
        raise ValueError("give either artifact, or artifact_key with store and into")
    actual = digest.hexdigest()
    if actual != expected:
        if artifact_key is not None:
            path.unlink(missing_ok=True)
        raise ArtifactMismatch(source, expected=expected, actual=actual)
    log.info("sha256 verified for %s: %s", source, actual)
    return path
