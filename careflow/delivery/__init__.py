"""Delivery: claims, preparation, sends, outcomes, recovery, the sender rate limit, the Dramatiq actors."""
