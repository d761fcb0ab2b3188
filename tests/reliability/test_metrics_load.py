"""The metrics endpoint under abuse never slows the filesystem, and never grows without bound.

50 concurrent scrapers, a scraper that reads its response one byte a second, and
hundreds of connections that never send a request: FUSE reads keep working, the
daemon's threads stay bounded, and a real scrape still gets through.  How much the
scrapers cost the FUSE reads is printed here, not asserted: latency is measured by
the benchmarks (benchmarks/scrape.py), never against a clock in a test, which a
busy host would fail.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

from tests.reliability.support import MIB, free_port, latency, wait_for

SCRAPERS = 50


def daemon_threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Threads:")).split()[1])


def scrape(port: int, timeout: float = 30) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
        body = response.read()
        assert b"cgroupfs_build_info" in body
        return response.status


class SlowScraper(threading.Thread):
    """Sends one request, then reads the response one byte per second with a tiny window."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.received = 0

    def run(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        try:
            sock.connect(("127.0.0.1", self.port))
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            sock.settimeout(2)
            while not self.stop.is_set():
                try:
                    chunk = sock.recv(1)
                except OSError:
                    return
                if not chunk:
                    return
                self.received += 1
                self.stop.wait(1.0)
        finally:
            sock.close()


def test_fifty_concurrent_scrapes_and_a_slow_scraper_leave_fuse_reads_working(start_daemon, make_cgroup):
    port = free_port()
    daemon = start_daemon("--metrics-address", f"127.0.0.1:{port}")
    # Some cgroups the exporter has to read on every scrape.
    sleepers = []
    for index in range(20):
        cgroup = make_cgroup()
        cgroup.set_memory_limit((20 + index) * MIB)
        sleepers.append(cgroup.popen(["sh", "-c", f"cat {daemon.mountpoint}/proc/meminfo >/dev/null; exec sleep 600"]))
    reader = make_cgroup()
    reader.set_memory_limit(64 * MIB)
    path = f"{daemon.mountpoint}/proc/meminfo"
    latency(reader, path, n=500)  # warm up
    quiet = latency(reader, path, n=3000)

    stop = threading.Event()
    statuses: list[int] = []
    failures: list[str] = []

    def scrape_loop() -> None:
        while not stop.is_set():
            try:
                statuses.append(scrape(port))
            except Exception as exc:  # noqa: BLE001 - counted and asserted below
                failures.append(repr(exc))

    slow = SlowScraper(port)
    slow.start()
    workers = [threading.Thread(target=scrape_loop, daemon=True) for _ in range(SCRAPERS)]
    try:
        for worker in workers:
            worker.start()
        time.sleep(1.0)
        loaded = latency(reader, path, n=3000)
    finally:
        stop.set()
        slow.stop.set()
        for worker in workers:
            worker.join(timeout=60)
        for process in sleepers:
            process.kill()
            process.wait()
    print(f"\nFUSE latency (ms) quiet {quiet}, under {SCRAPERS} scrapers {loaded}; {len(statuses)} scrapes")
    assert not failures, failures[:5]
    assert len(statuses) >= SCRAPERS and set(statuses) == {200}
    assert slow.received >= 1
    assert quiet["n"] == loaded["n"] == 3000  # every read under the scrapers succeeded


def test_connections_that_never_send_a_request_are_bounded_and_dropped(start_daemon):
    port = free_port()
    daemon = start_daemon("--metrics-address", f"127.0.0.1:{port}")
    assert scrape(port) == 200
    before = daemon_threads(daemon.pid)
    idle = []
    try:
        for _ in range(300):
            try:  # past the listen backlog a connect may time out: fine
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=0.5))
            except OSError:
                pass
        assert len(idle) >= 50
        time.sleep(1.0)
        during = daemon_threads(daemon.pid)
        assert during - before <= 20, (before, during)
        # The daemon hangs up on idle connections instead of waiting for them forever.
        idle[0].settimeout(60)
        started = time.monotonic()
        assert idle[0].recv(1) == b""
        assert time.monotonic() - started < 30
        # Once they are gone, scrapes are served again.
        for sock in idle:
            sock.close()
        assert wait_for(lambda: _scrapes(port), 30, "a scrape after the idle connections closed")
        assert daemon_threads(daemon.pid) - before <= 2
    finally:
        for sock in idle:
            sock.close()
    with open(f"{daemon.mountpoint}/proc/meminfo") as f:
        assert f.read().startswith("MemTotal:")


def _scrapes(port: int) -> bool:
    try:
        return scrape(port, timeout=5) == 200
    except OSError:
        return False
