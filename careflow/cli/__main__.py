"""``python -m careflow.cli``: the same command as the ``careflow`` script."""

from careflow.cli.app import main

main()
