"""careflow's default message templates, installed as ``careflow_templates``.

Layout: ``<plugin>/<channel>.<locale>.j2``. This file only makes the folder installable.
"""
