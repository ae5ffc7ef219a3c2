"""The containers, for real, with Podman: the images built from this checkout
(scripts/build-images.sh), compose.yaml started as a user would (podman-compose),
and the Kubernetes manifest played (`podman kube play`) against the test's
RabbitMQ, S3 server and origin. `pytest -m containers` runs them alone."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips
import urllib3
import yaml

from common.keys import partition
from tests.support import REPO
from tests.support.images import photo
from tests.support.origin import Origin
from tests.support.ports import free_port
from tests.support.rabbitmq import Vhost
from tests.support.s3 import S3View
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.containers,
    pytest.mark.stack,
    pytest.mark.long,
    pytest.mark.timeout(900),
]

PODMAN_COMPOSE = str(Path(sys.executable).parent / "podman-compose")
HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2, read=60))


def run(*args: str, timeout_s: float = 600, **kwargs: Any) -> str:
    done = subprocess.run(
        args, cwd=REPO, capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs
    )
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr[-3000:]}"
    return str(done.stdout)


@pytest.fixture(scope="module")
def images() -> None:
    """The three images, built from this checkout (the base image once per machine)."""
    run(str(REPO / "scripts" / "build-images.sh"), timeout_s=900)


def test_the_image_says_what_it_was_built_from(images: None) -> None:
    commit = run("git", "rev-parse", "--short=12", "HEAD").strip()
    said = run("podman", "run", "--rm", "localhost/image-server:latest", "--version")
    assert said.strip() == f"image-server {importlib.metadata.version('image-server')} ({commit})"
    labels = run("podman", "image", "inspect", "--format",
                 "{{json .Labels}}", "localhost/image-server:latest")  # fmt: skip
    assert json.loads(labels)["org.opencontainers.image.revision"] == commit


REFUSED = -1  # no connection: nothing listens (a request that was never taken)


def status(url: str) -> int:
    """The answer's status; REFUSED, or 0 for a connection taken and then lost."""
    try:
        return HTTP.request("GET", url, headers={"Connection": "close"}).status
    except urllib3.exceptions.NewConnectionError:
        return REFUSED
    except urllib3.exceptions.HTTPError:
        return 0


def image_at(url: str) -> pyvips.Image:
    answer = HTTP.request("GET", url)
    assert answer.status == 200, (url, answer.status, answer.data[:200])
    return pyvips.Image.new_from_buffer(answer.data, "")


@pytest.fixture
def composed(images: None) -> Iterator[tuple[str, int]]:
    """compose.yaml up, under a project name of its own and a free port."""
    project, port = f"imgtest{uuid.uuid4().hex[:8]}", free_port()
    environment = {**os.environ, "IMAGE_SERVER_PORT": str(port)}
    compose = [PODMAN_COMPOSE, "-p", project]
    try:
        run(*compose, "up", "-d", env=environment)
        yield project, port
    finally:
        subprocess.run([*compose, "down", "-v", "-t", "5"], cwd=REPO, env=environment,
                       capture_output=True, timeout=300, check=False)  # fmt: skip


def containers_told(project: str) -> str:
    """What each container of the project said last, and how each stands: for a failure."""
    listed = run("podman", "ps", "-a", "--filter", f"name={project}", "--format",
                 "{{.Names}} {{.Status}}")  # fmt: skip
    told = [listed]
    for name in listed.split("\n"):
        if name.strip():
            logs = subprocess.run(["podman", "logs", "--tail", "30", name.split()[0]],
                                  capture_output=True, text=True, check=False)  # fmt: skip
            told.append(f"--- {name}\n{logs.stdout}{logs.stderr}")
    return "\n".join(told)


def stored_keys(project: str) -> set[str]:
    """The objects in the compose file's SeaweedFS, as the service's container sees them."""
    listing = (
        "from minio import Minio\n"
        "c = Minio('seaweedfs:8333', 'compose-access-key', 'compose-development-secret', "
        "secure=False)\n"
        "print('\\n'.join(o.object_name for o in c.list_objects('images', recursive=True)))\n"
    )
    out = run("podman", "exec", f"{project}_image-server_1", "python3", "-c", listing)
    return set(out.split())


def test_compose_serves_stores_and_stops_without_losing_anything(
    composed: tuple[str, int],
) -> None:
    project, port = composed
    try:
        serve_store_and_stop(project, f"http://127.0.0.1:{port}")
    except BaseException:
        print(containers_told(project))  # what each container said, for the failure
        raise


