"""Browser tokens: a backend holding a gateway key mints short-lived tokens for browser pages."""
