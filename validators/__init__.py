"""Artifact validators: the security scan, the functional check and the benchmark.

Each validator is a function from (artifact, policy) to a frozen report and never touches the
database: ``security.scan_artifact``, ``functional.check_model``, ``benchmark.benchmark_model``.
``worker`` claims queued runs from the registry, runs the three in a child process
(``run.validate_artifact``) and stores the result through the registry's ValidationService.
"""
