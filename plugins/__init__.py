"""careflow's built-in care plugins (installed as ``careflow_plugins``).

Each module here is an ordinary pluggy plugin registered through the ``careflow``
entry-point group, exactly as a third-party package would be.
"""
