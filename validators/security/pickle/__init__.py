"""The pickle scanner: it reads pickle opcodes as data and never unpickles.

``scan_pickle`` emulates what an unpickler would do (its stack, its mark stack and its memo)
with inert values, so that a global is named by the bytes that would name it whatever route
leads there: ``GLOBAL`` and ``INST`` lines, ``STACK_GLOBAL`` operands pushed as any string
opcode or fetched back from the memo, and so on. Every import is classified by the
``SecurityPolicy`` (see ``validators.security.policy`` for the severity mapping). The stream
is read in chunks and large byte blobs are skipped with ``seek`` rather than read, so memory
stays bounded whatever the file size (the memo keeps only what a later step can read back).
Every pickle concatenated in the stream is scanned. The raw array bytes joblib writes after a
``NumpyArrayWrapper`` are stepped over, as ``joblib.load`` does; the same bytes are also read
as plain ``pickle.load`` would read them (as opcodes), so a payload disguised as array data is
seen too. Constant pickles handed to ``pickle.loads`` and the like are scanned as well.

Malformed input never raises: the emulator tolerates stack and memo errors (a LOW finding,
and values it cannot know become "computed", which makes a later ``STACK_GLOBAL`` HIGH), and a
parse error ends the scan with a finding (HIGH when an import came before it).

``check_torch_zip`` checks the member layout of a PyTorch zip checkpoint.

Rule ids: ``pickle.dangerous-global`` (CRITICAL), ``pickle.suspicious-global``,
``pickle.unresolved-global``, ``pickle.parse-error-after-import``, ``pickle.limits``,
``pickle.joblib-unverified``, ``scanner.error`` (HIGH), ``pickle.unknown-global``,
``pickle.indirect-call``, ``pickle.extension-code`` (MEDIUM), ``pickle.parse-error``,
``pickle.malformed``, ``pickle.trailing-data`` (LOW); ``torch.layout`` (LOW to HIGH) and
``torch.torchscript`` (MEDIUM) for zip layouts. One finding per rule and global: repeats are
counted in its message, and a call on a flagged global adds nothing to the global's finding.

The modules, from the bottom up: ``reader`` (the buffered stream and the opcode table),
``values`` (the inert values and the memo), ``classification`` (which globals and calls are
dangerous), ``machine`` (the emulated unpickler state and the findings of a scan),
``opcodes`` (what each opcode does), ``emulator`` (the opcode loop over every pickle in a
stream) and ``torch`` (the zip checkpoint layout).
"""

from __future__ import annotations

from validators.security.pickle.classification import classify_global
from validators.security.pickle.emulator import looks_like_pickle, scan_pickle
from validators.security.pickle.reader import PickleError
from validators.security.pickle.torch import check_torch_zip

__all__ = ["PickleError", "check_torch_zip", "classify_global", "looks_like_pickle", "scan_pickle"]
