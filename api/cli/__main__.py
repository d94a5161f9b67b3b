"""``python -m api.cli``: the ``modelreg`` command line, as the tests and the local deployer
start it."""

from api.cli import main

main()
