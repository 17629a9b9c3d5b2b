"""docs/openapi.yaml against the app: every route the daemon serves (``StoreApi.routes`` under /api/v1/
and the Starlette routes of ``build_admin``) is described with exactly its methods, the spec has no
path the app lacks, and the documented JSON shapes and error codes are the ones the code produces.

The app objects are built in-process: ``Node`` opens no socket and spawns no process until
``pool.start``/``spawn_all``, which are never called here.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Route

from bigbunny import errors
from bigbunny.config import build_config
from bigbunny.configfile import ConfigFile
from bigbunny.supervisor.flags import PARAMS
from bigbunny.supervisor.front import metrics, status
from bigbunny.supervisor.front.admin import App, customer_report
from bigbunny.supervisor.front.names import NamesApi
from bigbunny.supervisor.state.node import Node
from bigbunny.supervisor.state.reload import Reloader

SPEC_PATH = REPO / "docs" / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    with open(SPEC_PATH, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    cfg = build_config({"dev": True, "shards": 2}, {})
    n = Node(cfg, str(tmp_path_factory.mktemp("run")))
    try:
        yield n
    finally:
        n.pool.ctx.term()


@pytest.fixture(scope="module")
def app(node: Node) -> App:
    return App(node)


def _shape(path: str) -> str:
    """``/a/{id}`` and ``/a/{id:str}`` → ``/a/{}``: compare templates, not parameter spellings."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def app_routes(app: App) -> dict[str, tuple[str, set[str]]]:
    """shape → (path as the spec must spell it, methods) for everything the daemon routes."""
    out: dict[str, tuple[str, set[str]]] = {}
    for seg, (handler, takes_param, _forwarded, _label) in app.api.routes.items():
        param = "{name}" if isinstance(getattr(handler, "__self__", None), NamesApi) else "{id}"
        path = "/api/v1/" + seg.decode() + ("/" + param if takes_param else "")
        out[_shape(path)] = (path, {"POST"})  # the dispatcher answers 405 to anything but POST
    for route in app.admin.routes:
        assert isinstance(route, Route), route
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        out[_shape(path)] = (path, set(route.methods or ()))
    return out


def spec_routes(spec: dict[str, Any]) -> dict[str, tuple[str, set[str]]]:
    return {_shape(p): (p, {m.upper() for m in item if m in METHODS}) for p, item in spec["paths"].items()}


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, op