def serve_store_and_stop(project: str, base: str) -> None:
    started = time.monotonic()
    wait_until(lambda: status(f"{base}/health") == 200, timeout_s=180, what="/health 200")
    print(f"\ncompose: /health 200 {time.monotonic() - started:.1f} s after `up` returned")

    wide = image_at(f"{base}/sample/image/1/w500.jpg")
    assert (wide.width, wide.get("vips-loader")) == (500, "jpegload_buffer")
    square = image_at(f"{base}/sample/image/2/x300.webp")
    assert (square.width, square.height, square.get("vips-loader")) == (300, 300, "webpload_buffer")
    prefix = "public/images/production/sample/image"
    first = {f"{prefix}/{partition('1')}/1/w500.jpg", f"{prefix}/{partition('2')}/2/x300.webp"}
    wait_until(
        lambda: first <= stored_keys(project),
        timeout_s=60, what="both outputs in the compose file's SeaweedFS",
    )  # fmt: skip

    # SIGTERM to the service's container under a small load: every request that
    # gets an answer gets its image; after the drain the port refuses (a load
    # balancer would send those to another host).
    answered: list[tuple[str, int]] = []
    stopping = threading.Event()

    def load() -> None:
        # 40 new outputs (within a client's burst of misses, client_miss_burst 50),
        # then the same again (hits), until the port closes.
        for width in [*range(100, 140)] * 10:
            path = f"/sample/image/3/w{width}.jpg"
            got = status(base + path)
            if got == REFUSED and stopping.is_set():
                return  # the port is closed: the host is gone
            answered.append((path, got))
            time.sleep(0.02)

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(2)
    stopping.set()
    stop_started = time.monotonic()
    run("podman", "stop", "-t", "60", f"{project}_image-server_1", timeout_s=120)
    stop_s = time.monotonic() - stop_started
    loader.join(timeout=120)
    print(f"compose: {len(answered)} requests answered under load, stopped in {stop_s:.1f} s")
    assert answered and [a for a in answered if a[1] != 200] == [], answered

    # No upload lost: the host's uploads wait in RabbitMQ and on its volume; once it
    # is back, every output answered is stored.
    restarted = time.monotonic()
    run("podman", "start", f"{project}_image-server_1")
    wait_until(lambda: status(f"{base}/health") == 200, timeout_s=180, what="back")
    print(f"compose: the service's container healthy {time.monotonic() - restarted:.1f} s "
          "after its start (broker and store up)")  # fmt: skip
    keys = {f"{prefix}/{partition('3')}/3/{path.rsplit('/', 1)[1]}" for path, _ in answered}
    wait_until(lambda: keys <= stored_keys(project), timeout_s=120, what="every upload stored")


def test_the_kubernetes_manifest_plays_against_the_tests_broker_and_store(
    images: None, origin: Origin, s3: S3View, tmp_path: Path
) -> None:
    vhost = Vhost()
    port = free_port()
    documents = list(yaml.safe_load_all((REPO / "deploy/kubernetes/image-server.yaml").read_text()))
    settings = {
        "IMAGE_SERVER_SOURCE_DOMAIN": origin.url(""),
        "IMAGE_SERVER_S3_ENDPOINT": s3.endpoint,
        "IMAGE_SERVER_S3_SECURE": "false",
        "IMAGE_SERVER_S3_BUCKET": s3.bucket(),
        "IMAGE_SERVER_STORAGE_KEY_PREFIX": s3.config()["storage_key_prefix"],
        "IMAGE_SERVER_AMQP_NODES": "[]",
        "IMAGE_SERVER_SERVER_PORT": str(port),
        "IMAGE_SERVER_STATUS_PORT": str(free_port()),
        "IMAGE_SERVER_UPLOADER_HEALTH_PORT": str(free_port()),
        "IMAGE_SERVER_ALLOWED_PRIVATE_NETWORKS": '["127.0.0.0/8"]',
        "IMAGE_SERVER_SOURCE_REQUIRES_SIGNATURE": "false",
        "IMAGE_SERVER_ALLOWED_OUTPUTS": '["w*.jpg"]',
    }
    secrets = {
        "IMAGE_SERVER_AMQP_URL": vhost.amqp_url,
        "IMAGE_SERVER_S3_ACCESS_KEY": S3View.ACCESS_KEY,
        "IMAGE_SERVER_S3_SECRET_KEY": S3View.SECRET_KEY,
    }
    # Podman 4.3 keeps a played Secret as YAML, then reads it as a JSON map of
    # base64 values: the test gives it that way beforehand (`podman secret create`,
    # as a cluster's secret store would), with the test's values (no signing keys:
    # allowed_outputs below).
    documents = [document for document in documents if document["kind"] != "Secret"]
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in secrets.items()}
    (tmp_path / "secret.json").write_text(json.dumps(encoded))
    for document in documents:
        if document["kind"] == "ConfigMap":
            document["data"].update(settings)
        elif document["kind"] == "Deployment":
            document["spec"]["replicas"] = 1
            # The test's broker, store and origin listen on this machine's loopback:
            # the pod shares its network (no port mapping then; probes by number).
            pod = document["spec"]["template"]["spec"]
            pod["hostNetwork"] = True
            container = pod["containers"][0]
            del container["ports"]
            for probe in ("readinessProbe", "livenessProbe"):
                container[probe]["httpGet"]["port"] = port
    manifest = tmp_path / "image-server.yaml"
    manifest.write_text(yaml.safe_dump_all(documents))
    origin.add("kube/play/1/original.jpg", photo())
    try:
        run("podman", "secret", "create", "image-server", str(tmp_path / "secret.json"))
        run("podman", "kube", "play", str(manifest))
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: status(f"{base}/health") == 200, timeout_s=180, what="/health 200")
        made = image_at(f"{base}/kube/play/1/w300.jpg")
        assert (made.width, made.get("vips-loader")) == (300, "jpegload_buffer")
        assert status(f"{base}/kube/play/1/x50.webp") == 406  # the ConfigMap's allowed_outputs
    finally:
        for down in (["kube", "down", str(manifest)], ["secret", "rm", "image-server"]):
            subprocess.run(["podman", *down], capture_output=True, timeout=300, check=False)
        vhost.delete()
