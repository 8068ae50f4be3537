"""Upstreams: discovery, load balancing and outlier ejection (the transport-independent part)."""
