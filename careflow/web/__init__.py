<<<<<<< HEAD
"""careflow's web endpoints (Starlette apps and routes)."""
=======
"""careflow's HTTP side: Twilio webhooks now, the web console later, in one Starlette app."""
>>>>>>> issue4-policy
