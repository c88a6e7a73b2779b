"""The dashboard across a LAN: a manager listening on every interface hands a person on
another host a login link with an address that host can reach (not 127.0.0.1), and the
link logs that person in there. Two network namespaces on a bridge, started as the README
says; the laptop finds the node by `--cluster` alone."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Daemon, Daemons, unique_cluster, wait_until
from tests.integration.lan import Host, lan

pytestmark = [pytest.mark.integration, pytest.mark.lan]

# Run on the laptop: open the link with a cookie jar, then ask who we are.
BROWSE = """
import http.cookiejar, json, sys, urllib.request
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
opener.open(sys.argv[1], timeout=10).read()
base = sys.argv[1].split("/login")[0]
print(opener.open(base + "/api/whoami", timeout=10).read().decode())
"""


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[list[Host]]:
    with lan(tmp_path / "lan", 2) as members:
        yield members


def test_a_login_link_from_another_host_names_the_managers_lan_address_and_works_there(
    daemons: Daemons, hosts: list[Host]
) -> None:
    office, laptop = hosts
    cluster = unique_cluster()
    (office.home / "data").mkdir(parents=True, exist_ok=True)
    args = ["--role", "coordinator,manager", "--cluster", cluster, "--http", "0.0.0.0:0"]
    node = Daemon(office.data_dir, args, office.env, prefix=office.prefix, pass_data_dir=False)
    daemons.add(node, provisioned=False)
    node.address()
    made = office.run("token", "create", "--role", "user", "--name", "alice")
    assert made.returncode == 0, made.stderr
    logged_in = laptop.run("login", made.stdout.splitlines()[0])
    assert logged_in.returncode == 0, logged_in.stderr

    def link() -> str | None:
        opened = laptop.run("dashboard", "--cluster", cluster, "--json")
        return str(json.loads(opened.stdout)["url"]) if opened.returncode == 0 else None

    url = wait_until(link, 30, "the laptop to get a login link")
    assert url.startswith(f"http://{office.address}:"), url
    browsed = subprocess.run(
        [*laptop.prefix, sys.executable, "-c", BROWSE, url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert browsed.returncode == 0, browsed.stderr
    assert json.loads(browsed.stdout)["owner"] == "alice"
