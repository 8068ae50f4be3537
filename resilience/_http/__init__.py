"""HTTP clients: one decision core, thin I/O adapters (``resilience.httpx`` today).

- `._compat`: the only place httpx is imported from.
- `._rules`: pure HTTP rules: what may be sent again (`ErrorKinds` per client library),
  safe-to-repeat requests, `Retry-After`, attempt timeouts under a deadline, the authority.
- `._overrides`: ``request.extensions["resilience"]``, validated.
- `._hosts`: the bounded per-host breakers and their read-only `BreakerMap` view.
- `._core`: `TransportCore`, the per-request plan and per-attempt bookkeeping; it asks
  `resilience._retry._decision.decide` what follows a failure, like `Retry` does.
- `._streams`: response bodies read or wrapped under the deadline, for the I/O twins.

An adapter for another client builds a `TransportCore` (with that client's `ErrorKinds`)
and calls ``begin``, then per attempt ``before_attempt``, its own I/O, and ``after_error`` or
``after_response``; it sleeps the wait those return, or stops on None.
"""
