"""Where registry weights are found, offline: a temporary torch hub cache ($TORCH_HOME), downloads from a
local HTTP server on 127.0.0.1 (torch.hub's and huggingface_hub's), hash checks, the one-line errors. No test
touches the real network: every URL points at 127.0.0.1."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.server
import io
import json
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_run import run_cli

import resnets
from resnets.errors import CheckpointError, ConfigError
from resnets.pretrained import get_weights, registry
from resnets.pretrained.load import WeightsRequest, load_requested
from resnets.pretrained.resolve import cache_path, weights_file

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference():
    """A resnet18 with random weights (BN statistics too) and its state dict as .pth bytes."""
    torch.manual_seed(1)
    model = resnets.create_model("resnet18").eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    data = buffer.getvalue()
    with torch.no_grad():
        expected = model(X)
    return data, hashlib.sha256(data).hexdigest(), expected


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache and no proxies (127.0.0.1 is reached directly)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in (
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
        "RESNETS_OFFLINE",
        "HF_HUB_OFFLINE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return tmp_path / "torch" / "hub" / "checkpoints"


def use_entry(monkeypatch, entry):
    """The registry with ``entry`` in place of the entry of the same name."""
    built = tuple(entry if e.name == entry.name else e for e in registry.entries())
    classes = {"imagenet-1k": list(registry.class_names("imagenet-1k"))}
    table = registry.index(built, classes)
    monkeypatch.setattr(registry, "_registry", lambda: table)
    return entry


def torchvision_like(monkeypatch, digest: str, url: str):
    """resnet18's default entry, pointing at a file of our random weights named as torchvision names them."""
    name = f"resnet18-{digest[:8]}.pth"
    entry = dataclasses.replace(
        get_weights("resnet18.tv_in1k"), file=name, sha256=digest[:8], url=f"{url}/{name}"
    )
    return use_entry(monkeypatch, entry)


@contextlib.contextmanager
def server(files: dict[str, bytes], headers: dict[str, dict[str, str]] | None = None):
    """An HTTP server on 127.0.0.1 serving ``files`` (path -> bytes), with extra headers per path."""
    headers = headers or {}
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, body: bool):
            path = self.path.split("?")[0]
            requests.append(f"{self.command} {path}")
            if path not in files:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(files[path])))
            for key, value in headers.get(path, {}).items():
                self.send_header(key, value)
            self.end_headers()
            if body:
                self.wfile.write(files[path])

        def do_GET(self):  # noqa: N802 (http.server's names)
            self._answer(True)

        def do_HEAD(self):  # noqa: N802
            self._answer(False)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    finally:
        httpd.shutdown()
        httpd.server_close()


def closed_port() -> str:
    """A URL on 127.0.0.1 where nothing listens: a download fails at once, as without a network."""
    with contextlib.closing(__import__("socket").socket()) as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_a_file_in_the_hub_cache_with_its_name_and_hash_loads(hub, monkeypatch, reference):
    data, digest, expected = reference
    entry = torchvision_like(monkeypatch, digest, closed_port())
    monkeypatch.setenv("RESNETS_OFFLINE", "1")  # found in the cache: no download is tried
    hub.mkdir(parents=True)
    (hub / entry.file).write_bytes(data)
    assert cache_path(entry) == hub / entry.file
    for model in (
        resnets.create_model("resnet18", pretrained=True),
        resnets.create_model("resnet18", weights="IMAGENET1K_V1"),
        resnets.create_model("resnet18.tv_in1k", pretrained=True),
    ):
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(X), expected, rtol=0, atol=0)
    # The model now describes its data as the weights want it (timm's resolve_data_config reads this).
    assert model.pretrained_cfg["input_size"] == (3, 224, 224) and model.pretrained_cfg["crop_pct"] == 0.875
    assert model.pretrained_cfg["tag"] == "tv_in1k" and model.pretrained_cfg["interpolation"] == "bilinear"
    # Another class count: the backbone loads, the head is fresh (fine-tuning), as in timm.
    ten = resnets.create_model("resnet18", pretrained=True, num_classes=10)
    assert ten.fc.out_features == 10
    torch.testing.assert_close(ten.conv1.weight, model.conv1.weight, rtol=0, atol=0)


