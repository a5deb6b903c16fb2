"""Feature flags resolve project over global and API over config; a store that fails keeps the values in force."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config
from gateway.config.telemetry import FeaturesConfig, flag_problem
from gateway.flags import Features, ProjectGate
from gateway.store.rows import FlagOverride
from gateway.telemetry.content import ContentLogger, input_text, output_text


class FakeFlagStore:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], object] = {}
        self.revision = 0
        self.fail = False
        self.reads = 0

    async def feature_flags(self):
        self.reads += 1
        return [FlagOverride(p, f, v) for (p, f), v in self.rows.items()]

    async def set_feature_flag(self, project, flag, value, *, author):
        if value is None:
            self.rows.pop((project, flag), None)
        else:
            self.rows[(project, flag)] = value
        self.revision += 1

    async def feature_flags_revision(self):
        if self.fail:
            raise ConnectionError("store down")
        return self.revision


def features(store=None, **config) -> Features:
    return Features(FeaturesConfig(**config), content_mode="off", sinks=["lf"], store=store)


def test_project_values_beat_global_ones_and_defaults_fill_the_rest():
    f = features(defaults={"cost_tracking": False}, projects={"a": {"cost_tracking": True, "sink.lf": False}})
    assert f.enabled("cost_tracking", "a")
    assert not f.enabled("cost_tracking", "b")
    assert not f.enabled("sink.lf", "a")
    assert f.enabled("sink.lf", "b")
    assert f.enabled("similarity", "b")  # a default
    assert f.enabled("guardrail.pii", "a")  # a check not named is on
    assert f.content_mode("a") == "off"
    assert f.any_off("sink.")
    assert not f.any_off("guardrail.")


@pytest.mark.anyio
async def test_record_flags_say_what_enabled_and_content_mode_say():
    store = FakeFlagStore()
    f = features(
        store,
        defaults={"cost_tracking": False, "content_logging": "full"},
        projects={"a": {"cost_tracking": True, "similarity": False}, "c": {"content_logging": "redacted"}},
    )
    await f.refresh()
    await f.set("similarity", False, project="c", author="admin")
    for project in ("a", "b", "c", ""):
        expected = (f.enabled("cost_tracking", project), f.enabled("similarity", project), f.content_mode(project))
        assert f.record_flags(project) == expected
    assert f.record_flags("a") == (True, False, "full")
    assert f.record_flags("c") == (False, False, "redacted")
    assert features().record_flags("x") == (True, True, "off")  # the defaults


@pytest.mark.anyio
async def test_api_overrides_beat_the_config_at_their_level_and_removing_one_restores_it():
    store = FakeFlagStore()
    f = features(store, defaults={"content_logging": "full"}, projects={"a": {"content_logging": "redacted"}})
    await f.refresh()
    await f.set("content_logging", "off", project="", author="admin")
    assert f.content_mode("b") == "off"  # the global API value beats the global config value
    assert f.content_mode("a") == "redacted"  # the project's config value still beats any global one
    await f.set("content_logging", "full", project="a", author="admin")
    assert f.content_mode("a") == "full"
    assert f.snapshot("a")["content_logging"] == {"value": "full", "source": "api:project"}
    await f.set("content_logging", None, project="a", author="admin")
    assert f.snapshot("a")["content_logging"] == {"value": "redacted", "source": "config:project"}
    assert f.snapshot(None)["content_logging"]["source"] == "api"


@pytest.mark.anyio
async def test_a_store_that_fails_keeps_the_values_in_force_and_an_unchanged_revision_reads_nothing():
    store = FakeFlagStore()
    store.rows[("a", "cost_tracking")] = False
    store.revision = 1
    f = features(store)
    await f.refresh()
    assert not f.enabled("cost_tracking", "a")
    await f.refresh()
    assert store.reads == 1  # the revision did not move
    store.fail = True
    await f.refresh()
    assert f.error == "ConnectionError"
    assert not f.enabled("cost_tracking", "a")


@pytest.mark.anyio
async def test_an_override_the_config_no_longer_knows_is_ignored():
    store = FakeFlagStore()
    store.rows[("", "sink.gone")] = False
    store.revision = 1
    f = features(store)
    await f.refresh()
    assert not f.any_off("sink.")


def test_flag_problems():
    assert flag_problem("content_logging", "full", []) is None
    assert "one of" in (flag_problem("content_logging", True, []) or "")
    assert "true or false" in (flag_problem("cost_tracking", "yes", []) or "")
    assert "unknown flag" in (flag_problem("sink.nope", True, ["lf"]) or "")
    assert flag_problem("guardrail.pii", False, []) is None
    assert "unknown flag" in (flag_problem("guardrail.nope", False, []) or "")


def test_the_config_names_a_bad_flag_with_its_path():
    with pytest.raises(ConfigError) as err:
        parse_config("features: {projects: {acme: {content_logging: everything}}}")
    assert "features.projects.acme.content_logging: must be one of off, redacted, full" in str(err.value)


class Recording:
    name = "lf"

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def write(self, records):
        self.batches.append([r["id"] for r in records])


@pytest.mark.anyio
async def test_a_sink_never_sees_the_records_of_a_project_that_turned_it_off():
    inner = Recording()
    gate = ProjectGate(inner, features(projects={"quiet": {"sink.lf": False}}), "sink.lf")
    await gate.write([{"id": "1", "project": "quiet"}, {"id": "2", "project": "loud"}])
    await gate.write([{"id": "3", "project": "quiet"}])
    assert inner.batches == [["2"]]


def test_content_is_rendered_per_mode_redacted_before_truncation():
    body = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "I am a@b.co"}]}
    text = input_text("chat/completions", body)
    assert text == "system: Be brief.\nuser: I am a@b.co"
    logger = ContentLogger(max_chars=24)
    assert logger.render("off", text) == ""
    assert logger.render("full", "x" * 30) == "x" * 24 + "…[truncated]"
    redacted = ContentLogger(max_chars=1000).render("redacted", text)
    assert "a@b.co" not in redacted
    assert "[EMAIL]" in redacted
    answer = b'{"choices": [{"message": {"role": "assistant", "content": "Hello"}}]}'
    assert output_text(answer, None) == "Hello"
    assert output_text(None, ["He", "llo"]) == "Hello"
    assert output_text(b"not json", None) == ""


def test_redaction_of_a_repeated_text_is_looked_up_and_long_texts_are_still_redacted():
    logger = ContentLogger(max_chars=100_000)
    first = logger.render("redacted", "mail me at a@b.co")
    assert logger.render("redacted", "mail me at a@b.co") == first == "mail me at [EMAIL]"
    assert logger.render("redacted", "write to c@d.co") == "write to [EMAIL]"  # its own, not the cached one
    assert logger.render("full", "mail me at a@b.co") == "mail me at a@b.co"  # the cache is redaction's only
    long_text = "x " * 5000 + "card 4111 1111 1111 1111"  # beyond what is cached
    assert "4111" not in logger.render("redacted", long_text)


def test_the_cache_flag_is_off_unless_a_project_says_exact_or_semantic():
    assert flag_problem("cache", "semantic", []) is None
    assert "one of off, exact, semantic" in (flag_problem("cache", True, []) or "")
    features = Features(FeaturesConfig(projects={"faq": {"cache": "exact"}}))
    assert (features.value("cache", "faq"), features.value("cache", "other")) == ("exact", "off")
    assert features.snapshot("faq")["cache"] == {"value": "exact", "source": "config:project"}
