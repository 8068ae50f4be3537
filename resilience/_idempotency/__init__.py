"""Idempotency: effects that happen once (the implementation of `resilience.idempotency`).

One file per job: `_backend` (the store interface every caller codes against),
`_memory` (`MemoryStore`), `_redis` (the same records in Redis), `_decorator`
(`idempotent`), `_http` (`Idempotency` and the framework-neutral HTTP rules).
"""
