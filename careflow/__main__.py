"""``python -m careflow``: the same command as ``careflow`` (handy from a virtualenv's python)."""

from careflow.cli import main

main(prog_name="careflow")
