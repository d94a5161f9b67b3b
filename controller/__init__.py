"""The deployment controller: reconcile loop, rollout strategies and analysis.

Empty for now: the rollouts issue fills it. Nothing here pretends to work yet.
"""
