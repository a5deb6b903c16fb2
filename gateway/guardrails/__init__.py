"""Guardrail checks on prompts and answers. Each check is built once from its settings and returns a CheckResult:
a score, whether its threshold was crossed, and findings as types and positions, never the matched text."""
