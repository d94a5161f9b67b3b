"""Artifact validators: security scan, functional check and benchmark.

Empty for now: the validators issue fills it. Until then the promotion gate checks only that
an artifact exists (``registry.services.versions.promotion_gate``).
"""
