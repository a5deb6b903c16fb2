"""The part of kustomize that deploy/kubernetes uses, to render its overlays in the tests without the kustomize
binary (no Python package renders kustomize offline; kubectl's own wheel is a 60 MB binary from an unaffiliated
publisher). What a kustomization holds beyond this subset is refused, never ignored, so a manifest cannot come to
depend on something this helper renders wrongly.

Handled: `resources` (files and kustomization folders), `configMapGenerator` and `secretGenerator` (`files`, `envs`,
`literals`, `behavior: create|replace|merge`, `options.disableNameSuffixHash`), strategic-merge `patches` by `path`
(the target is the patch's own kind and name), `images` and `replicas`. Generated names get a suffix from a hash of
their content, and every reference to them (volumes, env, envFrom) is renamed, as kustomize does; the suffix is not
kustomize's own hash, only as content-bound.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from pathlib import Path
from typing import Any

import orjson
import yaml

_KNOWN = {"apiVersion", "kind", "resources", "configMapGenerator", "secretGenerator", "patches", "images", "replicas"}
# The lists that a strategic merge patch merges item by item (their patchMergeKey in the Kubernetes API), not replaces.
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
               "volumeMounts": "mountPath", "ports": "containerPort"}  # fmt: skip
_HASHED = "__kustomize_hash"  # an internal mark on generated objects that take a name suffix


class Unsupported(Exception):
    """The kustomization uses something this subset does not render."""


def render(folder: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize folder` would print (names of generated objects aside)."""
    objects = _build(folder)
    renames: dict[tuple[str, str], str] = {}
    for obj in objects:
        if obj.pop(_HASHED, False):
            name = obj["metadata"]["name"]
            digest = hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:10]
            obj["metadata"]["name"] = renames[(obj["kind"], name)] = f"{name}-{digest}"
    for obj in objects:
        for pod in _pod_specs(obj):
            _rename_references(pod, renames)
    return objects


def _build(folder: Path) -> list[dict[str, Any]]:
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(spec) - _KNOWN
    if unknown:
        raise Unsupported(f"{folder}: {sorted(unknown)}")
    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = folder / entry
        if path.is_dir():
            objects += _build(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for kind, generators in (("ConfigMap", spec.get("configMapGenerator", [])),
                             ("Secret", spec.get("secretGenerator", []))):  # fmt: skip
        for generator in generators:
            _generate(objects, folder, kind, generator)
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise Unsupported(f"{folder}: a patch other than a strategic merge by path: {patch}")
        body = yaml.safe_load((folder / patch["path"]).read_text())
        target = _find(objects, body["kind"], body["metadata"]["name"])
        target.update(_merge(target, body))
    for image in spec.get("images", []):
        for obj in objects:
            for pod in _pod_specs(obj):
                for container in pod.get("containers", []) + pod.get("initContainers", []):
                    _set_image(container, image)
    for replicas in spec.get("replicas", []):
        _find(objects, None, replicas["name"])["spec"]["replicas"] = replicas["count"]
    return objects


def _generate(objects: list[dict[str, Any]], folder: Path, kind: str, generator: dict[str, Any]) -> None:
    unknown = set(generator) - {"name", "files", "envs", "literals", "behavior", "options"}
    if unknown or set(generator.get("options", {})) - {"disableNameSuffixHash"}:
        raise Unsupported(f"{folder}: {kind} generator {generator}")
    data: dict[str, str] = {}
    for entry in generator.get("files", []):
        key, _, path = entry.rpartition("=")
        data[key or Path(path).name] = (folder / path).read_text()
    for entry in generator.get("envs", []):
        data.update(env_file((folder / entry).read_text()))
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    name = generator["name"]
    behavior = generator.get("behavior", "create")
    existing = next((o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name), None)
    if behavior == "create":
        if existing is not None:
            raise Unsupported(f"{folder}: {kind} {name} exists: say behavior replace or merge")
        obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}
        objects.append(obj)
    elif existing is None:
        raise Unsupported(f"{folder}: {kind} {name} to {behavior} does not exist")
    else:
        obj = existing
        if behavior == "merge":
            data = {**_decoded(obj), **data}
    if kind == "Secret":
        obj["type"] = "Opaque"
        obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        obj["data"] = data
    obj[_HASHED] = not generator.get("options", {}).get("disableNameSuffixHash", False)


def _decoded(obj: dict[str, Any]) -> dict[str, str]:
    if obj["kind"] == "Secret":
        return {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
    return dict(obj.get("data", {}))


def secret_data(obj: dict[str, Any]) -> dict[str, str]:
    """A rendered Secret's values, decoded."""
    return _decoded(obj)


def env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines, as kustomize reads an `envs` file: # comments and blank lines skipped, no quoting."""
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            if not sep:
                raise Unsupported(f"not KEY=VALUE: {line!r}")
            out[key.strip()] = value
    return out


def _find(objects: list[dict[str, Any]], kind: str | None, name: str) -> dict[str, Any]:
    found = [o for o in objects if (kind is None or o["kind"] == kind) and o["metadata"]["name"] == name]
    if len(found) != 1:
        raise Unsupported(f"{len(found)} objects are {kind or 'any kind'} {name}")
    return found[0]


def _merge(base: Any, patch: Any, key: str = "") -> Any:
    """A strategic merge: maps merge key by key (null deletes), lists with a merge key merge item by item, other
    lists and values are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if "$patch" in patch:
            raise Unsupported(f"$patch directives: {patch}")
        out = copy.deepcopy(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = _merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in _MERGE_KEYS:
        # The patch's items first, merged into their namesakes, then the base's other items: kustomize's order.
        merge_key = _MERGE_KEYS[key]
        by_key = {item.get(merge_key): item for item in base}
        patched = [_merge(by_key[item.get(merge_key)], item) if item.get(merge_key) in by_key else copy.deepcopy(item)
                   for item in patch]  # fmt: skip
        named = {item.get(merge_key) for item in patch}
        return patched + [copy.deepcopy(item) for item in base if item.get(merge_key) not in named]
    return copy.deepcopy(patch)


def _pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [obj["spec"]["template"]["spec"]]
    if obj["kind"] == "Pod":
        return [obj["spec"]]
    return []


def _image_name(image: str) -> tuple[str, str]:
    """(name, the rest: ":tag", "@digest" or "")."""
    if "@" in image:
        name, _, digest = image.partition("@")
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def _set_image(container: dict[str, Any], image: dict[str, Any]) -> None:
    name, rest = _image_name(container["image"])
    if name != image["name"]:
        return
    new = image.get("newName", name)
    if "digest" in image:
        rest = "@" + image["digest"]
    elif "newTag" in image:
        rest = ":" + image["newTag"]
    container["image"] = new + rest


def _rename_references(pod: dict[str, Any], renames: dict[tuple[str, str], str]) -> None:
    def rename(ref: dict[str, Any], kind: str, field: str = "name") -> None:
        ref[field] = renames.get((kind, ref[field]), ref[field])

    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            rename(volume["configMap"], "ConfigMap")
        if "secret" in volume:
            rename(volume["secret"], "Secret", "secretName")
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        for env in container.get("env", []):
            source = env.get("valueFrom", {})
            if "configMapKeyRef" in source:
                rename(source["configMapKeyRef"], "ConfigMap")
            if "secretKeyRef" in source:
                rename(source["secretKeyRef"], "Secret")
        for env_from in container.get("envFrom", []):
            if "configMapRef" in env_from:
                rename(env_from["configMapRef"], "ConfigMap")
            if "secretRef" in env_from:
                rename(env_from["secretRef"], "Secret")
