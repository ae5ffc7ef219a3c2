"""SeaweedFS as a cluster on this machine, from the same `weed` binary: a master, three
volume servers and a filer with its S3 gateway, every object kept twice (replication
001: a second copy on another volume server). `kill(n)` loses volume server n
(SIGKILL); `start_volume(n)` brings it back with its data."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import urllib3

from ops.seaweedfs import WEED
from tests.support.ports import free_port_below
from tests.support.s3 import S3Server
from tests.support.waiting import wait_until

REPLICATION = "001"  # one more copy, on another server of the same rack
GRPC_OFFSET = 10_000  # SeaweedFS' convention: each gRPC port is its HTTP port + 10000
VOLUME_SIZE_LIMIT_MB = 64  # small volumes: the cluster grows several on every server


class SeaweedCluster(S3Server):
    """The S3 gateway of a replicated SeaweedFS (the same client-side face as S3Server)."""

    def __init__(self, workdir: Path, volume_servers: int = 3) -> None:
        super().__init__(workdir)
        # Distinct ports (a free port stays free until bound: two picks may return the same).
        ports = {self.port}
        while len(ports) < volume_servers + 3:
            ports.add(free_port_below(55_000))
        self.master_port, self.filer_port, *self.volume_ports = sorted(ports - {self.port})
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self._workdir / f"weed-{name}.log", "ab")  # noqa: SIM115 - as long as it runs
        self.processes[name] = subprocess.Popen(
            [str(WEED), *args], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def _loopback(self, port: int) -> list[str]:
        return ["-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-port={port}",
                f"-port.grpc={port + GRPC_OFFSET}"]  # fmt: skip

    def start(self) -> None:
        data = self._workdir / "seaweedfs-cluster"
        data.mkdir(parents=True, exist_ok=True)
        identities = data / "s3.json"
        identities.write_text(json.dumps({"identities": [{
            "name": "tests",
            "credentials": [{"accessKey": self.ACCESS_KEY, "secretKey": self.SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))  # fmt: skip
        (data / "master").mkdir(exist_ok=True)
        self._spawn(
            "master", "master", *self._loopback(self.master_port), f"-mdir={data / 'master'}",
            f"-defaultReplication={REPLICATION}", f"-volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
        )  # fmt: skip
        for index in range(len(self.volume_ports)):
            self.start_volume(index)
        (data / "filer").mkdir(exist_ok=True)
        self._spawn(
            "filer", "filer", *self._loopback(self.filer_port),
            f"-master=127.0.0.1:{self.master_port}", f"-defaultReplicaPlacement={REPLICATION}",
            f"-defaultStoreDir={data / 'filer'}",  # its metadata (else in the working directory)
            "-s3", f"-s3.port={self.port}", f"-s3.port.grpc={self.port + GRPC_OFFSET}",
            f"-s3.config={identities}", "-s3.autoCreateBucket=false",
            "-s3.cacheCapacityMB=0",  # every read goes to the volume servers
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        )  # fmt: skip
        wait_until(self._answers, timeout_s=90, what="the cluster's S3 gateway storing objects")

    def start_volume(self, index: int) -> None:
        directory = self._workdir / "seaweedfs-cluster" / f"volume{index}"
        directory.mkdir(parents=True, exist_ok=True)
        self._spawn(
            f"volume{index}", "volume", *self._loopback(self.volume_ports[index]),
            f"-dir={directory}", f"-mserver=127.0.0.1:{self.master_port}", "-max=0",
        )  # fmt: skip
        running = sum(name.startswith("volume") for name in self.processes)
        wait_until(
            lambda: self.volume_servers() == running, timeout_s=60, what=f"volume{index} joined"
        )

    def kill(self, index: int) -> None:
        process = self.processes.pop(f"volume{index}")
        process.send_signal(signal.SIGKILL)
        process.wait(15)

    def topology(self) -> dict[str, Any]:
        """The master's view: its data nodes and their volumes (`/dir/status`)."""
        return dict(self._get(self.master_port, "/dir/status"))

    def volumes(self) -> dict[int, int]:
        """Volumes on each volume server the master has now (by index)."""
        try:
            topology = self.topology()["Topology"]
        except Exception:  # noqa: BLE001 - the master not up yet counts as none
            return {}
        by_port = {port: index for index, port in enumerate(self.volume_ports)}
        return {
            by_port[int(node["Url"].rsplit(":", 1)[1])]: int(node["Volumes"])
            for centre in topology.get("DataCenters") or []
            for rack in centre.get("Racks") or []
            for node in rack.get("DataNodes") or []
        }

    def holders(self, bucket: str, keys: list[str]) -> collections.Counter[int]:
        """For each volume server (by index), how many of `keys` have a copy on it:
        the filer's entry names each object's chunks, the master where their volumes are."""
        held: collections.Counter[int] = collections.Counter()
        by_port = {port: index for index, port in enumerate(self.volume_ports)}
        for key in keys:
            entry = self._get(self.filer_port, f"/buckets/{bucket}/{key}?metadata=true")
            volume_ids = {chunk["fid"]["volume_id"] for chunk in entry["chunks"]}
            servers = set()
            for volume_id in volume_ids:
                found = self._get(self.master_port, f"/dir/lookup?volumeId={volume_id}")
                servers |= {by_port[int(at["url"].rsplit(":", 1)[1])] for at in found["locations"]}
            held.update(servers)
        return held

    def _get(self, port: int, path: str) -> Any:
        response = urllib3.request(
            "GET", f"http://127.0.0.1:{port}{path}", timeout=5, retries=False
        )
        assert response.status == 200, f"{path}: {response.status} {response.data[:200]!r}"
        return json.loads(response.data)

    def volume_servers(self) -> int:
        return len(self.volumes())

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            process.wait(15)
        self.processes.clear()
