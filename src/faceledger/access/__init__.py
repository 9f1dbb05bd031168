"""Who may do what: API keys with a tenant, scopes and a declared purpose."""
