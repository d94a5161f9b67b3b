"""Deployers: local model-server processes and Kubernetes, behind one interface.

Empty for now: the rollouts issue fills it.
"""
