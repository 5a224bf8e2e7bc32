"""pytest fixtures for careflow and its plugins (registered as the ``careflow`` pytest plugin)."""
