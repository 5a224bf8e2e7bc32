"""Seasonal tire change reminders for careflow: winter tires before the first frost, summer tires after."""

__version__ = "0.1.0"
