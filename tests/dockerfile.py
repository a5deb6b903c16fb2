"""What `docker build` would put in the image, worked out without a Docker engine (none runs on the build machines).

`DockerIgnore` follows BuildKit's rules (moby/patternmatcher): lines are cleaned paths relative to the context, the
last matching line wins, `!` re-includes, `*` and `?` stop at `/`, `**` spans any number of directories (none
included), and a pattern that matches a directory matches everything under it. `Dockerfile` reads the stages'
FROM, WORKDIR, ENV, COPY, CMD and HEALTHCHECK; `assemble` copies a stage's COPY sources from the context (as
.dockerignore filters it) into a temporary root, so that the image's own command can be run on its own files.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

_REGEX_SPECIAL = set(".+()|{}$^")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """patternmatcher's translation of one cleaned pattern to a regular expression."""
    out = "^"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1 : i + 2] == "*":
                i += 1
                if pattern[i + 1 : i + 2] == "/":  # `**/` is `**`: the slash is eaten
                    i += 1
                # `**` at the end accepts everything; elsewhere any number of directories, even none
                out += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\":
            if i + 1 < len(pattern):
                i += 1
                out += re.escape(pattern[i])
            else:
                out += "\\\\"
        elif ch in "[]":
            out += ch
        elif ch in _REGEX_SPECIAL:
            out += "\\" + ch
        else:
            out += ch
        i += 1
    return re.compile(out + "$")


@dataclass(frozen=True)
class _Rule:
    exclusion: bool  # a `!` line: re-includes what it matches
    regex: re.Pattern[str]


class DockerIgnore:
    def __init__(self, text: str) -> None:
        self.rules: list[_Rule] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = line.startswith("!")
            if exclusion:
                line = line[1:].strip()
            if not line:
                continue
            cleaned = os.path.normpath(line).replace(os.sep, "/")
            if len(cleaned) > 1 and cleaned.startswith("/"):
                cleaned = cleaned[1:]
            self.rules.append(_Rule(exclusion, glob_regex(cleaned)))

    def excluded(self, path: str) -> bool:
        """Whether a path of the context (relative, with /) is left out of it."""
        parts = PurePosixPath(path).parts
        parents = ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]
        matched = False
        for rule in self.rules:
            if rule.exclusion != matched:  # only a rule that could change the verdict is tried
                continue
            if rule.regex.match(path) or any(rule.regex.match(p) for p in parents):
                matched = not rule.exclusion
        return matched


