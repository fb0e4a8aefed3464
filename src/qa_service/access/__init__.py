"""Who may start answers, and how many: API keys, stream tickets, admission and
per-client limits."""
