"""The physician review web app (server-rendered, Chinese first, English too)."""
