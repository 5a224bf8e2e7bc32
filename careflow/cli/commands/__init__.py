"""One module per command group; each adds its commands through ``register(main)`` (see careflow.cli.app)."""
