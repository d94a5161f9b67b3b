"""The registry layer: ORM, settings, artifact storage and the services that own transactions.

Nothing in this package imports from the other modelreg packages.
"""
