"""The ``careflow`` command (``careflow.cli:main``, the console script).

``base`` holds what every command shares and imports no command; ``commands/`` has one module
per command group, each adding its commands through ``register(main)``; ``app`` builds the
group and lists those modules.
"""

from careflow.cli.app import main as main
