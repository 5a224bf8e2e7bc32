"""careflow over HTTP: the console for centers and marketers (and, once merged, the webhooks)."""
