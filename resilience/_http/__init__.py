"""HTTP clients: the rules and the per-request core shared by every client adapter."""