def test_a_wrong_hash_is_refused_with_one_line_naming_the_expected_hash(hub, monkeypatch, reference):
    data, digest, _ = reference
    entry = torchvision_like(monkeypatch, digest, closed_port())
    hub.mkdir(parents=True)
    (hub / entry.file).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit changed
    with pytest.raises(CheckpointError) as raised:
        resnets.create_model("resnet18", pretrained=True)
    message = str(raised.value)
    assert (
        "\n" not in message and f"starting with {digest[:8]}" in message and str(hub / entry.file) in message
    )
    # A user's copy under torchvision's name is checked as that file too.
    with pytest.raises(CheckpointError, match=digest[:8]):
        resnets.create_model("resnet18", pretrained=str(hub / entry.file))


def test_a_missing_file_without_a_network_says_which_file_to_put_where(hub, monkeypatch, reference):
    _, digest, _ = reference
    entry = torchvision_like(monkeypatch, digest, closed_port())
    for offline in (True, False):  # downloads off, and a download that cannot connect
        if offline:
            monkeypatch.setenv("RESNETS_OFFLINE", "1")
        else:
            monkeypatch.delenv("RESNETS_OFFLINE")
        with pytest.raises(CheckpointError) as raised:
            resnets.create_model("resnet18", pretrained=True)
        message = str(raised.value)
        assert "\n" not in message
        assert f"download {entry.url} and put it at {hub / entry.file}" in message
    assert not hub.exists() or not any(hub.iterdir())  # nothing half-written


def test_a_download_from_a_local_server_is_hash_checked(hub, monkeypatch, reference):
    data, digest, expected = reference
    name = f"resnet18-{digest[:8]}.pth"
    with server({f"/models/{name}": data, "/models/resnet18-00000000.pth": data}) as (url, requests):
        entry = torchvision_like(monkeypatch, digest, f"{url}/models")
        path = weights_file(entry, progress=False)
        assert path == hub / name and requests == [f"GET /models/{name}"]
        model = resnets.create_model("resnet18", pretrained=True)  # now from the cache: no second request
        assert len(requests) == 1
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(X), expected, rtol=0, atol=0)
        # A download whose hash is not the expected one is refused and leaves nothing in the cache.
        bad = use_entry(
            monkeypatch,
            dataclasses.replace(
                entry,
                file="resnet18-00000000.pth",
                sha256="00000000",
                url=f"{url}/models/resnet18-00000000.pth",
            ),
        )
        with pytest.raises(CheckpointError) as raised:
            weights_file(bad, progress=False)
    assert "\n" not in str(raised.value) and "starting with 00000000" in str(raised.value)
    assert sorted(p.name for p in hub.iterdir()) == [name]


def test_a_download_from_a_local_hugging_face_endpoint(hub, tmp_path, monkeypatch, reference):
    """timm's path: huggingface_hub.hf_hub_download against a local endpoint (its HEAD metadata and GET), the
    cache's blob named by the file's SHA-256 checked against the content, then found offline in that cache."""
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants

    data, digest, expected = reference
    repo = "timm/resnet18.a1_in1k"
    path = f"/{repo}/resolve/main/model.safetensors"
    buffer = io.BytesIO()  # the hub holds safetensors: the same tensors in that format
    from safetensors.torch import save

    buffer.write(save(torch.load(io.BytesIO(data), weights_only=True)))
    blob = buffer.getvalue()
    sha = hashlib.sha256(blob).hexdigest()
    meta = {path: {"X-Repo-Commit": "a" * 40, "ETag": f'"{sha}"'}}
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True, raising=False)
    with server({path: blob}, meta) as (url, requests):
        monkeypatch.setenv("HF_ENDPOINT", url)  # what resnets passes to hf_hub_download
        # and huggingface_hub's defaults, so that nothing can reach the real hub
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        entry = get_weights("resnet18.a1_in1k")
        found = weights_file(entry, progress=False)
        assert found.resolve().name == sha and any(r.startswith("GET") for r in requests)
    monkeypatch.setenv("RESNETS_OFFLINE", "1")  # the server is gone: the Hugging Face cache serves it
    model = resnets.create_model("resnet18", pretrained="a1_in1k")
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(X), expected, rtol=0, atol=0)
    assert model.pretrained_cfg["interpolation"] == "bicubic" and model.pretrained_cfg["crop_pct"] == 0.95
    # A blob whose content is not the digest it is named by is refused.
    found.resolve().write_bytes(blob[:-1] + b"\0")
    with pytest.raises(CheckpointError, match=f"the SHA-256 {sha}"):
        resnets.create_model("resnet18", pretrained="a1_in1k")


