"""Messaging: at-least-once delivery made effectively-once (public API: `resilience.messaging`).

- `_settings.py`: `Consumer`, the validated settings.
- `_decision.py`: what to do with a message, decided from facts alone.
- `_handling.py`: `Subscription`, the core that carries a message through dedupe, the policy
  and the decision, acting through the broker adapter.
- `_port.py`: `BrokerPort`, what an adapter implements.
- `_headers.py`: trace context, deadline and failure headers; `_trace.py`: spans.
- `_events.py`: the consumer's events.
"""