def resolve(spec: dict[str, Any], obj: Any) -> Any:
    while isinstance(obj, dict) and "$ref" in obj:
        node: Any = spec
        for part in obj["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        obj = node
    return obj


# --- the route table ---------------------------------------------------------------------------------
def test_spec_is_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1.")
    assert spec["info"]["title"] and spec["info"]["version"]
    assert spec["paths"]


def test_every_route_is_described_with_its_methods(spec: dict[str, Any], app: App) -> None:
    have, documented = app_routes(app), spec_routes(spec)
    assert len(have) == len(app.api.routes) + len(app.admin.routes), "two routes with one path shape?"
    missing = sorted(have[k][0] for k in have.keys() - documented.keys())
    extra = sorted(documented[k][0] for k in documented.keys() - have.keys())
    assert not missing, f"routes missing from docs/openapi.yaml: {missing}"
    assert not extra, f"docs/openapi.yaml describes paths the app does not serve: {extra}"
    for shape, (path, methods) in have.items():
        spec_path, spec_methods = documented[shape]
        assert spec_path == path, f"parameter name differs: spec {spec_path}, app {path}"
        assert spec_methods == methods, f"{path}: spec {sorted(spec_methods)}, app {sorted(methods)}"


def test_expected_paths_are_there(spec: dict[str, Any]) -> None:
    """A guard against the route table itself shrinking unnoticed."""
    for path in (
        "/status",
        "/metrics",
        "/healthz",
        "/readyz",
        "/internal/customers",
        "/internal/promote",
        "/internal/release-lock/{id}",
        "/api/v1/create",
        "/api/v1/snapshot/{id}",
        "/api/v1/create-by-name/{name}",
        "/api/v1/lookup-id-by-name/{name}",
    ):
        assert path in spec["paths"], path


# --- internal consistency ----------------------------------------------------------------------------
def test_every_ref_resolves(spec: dict[str, Any]) -> None:
    refs: list[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            if "$ref" in obj:
                refs.append(obj["$ref"])
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    walk(spec)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/"), ref
        resolve(spec, {"$ref": ref})  # KeyError if dangling


def test_operations_are_complete(spec: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(spec)]
    assert len(ids) == len(set(ids)), "duplicate operationId"
    for path, method, op in operations(spec):
        responses = op["responses"]
        assert "200" in responses, (path, method)
        for code, resp in responses.items():
            assert re.fullmatch(r"[1-5]\d\d", str(code)), (path, code)
            assert resolve(spec, resp)["description"], (path, code)
        params = [resolve(spec, p) for p in op.get("parameters", [])]
        templated = re.findall(r"\{(\w+)\}", path)
        assert sorted(p["name"] for p in params if p["in"] == "path") == sorted(templated), (path, method)
        if path.startswith("/api/v1/"):
            assert method == "post"
            assert any(p["in"] == "header" and p["name"] == "X-Customer-ID" and p["required"] for p in params), path
            for code in ("400", "401", "405", "429", "500", "503"):
                assert code in responses, (path, code)
        else:
            assert not any(p["in"] == "header" and p["name"] == "X-Customer-ID" for p in params), path


def _codes_in_errors_module() -> set[str]:
    return {e.code for e in vars(errors).values() if isinstance(e, errors.ApiError) and e.code}


def test_error_codes_match_the_code(spec: dict[str, Any]) -> None:
    enum = set(spec["components"]["schemas"]["ErrorCode"]["enum"])
    assert enum == _codes_in_errors_module() | {"StoreUnavailable"}  # /healthz, /readyz build theirs ad hoc
    used: set[str] = set()
    for path, method, op in operations(spec):
        for code, resp in op["responses"].items():
            header = resolve(spec, resp).get("headers", {}).get("BigBunny-Error-Code")
            if header:
                values = set(resolve(spec, header)["schema"]["enum"])
                assert values <= enum, (path, method, code, values - enum)
                used |= values
    assert enum - used <= {"Unauthorized"}, f"codes no operation documents: {enum - used - {'Unauthorized'}}"


# --- documented JSON shapes are the ones the code builds --------------------------------------------------
def _schema_keys(spec: dict[str, Any], name: str) -> tuple[set[str], set[str]]:
    schema = spec["components"]["schemas"][name]
    return set(schema["properties"]), set(schema.get("required", []))


def test_status_document_shape(spec: dict[str, Any], node: Node) -> None:
    doc = asyncio.run(status.status_document(node))
    props, required = _schema_keys(spec, "Status")
    assert props == required == set(doc)
    props, required = _schema_keys(spec, "Shard")
    assert [set(s) for s in doc["shards"]] == [props] * 2 and required == props
    props, required = _schema_keys(spec, "Process")
    assert doc["processes"] and all(set(p) == props == required for p in doc["processes"])
    role_enum = spec["components"]["schemas"]["Status"]["properties"]["role"]["enum"]
    assert set(role_enum) == {"PRIMARY", "SECONDARY", "JOINING"}


def test_customer_report_shape(spec: dict[str, Any], node: Node) -> None:
    node.accounting.apply(0, "acme", 300)
    try:
        rep = asyncio.run(customer_report(node, 5))
    finally:
        node.accounting.apply(0, "acme", -300)
    props, required = _schema_keys(spec, "CustomerReport")
    assert props == required == set(rep)
    props, required = _schema_keys(spec, "CustomerRow")
    assert rep["top_memory"] and all(set(r) == props == required for r in rep["top_memory"])


def test_metrics_description_names_every_family(spec: dict[str, Any], node: Node) -> None:
    node.stats.observe("create", 200, 0.001)  # so the per-request families have samples
    text = metrics.render(metrics.build_registry(node, node.stats)).decode()
    exposed = set()
    for fam in text_string_to_metric_families(text):
        exposed.add(fam.name + ("_total" if fam.type == "counter" else ""))
    described = set(re.findall(r"`(bbd_\w+)`", spec["paths"]["/metrics"]["get"]["description"]))
    assert described == exposed


def test_reload_report_shape(spec: dict[str, Any], node: Node, tmp_path: Path) -> None:
    conf = tmp_path / "bbd.toml"
    conf.write_text("max-store-size = 100\n")
    reloader = Reloader(ConfigFile(str(conf), PARAMS), {"dev": True, "shards": 2}, {}, {})
    applied = asyncio.run(reloader.reload(node, "SIGHUP")).to_json()
    conf.write_text("bogus = 1\n")
    refused = asyncio.run(reloader.reload(node, "POST /internal/reload")).to_json()
    props, required = _schema_keys(spec, "ReloadReport")
    assert set(applied) == required and set(refused) == required | {"error"} and props == required | {"error"}
    assert applied["restart_required"] == {"max-store-size": {"from": 2048, "to": 100}}
    assert {applied["trigger"], refused["trigger"]} == set(
        spec["components"]["schemas"]["ReloadReport"]["properties"]["trigger"]["enum"]
    )
    assert set(_schema_keys(spec, "ReloadRefused")[0]) == {"applied", "error"}
