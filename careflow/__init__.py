"""careflow: plugin-based customer care automation for service centers."""

__version__ = "0.1.0"
