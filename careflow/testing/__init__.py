"""Helpers for testing careflow and care plugins: settings, runtimes, customers, a care day.

The same helpers back careflow's own tests and are offered to plugin authors through the
``careflow`` pytest plugin (``careflow.testing.fixtures``).
"""

# Everything importable from here; each piece lives in its own module.
# ("import X as X" marks an explicit re-export for mypy --strict.)
from careflow.runtime import Runtime as Runtime
from careflow.testing.capture import CapturingProvider as CapturingProvider
from careflow.testing.careday import CareRunFailed as CareRunFailed
from careflow.testing.careday import SentMessage as SentMessage
from careflow.testing.careday import run_care_day as run_care_day
from careflow.testing.clock import FrozenClock as FrozenClock
from careflow.testing.factories import Factories as Factories
from careflow.testing.helpers import RuntimeFactory as RuntimeFactory
from careflow.testing.helpers import add_customer as add_customer
from careflow.testing.helpers import add_visit as add_visit
from careflow.testing.helpers import build_runtime as build_runtime
from careflow.testing.helpers import center as center
from careflow.testing.helpers import loaded_customers as loaded_customers
from careflow.testing.helpers import make_settings as make_settings
from careflow.testing.helpers import parse_instant as parse_instant
