"""The circuit breaker: settings, windows, the state machine, the façade and the registry."""
