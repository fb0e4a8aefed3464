"""Who may start answers, and how many: API keys, stream tickets, admission, limits."""
