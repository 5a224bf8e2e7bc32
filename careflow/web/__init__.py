"""careflow's HTTP side: Twilio webhooks now, the web console later, in one Starlette app."""
