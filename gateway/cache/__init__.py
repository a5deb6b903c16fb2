"""The response cache: exact and semantic, per project."""
