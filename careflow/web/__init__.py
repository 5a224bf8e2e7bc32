"""careflow over HTTP: Twilio webhooks, one-click unsubscribe and the web console, in one Starlette app."""
