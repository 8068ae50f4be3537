"""Integrations: `resilience.integrations.fastapi`, `resilience.integrations.flask` (web
frameworks) and `resilience.integrations.aio_pika` (RabbitMQ).

Nothing is imported here, so a missing framework only matters to the module that needs it.
"""