def test_requests_name_their_weights_or_say_what_is_wrong(hub, monkeypatch):
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    with pytest.raises(ConfigError, match="are for resnet50, not resnet18"):
        resnets.create_model("resnet18", pretrained="resnet50.tv2_in1k")
    with pytest.raises(ConfigError, match="Did you mean: resnet18.tv_in1k"):
        resnets.create_model("resnet18", pretrained="tv3_in1k")
    with pytest.raises(ConfigError, match="both ask for weights"):
        resnets.create_model("resnet18", pretrained=True, weights="DEFAULT")
    with pytest.raises(ConfigError, match="resnet56 has no published or shipped weights"):
        resnets.create_model("resnet56", pretrained=True)
    with pytest.raises(ConfigError, match="resnets.models.create_model does not load"):
        resnets.models.create_model("resnet18", pretrained=True)  # the architecture layer builds only


def test_shipped_weights_missing_from_the_install_say_so(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "FILES", tmp_path)
    registry.reload()
    try:
        entry = get_weights("resnet20.fashion_mnist")
        assert entry.shipped and entry.card is None
        with pytest.raises(CheckpointError, match="missing from this installation"):
            weights_file(entry)
    finally:
        monkeypatch.undo()
        registry.reload()


def test_import_weights_takes_registered_weights(hub, monkeypatch, reference, tmp_path, capsys):
    data, digest, expected = reference
    entry = torchvision_like(monkeypatch, digest, closed_port())
    hub.mkdir(parents=True)
    (hub / entry.file).write_bytes(data)
    out = tmp_path / "r18.safetensors"
    status, printed, err = run_cli(["import-weights", "resnet18.IMAGENET1K_V1", "--output", str(out)], capsys)
    assert status == 0, err
    model = resnets.create_model("resnet18", checkpoint_path=out).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(X), expected, rtol=0, atol=0)
    loaded = load_requested(resnets.models.create_model("resnet18"), WeightsRequest(path=out))
    assert loaded.loaded == len(torch.load(io.BytesIO(data), weights_only=True))
    status, printed, _ = run_cli(["models", "--pretrained", "resnet18.", "--json"], capsys)
    listed = json.loads(printed)
    assert [e["name"] for e in listed] == resnets.list_pretrained("*resnet18.*")
    assert Path(listed[0]["file"]).name == entry.file


def test_predict_with_registered_weights_uses_their_transform_and_class_names(
    hub, monkeypatch, reference, tmp_path, capsys
):
    data, digest, _ = reference
    entry = torchvision_like(monkeypatch, digest, closed_port())
    hub.mkdir(parents=True)
    (hub / entry.file).write_bytes(data)
    image = tmp_path / "c.png"
    rng = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (3, 240, 320), dtype=torch.uint8, generator=rng)
    Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB").save(image)
    argv = [
        "predict",
        "--model",
        "resnet18",
        "--weights",
        "IMAGENET1K_V1",
        str(image),
        "--json",
        "--device",
        "cpu",
    ]
    status, out, err = run_cli(argv, capsys)
    assert status == 0, err
    result = json.loads(out)
    assert result["model"] == "resnet18.tv_in1k"
    model = resnets.create_model("resnet18", pretrained=True).eval()
    with torch.no_grad():
        expected = model(entry.transform()(pixels)[None]).softmax(1)[0].topk(5)
    top = result["predictions"][0]["top"]
    assert [t["index"] for t in top] == expected.indices.tolist()
    assert [t["class"] for t in top] == [entry.classes[i] for i in expected.indices.tolist()]
    assert [t["probability"] for t in top] == pytest.approx(expected.values.tolist(), abs=1e-5)
