"""The web console at `/console`: server-rendered pages for ops (admins) and users."""
