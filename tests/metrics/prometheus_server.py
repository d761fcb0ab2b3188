"""A real Prometheus server for the tests: loopback, generated config, temporary storage."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
import urllib.request

from tests.metrics.support import PROMETHEUS, free_port

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: cgroupfs
    static_configs:
      - targets: ["127.0.0.1:{target_port}"]
"""


class PrometheusServer:
    """/usr/bin/prometheus on loopback with a generated config and a temporary storage dir."""

    def __init__(self, directory: str, target_port: int):
        self.port = free_port()
        config = os.path.join(directory, "prometheus.yml")
        with open(config, "w") as f:
            f.write(CONFIG.format(target_port=target_port))
        self.log_path = os.path.join(directory, "prometheus.log")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen([
            PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={os.path.join(directory, 'data')}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
        ], stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def get(self, path: str, **params) -> dict:
        query = "?" + urllib.parse.urlencode(params) if params else ""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}{query}", timeout=5) as response:
            return json.loads(response.read())

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.process.returncode}: {self.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def target_health(self) -> str | None:
        targets = self.get("/api/v1/targets")["data"]["activeTargets"]
        jobs = [t for t in targets if t["labels"].get("job") == "cgroupfs"]
        return jobs[0]["health"] if jobs else None

    def query(self, promql: str) -> list[dict]:
        answer = self.get("/api/v1/query", query=promql)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
