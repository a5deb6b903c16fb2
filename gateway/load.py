"""The config as the gateway takes it: gateway/config.py's parse and checks, plus those of the layers above it
that config.py cannot know (the pipeline's filters and their order), reported together in one ConfigError."""

from __future__ import annotations

import os
from collections.abc import Mapping

from gateway.config import (
    ConfigError,
    GatewayConfig,
    Problem,
    load_config as _load_config,
    parse_config as _parse_config,
)
from gateway.pipeline import pipeline_problems

__all__ = ["ConfigError", "load_config", "parse_config"]


def _pipeline(config: GatewayConfig) -> list[Problem]:
    return pipeline_problems(config.pipeline)


CHECKS = (_pipeline,)


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> GatewayConfig:
    return _load_config(path, env, checks=CHECKS)


def parse_config(
    text: str, *, source: str = "<config>", env: Mapping[str, str] | None = None, base_dir: str = "."
) -> GatewayConfig:
    return _parse_config(text, source=source, env=env, base_dir=base_dir, checks=CHECKS)
