"""careflow's version, in a module of its own: the plugin manager checks plugins against it."""

__version__ = "0.1.0"