def _logical_lines(text: str) -> list[str]:
    """Instructions, with `\\` continuations joined and comments dropped (parser directives included)."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def _expand(value: str, env: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return env.get(name, "")

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", sub, value)


def _exec_form(rest: str) -> list[str]:
    rest = rest.strip()
    if rest.startswith("["):
        value = json.loads(rest)
        assert isinstance(value, list)
        assert all(isinstance(v, str) for v in value)
        return value
    return ["/bin/sh", "-c", rest]


@dataclass
class Copy:
    sources: list[str]
    dest: str
    workdir: str
    from_stage: str | None


@dataclass
class Stage:
    name: str
    base: str
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    copies: list[Copy] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    user: str = ""


class Dockerfile:
    def __init__(self, text: str) -> None:
        self.stages: list[Stage] = []
        args: dict[str, str] = {}
        for line in _logical_lines(text):
            instruction, _, rest = line.partition(" ")
            instruction = instruction.upper()
            if instruction == "ARG" and not self.stages:
                name, _, default = rest.strip().partition("=")
                args[name] = default
            elif instruction == "FROM":
                words = rest.split()
                words = [w for w in words if not w.startswith("--")]
                name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(self.stages))
                self.stages.append(Stage(name=name, base=_expand(words[0], args)))
            elif not self.stages:
                continue
            else:
                self._instruction(self.stages[-1], instruction, rest)

    @staticmethod
    def _instruction(stage: Stage, instruction: str, rest: str) -> None:
        if instruction == "WORKDIR":
            path = _expand(rest.strip(), stage.env)
            stage.workdir = str(PurePosixPath(stage.workdir, path))
        elif instruction == "ENV":
            words = shlex.split(rest)
            if words and "=" not in words[0]:  # the legacy `ENV NAME value with spaces`
                stage.env[words[0]] = _expand(rest.strip()[len(words[0]) :].strip(), stage.env)
            else:
                for word in words:
                    name, _, value = word.partition("=")
                    stage.env[name] = _expand(value, stage.env)
        elif instruction in ("COPY", "ADD"):
            words = json.loads(rest) if rest.strip().startswith("[") else shlex.split(rest)
            from_stage = None
            while words and words[0].startswith("--"):
                flag = words.pop(0)
                if flag.startswith("--from="):
                    from_stage = flag.split("=", 1)[1]
            *sources, dest = words
            stage.copies.append(Copy(sources, _expand(dest, stage.env), stage.workdir, from_stage))
        elif instruction == "CMD":
            stage.cmd = _exec_form(rest)
        elif instruction == "USER":
            stage.user = rest.strip()
        elif instruction == "HEALTHCHECK":
            words = rest.split()
            while words and words[0].startswith("--"):
                words.pop(0)
            if words and words[0].upper() == "CMD":
                stage.healthcheck = _exec_form(rest[rest.upper().index("CMD") + 3 :])

    @property
    def final(self) -> Stage:
        """The stage `docker build` makes by default: the last one."""
        return self.stages[-1]


def context_files(context: Path, ignore: DockerIgnore) -> set[str]:
    """Every file of the build context after .dockerignore, as relative paths with /."""
    kept: set[str] = set()
    for root, dirs, files in os.walk(context):
        rel_root = os.path.relpath(root, context).replace(os.sep, "/")
        rel_root = "" if rel_root == "." else rel_root + "/"
        # A directory that is excluded may still hold re-included files: walk it unless nothing can come back.
        dirs[:] = [d for d in dirs if d not in (".git", ".venv", "node_modules")]
        for name in files:
            path = rel_root + name
            if not ignore.excluded(path):
                kept.add(path)
    return kept


def assemble(dockerfile: Dockerfile, context: Path, root: Path, stage: Stage | None = None) -> None:
    """Copy what a stage's COPY instructions take from the build context to `root` (the image's `/`).

    COPY --from another stage is left out: those are built artefacts (the virtualenv), not context files. As in
    `docker build`, a directory's contents go into the destination, a file goes to it (or into it when it ends
    with `/` or several files are copied), a pattern that matches nothing is allowed only beside a source that
    matches, and a source that is missing from the filtered context fails.
    """
    stage = stage or dockerfile.final
    ignore_file = context / ".dockerignore"
    ignore = DockerIgnore(ignore_file.read_text() if ignore_file.exists() else "")
    files = context_files(context, ignore)
    dirs = {str(parent) for path in files for parent in PurePosixPath(path).parents if str(parent) != "."}
    for copy in stage.copies:
        if copy.from_stage is not None:
            continue
        dest = PurePosixPath(copy.workdir, copy.dest)
        matches: list[str] = []
        for source in copy.sources:
            source = os.path.normpath(source).replace(os.sep, "/").strip("/")
            if _is_glob(source):
                regex = glob_regex(source)
                matches += sorted(p for p in files | dirs if regex.match(p))
            elif source in files or source in dirs:
                matches.append(source)
            else:
                raise FileNotFoundError(f"COPY {source}: not in the build context (missing, or .dockerignore'd)")
        if not matches:
            raise FileNotFoundError(f"COPY {' '.join(copy.sources)}: no source files were specified")
        into_dir = copy.dest.endswith("/") or len(matches) > 1
        for match in matches:
            if match in dirs:
                pairs = [(p, dest / p[len(match) + 1 :]) for p in sorted(files) if p.startswith(match + "/")]
            else:
                pairs = [(match, dest / PurePosixPath(match).name if into_dir else dest)]
            for path, target in pairs:
                out = root / str(target).lstrip("/")
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(context / path, out)


def _is_glob(source: str) -> bool:
    return any(ch in source for ch in "*?[")


def image_path(root: Path, path: str) -> Path:
    """A path inside the image, under the assembled root."""
    return root / path.lstrip("/")
