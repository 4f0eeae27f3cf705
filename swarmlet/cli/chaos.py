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
from swarmlet.chaos.faults import FaultError, LocalTarget, unsupported_reason
from swarmlet.chaos.report import render_html, render_table, to_json
from swarmlet.chaos.runner import RunOptions, run
from swarmlet.cli.output import FORMAT_OPTION
from swarmlet.local.cluster import DEFAULT_LOCAL_DIR, LocalClusterError

COMPOSE_FAULTS = (plan_module.FaultKind.KILL, plan_module.FaultKind.FREEZE, plan_module.FaultKind.PARTITION)
EXIT_CHECKS_FAILED = 1
EXIT_INTERRUPTED = 130


@click.group()
def chaos():
    """Failover testing: faults on a schedule, a workload, checks and figures."""


@chaos.command("run")
@click.option("--dir", "directory", default=str(DEFAULT_LOCAL_DIR), show_default=True, envvar="SWARMLET_LOCAL_DIR",
              help="The local cluster to test (`swarmlet local up --dir`).")
@click.option("--compose", "compose_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Test the containerised cluster of this Compose file instead (docker-compose.test.yml).")
@click.option("--project", default=None,
              help="The compose project of --compose (default: the compose file's directory name).")
@click.option("--duration", default="60s", show_default=True, help="How long the run lasts (e.g. 90, 90s, 2m).")
@click.option("--faults", "fault_kinds", default="kill,freeze,partition", show_default=True,
              help="Fault kinds, comma-separated: kill, freeze, partition, loss, latency.")
@click.option("--targets", default="leader", show_default=True,
              help="Which nodes, comma-separated: leader, manager (a follower), worker, random.")
@click.option("--interval", default=plan_module.DEFAULT_INTERVAL_S, show_default=True, type=float,
              help="Seconds from one fault's start to the next's.")
@click.option("--fault-duration", default=plan_module.DEFAULT_FAULT_DURATION_S, show_default=True, type=float,
              help="Seconds a fault lasts before it is undone (a killed node is then restarted).")
@click.option("--seed", type=int, default=None, help="The schedule's seed (the same seed, the same schedule).")
@click.option("--service", default=None, help="A deployed service whose replicas are probed.")
@click.option("--http", "http_urls", multiple=True,
              help="A URL probed over HTTP throughout (e.g. a published port); repeatable.")
@click.option("--writers", default=4, show_default=True, type=click.IntRange(1, 64), help="Concurrent writing clients.")
@click.option("--loss-percent", default=plan_module.DEFAULT_LOSS_PERCENT, show_default=True,
              type=click.IntRange(1, 100), help="Share of packets dropped by a loss fault.")
@click.option("--keep-writes", is_flag=True, help="Leave the run's configs in the cluster (removed by default).")
@click.option("--report", "report_file", default=None, type=click.Path(dir_okay=False),
              help="Also write a self-contained HTML report with a timeline here.")
@FORMAT_OPTION
def run_command(directory, compose_file, project, duration, fault_kinds, targets, interval, fault_duration, seed, service,
                http_urls, writers, loss_percent, keep_writes, report_file, output_format):
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
    for kind in kinds:
        reason = unsupported_reason(kind)
        if compose_file and kind not in COMPOSE_FAULTS:
            reason = "the compose target injects only kill, freeze and partition"
        if reason:
            raise click.UsageError(f"--faults {kind.value}: {reason}")
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
            target = LocalTarget(directory, loss_percent)
        target.nodes()
    except (LocalClusterError, FaultError) as error:
        raise click.ClickException(str(error)) from None
    err = Console(stderr=True)
    err.print(f"chaos run: {len(planned)} faults over {seconds:g}s (seed {seed}), "
              f"faults {','.join(k.value for k in kinds)} on {','.join(t.value for t in target_classes)}")
    try:
        record = run(target, RunOptions(seconds, planned, seed, writers, service, list(http_urls), keep_writes),
                     log=lambda message: err.print(message))
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
