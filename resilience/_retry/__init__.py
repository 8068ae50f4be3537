"""Retries: the one what-next decision, the Retry drivers and retry budgets."""
