"""careflow: plugin-based customer care automation for service centers."""

from careflow.version import __version__ as __version__
