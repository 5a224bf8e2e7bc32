"""Who may be contacted, on which channel and when.

Consent, channel choice, quiet hours, the frequency cap, bundling, and the timing pipeline.
"""
