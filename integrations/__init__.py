"""Framework integrations: `resilience.integrations.fastapi` and `resilience.integrations.flask`.

Nothing is imported here, so a missing framework only matters to the module that needs it.
"""
