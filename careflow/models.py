"""Where plugins written before the public API imported the models (and ``Purpose``) from.

Kept so that those plugins, and every plugin ``careflow plugin new`` generated before, still
load. New code imports from ``careflow``; the models live in ``careflow.storage.models``.
"""

import warnings

from careflow.care import Purpose as Purpose
from careflow.storage.models import *  # noqa: F403

warnings.warn(
    "careflow.models is deprecated: import the models and Purpose from careflow",
    DeprecationWarning,
    stacklevel=2,
)
