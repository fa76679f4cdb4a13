"""Who acts on loa: persons and their roles, API tokens, the audit log, for the API and the CLI."""
