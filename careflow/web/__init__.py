"""careflow's web endpoints (Starlette apps and routes)."""
