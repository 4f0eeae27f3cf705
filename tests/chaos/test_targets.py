"""The pure parts of the chaos targets and the report: which node a target class
names, the nftables rules of loss and latency on an isolated node (checked by nft
itself where it can run), what each cluster kind refuses, and the HTTP figures of the
report."""
from __future__ import annotations

import os
import random
import shutil
import subprocess

import pytest

from swarmlet.chaos.faults import (LATENCY_TABLE, LOSS_TABLE, PROXY_MARK, FaultError, LocalTarget, NodeInfo,
                                   latency_rules, loss_rules)
from swarmlet.chaos.history import Fault, History, HttpSample, summarize
from swarmlet.chaos.report import http_per_second, render_html, render_table
from swarmlet.chaos.runner import _resolve
from swarmlet.chaos.schedule import FaultKind, TargetClass

NODES = [NodeInfo("manager-1", "m1", "manager", "198.18.9.11", "198.18.9.11:2377"),
         NodeInfo("worker-1", "", "worker", "198.18.9.14")]  # a node whose ID could not be read


def test_no_known_leader_names_no_node_even_one_whose_id_is_unknown():
    chooser = random.Random(1)
    assert _resolve(TargetClass.LEADER, NODES, None, chooser) is None
    assert _resolve(TargetClass.LEADER, NODES, "", chooser) is None
    assert _resolve(TargetClass.LEADER, NODES, "m1", chooser).name == "manager-1"
    assert _resolve(TargetClass.WORKER, NODES, "m1", chooser).name == "worker-1"


def test_latency_is_refused_on_a_loopback_cluster_with_the_reason(tmp_path):
    target = LocalTarget(tmp_path)
    reason = target.unsupported(FaultKind.LATENCY)
    assert "--isolated" in reason and "netem" in reason
    with pytest.raises(FaultError, match="isolated"):
        target._inject(FaultKind.LATENCY, NODES[0])


def test_the_loss_rules_drop_a_share_both_ways_on_the_nodes_link():
    rules = loss_rules(30)
    assert f"table ip {LOSS_TABLE}" in rules
    assert 'iifname "lan0" numgen random mod 100 < 30 drop' in rules
    assert 'oifname "lan0" numgen random mod 100 < 30 drop' in rules
    assert "numgen" not in loss_rules(100) and 'iifname "lan0" drop' in loss_rules(100)  # numgen's values: 0-99


def test_the_latency_rules_take_the_swarmlet_ports_both_ways_but_not_the_proxys_own():
    rules = latency_rules("198.18.9.11", [2378, 2377, 2377], 40123)
    assert f"table ip {LATENCY_TABLE}" in rules
    out, inbound = [line for line in rules.splitlines() if "redirect" in line]
    assert f"meta mark != {PROXY_MARK:#x}" in out and 'oifname "lan0"' in out and "tcp dport { 2377, 2378 }" in out
    assert "ip daddr 198.18.9.11" in inbound and 'iifname "lan0"' in inbound and "redirect to :40123" in inbound


nft_unavailable = (shutil.which("nft") is None or os.geteuid() != 0) and os.environ.get("CI") != "true"


@pytest.mark.skipif(nft_unavailable, reason="checking rules with `nft -c` needs nft and root")
@pytest.mark.parametrize("rules", [loss_rules(30), loss_rules(100),
                                   latency_rules("198.18.9.11", [2377, 2378], 40123)],
                         ids=["loss", "loss-all", "latency"])
def test_nft_accepts_the_rules(rules):
    # -c: parsed and checked by the kernel's own nftables, nothing changed.
    check = subprocess.run(["nft", "-c", "-f", "-"], input=rules, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_nft_check_rejects_broken_rules():
    if nft_unavailable:
        pytest.skip("needs nft and root")
    broken = latency_rules("198.18.9.11", [2377], 40123).replace("redirect to", "redirect too")
    assert subprocess.run(["nft", "-c", "-f", "-"], input=broken, capture_output=True, text=True).returncode != 0


def http_history() -> History:
    history = History(duration=4.0)
    history.faults = [Fault("partition", "worker-1", "worker", 1.0, 2.0)]
    history.http = [HttpSample(0.2, True, url="http://a/"), HttpSample(1.1, False, "refused", "http://b/"),
                    HttpSample(1.6, True, url="http://a/"), HttpSample(3.9, True, url="http://b/")]
    history.final_names = set()
    return history


def test_http_per_second_counts_requests_and_errors_in_each_second():
    assert http_per_second(http_history()) == ([0.5, 1.5, 2.5, 3.5], [1, 2, 0, 1], [0, 1, 0, 0])
    assert http_per_second(History()) == ([], [], [])


def test_the_report_shows_http_errors_per_fault_and_over_time():
    from rich.console import Console

    history = http_history()
    record = summarize(history)
    record.update({"seed": 3, "passed": True, "interrupted": False})
    console = Console(width=200, record=True)
    render_table(record, console)
    text = console.export_text()
    assert "HTTP error rate, partition worker-1 at 1.0s" in text and "50.0% of 2" in text
    pytest.importorskip("plotly")
    html = render_html(record, history)
    assert "HTTP errors per second" in html and "b\\u002f: refused" in html  # plotly escapes "/"


def test_a_leader_fault_waits_for_a_leader_to_be_known_rather_than_being_skipped(monkeypatch):
    # Seen in the 10-minute 5-manager benchmark: 17 of 60 leader faults were skipped
    # ("no leader to target") because the status was asked once, mid-election.
    from swarmlet.chaos import runner

    answers = iter([{"leader": None, "term": 7}, {"leader": None, "term": 8}, {"leader": "n2", "term": 8}])

    class Client:
        def call(self, method, path):
            return next(answers)

    class Target:
        def client(self, timeout):
            return Client()

    monkeypatch.setattr(runner, "POLL_S", 0.0)
    assert runner._leader(Target(), wait=5.0) == ("n2", 8)
    answers = iter([{"leader": None, "term": 9}] * 1000)
    assert runner._leader(Target(), wait=0.0) == (None, 9)  # not asked to wait: one answer
