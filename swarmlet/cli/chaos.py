"""`swarmlet chaos run`: inject faults on a seeded schedule into a running cluster
while clients write and read through the API, then report what was lost, stale or
duplicated and how fast the cluster failed over (docs/failover-testing.md)."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import click
from rich.console import Console

from swarmlet.chaos import schedule as plan_module
from swarmlet.chaos.faults import FaultError, open_local_target
from swarmlet.chaos.report import render_html, render_table, to_json
from swarmlet.chaos.runner import RunOptions, run
from swarmlet.cli.client import ApiError, ClusterUnreachable
from swarmlet.cli.output import FORMAT_OPTION
from swarmlet.local.cluster import DEFAULT_LOCAL_DIR, LocalClusterError

COMPOSE_FAULTS = (plan_module.FaultKind.KILL, plan_module.FaultKind.FREEZE, plan_module.FaultKind.PARTITION)
EXIT_CHECKS_FAILED = 1
EXIT_INTERRUPTED = 130


@click.group()
def chaos():
    """Failover testing: faults on a schedule, a workload, checks and figures."""


SUPPORT = """\b
What each cluster kind supports (docs/failover-testing.md):
  local (`local up`, nodes on loopback addresses): kill, freeze, partition
    (iptables), loss (nftables); no latency; --service probes replicas only
    (no routing mesh there).
  isolated (`local up --isolated`, a network namespace per node): kill, freeze,
    partition (the node's LAN link down), loss (nftables in the node's
    namespace), latency (its API/Raft connections through a delaying proxy in
    its namespace); --service also probes the service's published port
    through the routing mesh, from the client namespace, every node in turn.
  compose (--compose): kill, freeze, partition (docker kill/pause/network
    disconnect); no loss, no latency."""


@chaos.command("run", epilog=SUPPORT)
@click.option("--dir", "directory", default=str(DEFAULT_LOCAL_DIR), show_default=True, envvar="SWARMLET_LOCAL_DIR",
              help="The local cluster to test (`swarmlet local up --dir`).")
@click.option("--compose", "compose_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Test the containerised cluster of this Compose file instead (docker-compose.test.yml).")
@click.option("--project", default=None,
              help="The compose project of --compose (default: the compose file's directory name).")
@click.option("--duration", default="60s", show_default=True, help="How long the run lasts (e.g. 90, 90s, 2m).")
@click.option("--faults", "fault_kinds", default="kill,freeze,partition", show_default=True,
              help="Fault kinds, comma-separated: kill, freeze, partition, loss, latency (isolated clusters only).")
@click.option("--targets", default="leader", show_default=True,
              help="Which nodes, comma-separated: leader, manager (a follower), worker, random.")
@click.option("--interval", default=plan_module.DEFAULT_INTERVAL_S, show_default=True, type=float,
              help="Seconds from one fault's start to the next's.")
@click.option("--fault-duration", default=plan_module.DEFAULT_FAULT_DURATION_S, show_default=True, type=float,
              help="Seconds a fault lasts before it is undone (a killed node is then restarted).")
@click.option("--seed", type=int, default=None, help="The schedule's seed (the same seed, the same schedule).")
@click.option("--service", default=None,
              help="A deployed service whose replicas are probed; on an isolated cluster also its published port, "
                   "through the routing mesh at every node's address.")
@click.option("--http", "http_urls", multiple=True,
              help="A URL probed over HTTP throughout (e.g. a published port); repeatable.")
@click.option("--writers", default=4, show_default=True, type=click.IntRange(1, 64), help="Concurrent writing clients.")
@click.option("--loss-percent", default=plan_module.DEFAULT_LOSS_PERCENT, show_default=True,
              type=click.IntRange(1, 100), help="Share of packets dropped by a loss fault.")
@click.option("--latency-ms", default=plan_module.DEFAULT_LATENCY_MS, show_default=True,
              type=click.FloatRange(1, 5000), help="What a latency fault adds to the node's round trip to each peer.")
@click.option("--keep-writes", is_flag=True, help="Leave the run's configs in the cluster (removed by default).")
@click.option("--report", "report_file", default=None, type=click.Path(dir_okay=False),
              help="Also write a self-contained HTML report with a timeline here.")
@FORMAT_OPTION
def run_command(directory, compose_file, project, duration, fault_kinds, targets, interval, fault_duration, seed, service,
                http_urls, writers, loss_percent, latency_ms, keep_writes, report_file, output_format):
    """Run faults against a cluster for --duration and report. Exit status: 0 when
    nothing was lost, stale or duplicated, 1 when a check failed, 130 when interrupted
    (everything broken is healed first in every case)."""
    try:
        seconds = plan_module.parse_duration(duration)
        kinds = plan_module.parse_kinds(fault_kinds)
        target_classes = plan_module.parse_targets(targets)
        if seed is None:
            seed = random.SystemRandom().randrange(1 << 31)
        planned = plan_module.plan(seed, seconds, interval, kinds, target_classes, fault_duration)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    if report_file:
        try:
            import plotly  # noqa: F401
        except ImportError:
            raise click.UsageError("--report needs plotly: pip install 'swarmlet[chaos]'") from None
    try:
        if compose_file:
            from swarmlet.chaos.compose import ComposeTarget
            target = ComposeTarget(Path(compose_file), project)
        else:
            target = open_local_target(directory, loss_percent, latency_ms)
        target.nodes()
    except (LocalClusterError, FaultError) as error:
        raise click.ClickException(str(error)) from None
    err = Console(stderr=True)
    try:
        for kind in kinds:
            reason = target.unsupported(kind)
            if compose_file and kind not in COMPOSE_FAULTS:
                reason = "the compose target injects only kill, freeze and partition"
            if reason:
                raise click.UsageError(f"--faults {kind.value}: {reason} (cluster kind: {target.kind})")
        http_urls = list(http_urls)
        if service:
            http_urls += _service_urls(target, service, err)
    except BaseException:
        target.close()
        raise
    err.print(f"chaos run: {len(planned)} faults over {seconds:g}s (seed {seed}), "
              f"faults {','.join(k.value for k in kinds)} on {','.join(t.value for t in target_classes)}")
    try:
        record = run(target, RunOptions(seconds, planned, seed, writers, service, http_urls, keep_writes),
                     log=lambda message: err.print(message))
    except FaultError as error:  # before any fault: nothing to heal
        raise click.ClickException(str(error)) from None
    finally:
        target.close()
    history = record.pop("_history")
    if report_file:
        Path(report_file).write_text(render_html(record, history))
        err.print(f"report written to {report_file}")
    if output_format == "json":
        click.echo(to_json(record))
    else:
        render_table(record, Console() if sys.stdout.isatty() else Console(width=200))
    if record["interrupted"]:
        sys.exit(EXIT_INTERRUPTED)
    if not record["passed"]:
        sys.exit(EXIT_CHECKS_FAILED)


def _service_urls(target, service: str, err: Console) -> list[str]:
    """Check that ``service`` exists; the URLs of its published port through the mesh,
    where the target has one."""
    try:
        view = target.client(timeout=10.0).call("GET", f"/v1/services/{service}")
    except ApiError as error:
        if error.status == 404:
            raise click.UsageError(f"--service {service}: no such service in the cluster") from None
        raise click.ClickException(f"--service {service}: {error}") from None
    except ClusterUnreachable as error:
        raise click.ClickException(f"--service {service}: {error}") from None
    urls = target.mesh_urls(view)
    if urls:
        err.print(f"probing {service} through the routing mesh: {', '.join(urls)} in turn")
    elif target.kind == "isolated":
        err.print(f"{service} publishes no TCP port: only its replicas are probed")
    return urls
