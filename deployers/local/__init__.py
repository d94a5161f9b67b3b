"""The local deployer: one ``modelreg serve-model`` process per replica, on a loopback port.

Every instance is recorded in a JSON file under ``state_dir`` (``instances/``), every workload
(the replicas and version the last ``apply`` asked for) in another (``workloads/``), and every
instance writes its output to ``logs/``. The files, not this object, are the state: a new
:class:`LocalDeployer` on the same ``state_dir`` (a restarted controller) adopts the servers
still running instead of starting duplicates. Servers run in sessions of their own, so they
outlive a controller that is killed.

A recorded instance is alive when its pid exists, is not a zombie, and started at the time
recorded (field 22 of ``/proc/<pid>/stat``): a pid that now belongs to another process is
neither adopted nor signalled. Linux only.

The parts: ``deployer`` (:class:`LocalDeployer`, which supervises the processes), ``state``
(the records, logs and artifact copies under ``state_dir``) and ``processes`` (the servers'
environment and limits, and what ``/proc`` says of them).
"""

from __future__ import annotations

from deployers.local.deployer import LocalDeployer
from deployers.local.processes import child_env

__all__ = ["LocalDeployer", "child_env"]
