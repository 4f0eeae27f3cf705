"""Rules that make swarmlet load what `docker stack deploy` (docker/cli's loader and
convert code, SwarmKit's checks) and the Compose specification load, with their values."""
from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from swarmlet.compose import ComposeError, load_stack


def write(folder: Path, text: str, name: str = "compose.yml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def load(folder: Path, text: str, **environ: str):
    return load_stack([write(folder, text)], environ=environ)


def issues_of(folder: Path, text: str, **environ: str) -> list:
    with pytest.raises(ComposeError) as caught:
        load(folder, text, **environ)
    return caught.value.issues


# --- encodings -------------------------------------------------------------------------

@pytest.mark.parametrize("encoding, mark", [
    ("utf-8", b""), ("utf-8", codecs.BOM_UTF8), ("utf-16-le", codecs.BOM_UTF16_LE),
    ("utf-16-be", codecs.BOM_UTF16_BE), ("utf-32-le", codecs.BOM_UTF32_LE),
])
def test_files_in_every_encoding_yaml_allows(tmp_path, encoding, mark):
    text = "services:\r\n  web:\r\n    image: caf\u00e9:1\r\n"
    path = tmp_path / "compose.yml"
    path.write_bytes(mark + text.encode(encoding))
    assert load_stack([path], environ={}).stack.services["web"].container.image == "caf\u00e9:1"


def test_an_undecodable_file_is_a_located_error(tmp_path):
    path = tmp_path / "compose.yml"
    path.write_bytes(b"services:\n  web:\n    image: x\xff\n")
    with pytest.raises(ComposeError) as caught:
        load_stack([path], environ={})
    (issue,) = caught.value.issues
    assert (issue.file, issue.line) == (str(path), 3)
    assert "cannot be read as UTF-8 (byte 0xff" in issue.message


# --- placement ---------------------------------------------------------------------------

def test_constraints_are_canonical_and_checked_by_the_scheduler_parser(tmp_path):
    result = load(tmp_path, "services:\n  web:\n    image: x\n    deploy:\n      placement:\n"
                            "        constraints: ['node.role == Manager', 'node.labels.zone!=a b']\n")
    assert result.stack.services["web"].placement.constraints == ["node.role==Manager", "node.labels.zone!=a b"]


def test_spread_over_something_but_labels_is_kept_with_a_warning(tmp_path):
    # swarmkit accepts any descriptor; its scheduler skips all but node/engine labels.
    result = load(tmp_path, "services:\n  web:\n    image: x\n    deploy:\n      placement:\n"
                            "        preferences: [{spread: node.id}, {spread: node.labels.zone}]\n")
    assert result.stack.services["web"].placement.preferences == ["node.id", "node.labels.zone"]
    (warning,) = result.warnings
    assert "compose.yml:6: services.web.deploy.placement.preferences[0].spread: spreading over node.id has no effect" \
        in warning


# --- networks, volumes, secrets, configs ------------------------------------------------

def test_external_in_every_form(tmp_path):
    result = load(tmp_path, "services:\n  web:\n    image: x\n    networks: [a, b, c]\n"
                            "networks:\n  a: {external: true}\n  b:\n    external:\n      name: real-b\n"
                            "  c: {external: 'false'}\n"
                            "volumes:\n  v:\n    external: {name: real-v}\n")
    networks = result.stack.networks
    assert (networks["a"].external, networks["a"].cluster_name) == (True, None)
    assert (networks["b"].external, networks["b"].cluster_name) == (True, "real-b")
    assert networks["c"].external is False
    assert (result.stack.volumes["v"].external, result.stack.volumes["v"].cluster_name) == (True, "real-v")
    assert result.document["networks"]["b"] == {"external": True, "name": "real-b"}
    assert [w.split(": ", 2)[1:] for w in result.warnings] == [
        ["networks.b.external.name", "network.external.name is deprecated in favor of network.name"],
        ["volumes.v.external.name", "volume.external.name is deprecated in favor of volume.name"]]


def test_external_name_beside_name_is_refused(tmp_path):
    (issue,) = issues_of(tmp_path, "services:\n  web: {image: x}\n"
                                   "networks:\n  a:\n    name: one\n    external:\n      name: two\n")
    assert (issue.path, issue.line) == ("networks.a.external.name", 7)
    assert "network.external.name and network.name conflict" in issue.message


def test_keys_beside_external_are_ignored_but_for_volume_drivers(tmp_path):
    result = load(tmp_path, "services:\n  web: {image: x}\nnetworks:\n  n: {external: true, driver: overlay}\n"
                            "secrets:\n  s: {external: true, file: ./missing}\n")
    assert result.document["secrets"]["s"] == {"external": True}
    assert any("secrets.s.file: file is ignored: the secret is external" in w for w in result.warnings)
    (issue,) = issues_of(tmp_path, "services:\n  web: {image: x}\nvolumes:\n  v: {external: true, driver: local}\n")
    assert issue.path == "volumes.v.driver" and "cannot be combined with external" in issue.message


def test_ipam_applies_and_ipv6_is_accepted_with_a_warning(tmp_path):
    result = load(tmp_path, "services:\n  web: {image: x, networks: [n]}\nnetworks:\n  n:\n    enable_ipv6: true\n"
                            "    ipam:\n      driver: default\n      config:\n        - subnet: 172.28.0.0/16\n"
                            "          gateway: 172.28.0.1\n")
    assert result.document["networks"]["n"]["ipam"] == {"driver": "default", "config": [
        {"subnet": "172.28.0.0/16", "gateway": "172.28.0.1"}]}
    assert sorted(w.split(": ")[1] for w in result.warnings) == ["networks.n.enable_ipv6"]
    assert [c.to_dict() for c in result.stack.networks["n"].ipam] == [
        {"subnet": "172.28.0.0/16", "gateway": "172.28.0.1", "ip_range": None}]


def test_config_data_from_content_or_environment(tmp_path):
    result = load(tmp_path, "services:\n  web:\n    image: x\n    configs: [a, b]\n    secrets: [s]\n"
                            "configs:\n  a: {content: 'my $$CONFIG is ${CONFIG}'}\n  b: {environment: CONFIG}\n"
                            "secrets:\n  s: {environment: TOKEN}\n", CONFIG="hello", TOKEN="t0k")
    stack = result.stack
    assert stack.configs["a"].content == "my $CONFIG is hello"
    assert stack.configs["b"].content == "hello"
    assert stack.secrets["s"].content == "t0k"
    assert result.document["secrets"]["s"] == {"environment": "TOKEN"}  # the value is not printed


def test_config_sources_are_exclusive_and_environment_must_be_set(tmp_path):
    issues = issues_of(tmp_path, "services:\n  web: {image: x}\nconfigs:\n  a: {content: x, environment: V}\n"
                                 "  b: {environment: UNSET}\nsecrets:\n  s: {driver: vault}\n", V="v")
    assert [(i.path, i.line) for i in issues] == [("configs.a.content", 4), ("configs.b.environment", 5),
                                                  ("secrets.s.driver", 7)]
    assert "environment and content cannot be combined" in issues[0].message
    assert 'variable "UNSET" is not set' in issues[1].message
    assert "a secret driver cannot be used" in issues[2].message


def test_inline_content_is_sent_once_in_the_deploy_body(tmp_path):
    import base64
    from swarmlet.cli.stack import deploy_body
    stack = load(tmp_path, "services:\n  web: {image: x, secrets: [s]}\nsecrets:\n  s: {environment: TOKEN}\n",
                 TOKEN="t0k").stack
    body = deploy_body(stack)
    assert base64.b64decode(body["files"]["secrets"]["s"]) == b"t0k"
    assert "t0k" not in str(body["stack"])


# --- ports ---------------------------------------------------------------------------------

@pytest.mark.parametrize("port, expected", [
    (":443:443", [(443, 443)]),                        # empty host IP: every interface (mailcow)
    ("0.0.0.0:80:8080", [(8080, 80)]),
    ("[::]:53:53/udp", [(53, 53)]),
    ("127.0.0.1::80", [(80, None)]),                   # no published port: the cluster picks one
    ("8000-8001:80-81", [(80, 8000), (81, 8001)]),
    ("9000-9002:80", [(80, 9000), (80, 9001), (80, 9002)]),  # one target on each published port
    (8080, [(8080, None)]),
])
def test_short_port_syntaxes(tmp_path, port, expected):
    result = load(tmp_path, f"services:\n  web:\n    image: x\n    ports: [{port!r}]\n".replace("'", '"'))
    assert [(p.target, p.published) for p in result.stack.services["web"].endpoint.ports] == expected


def test_long_port_syntax_takes_strings_and_warns_on_what_a_cluster_ignores(tmp_path):
    result = load(tmp_path, "services:\n  web:\n    image: x\n    ports:\n      - target: '80'\n"
                            "        published: '8080'\n        host_ip: 127.0.0.1\n        app_protocol: http\n")
    (port,) = result.stack.services["web"].endpoint.ports
    assert (port.target, port.published, port.mode) == (80, 8080, "ingress")
    assert sorted(w.split(": ")[1] for w in result.warnings) == ["services.web.ports", "services.web.ports[0].app_protocol",
                                                                 "services.web.ports[0].host_ip"]


def test_ingress_ports_warn_that_they_need_the_routing_mesh(tmp_path):
    result = load(tmp_path, "services:\n  web:\n    image: x\n    ports: ['80:80']\n"
                            "  api:\n    image: x\n    ports: [{target: 80, published: 8080, mode: host}]\n")
    (warning,) = result.warnings
    assert "compose.yml:4: services.web.ports: ports in ingress mode need the routing mesh" in warning


def test_what_swarmlet_does_not_do_yet_warns(tmp_path):
    result = load(tmp_path, "services:\n  web:\n    image: x\n    deploy:\n      mode: global\n"
                            "      endpoint_mode: vip\n      placement: {max_replicas_per_node: 2}\n"
                            "      update_config: {failure_action: rollback}\n      rollback_config: {parallelism: 2}\n")
    assert [w.split(": ")[1] for w in result.warnings] == [
        "services.web.deploy.placement.max_replicas_per_node", "services.web.deploy.endpoint_mode"]


def test_update_extensions_are_parsed_and_checked(tmp_path):
    result = load(tmp_path, "services:\n  web:\n    image: x\n    deploy:\n"
                            "      update_config: {x-canary: 2, x-auto-promote: true, x-other: 1}\n")
    update = result.stack.services["web"].update_config
    assert (update.canary, update.auto_promote) == (2, True) and not result.warnings
    with pytest.raises(ComposeError) as raised:
        load(tmp_path, "services:\n  web:\n    image: x\n    deploy:\n      update_config: {x-canary: -1}\n")
    assert "update_config.x-canary" in str(raised.value)


def test_blue_green_extensions_are_parsed_and_checked(tmp_path):
    result = load(tmp_path, "services:\n  web:\n    image: x\n    deploy:\n"
                            "      update_config: {x-blue-green: true, x-hold: 10m, x-auto-promote: true}\n")
    update = result.stack.services["web"].update_config
    assert (update.blue_green, update.hold, update.auto_promote) == (True, 600.0, True) and not result.warnings
    default = load(tmp_path, "services:\n  web:\n    image: x\n    deploy:\n      update_config: {x-blue-green: true}\n")
    assert default.stack.services["web"].update_config.hold == 30.0
    with pytest.raises(ComposeError) as raised:
        load(tmp_path, "services:\n  web:\n    image: x\n    deploy:\n"
                       "      update_config: {x-blue-green: true, x-canary: 1}\n")
    assert "update_config.x-canary" in str(raised.value) and "x-blue-green" in str(raised.value)
    for bad in ("x-hold: soon", "x-blue-green: maybe"):
        with pytest.raises(ComposeError) as raised:
            load(tmp_path, f"services:\n  web:\n    image: x\n    deploy:\n      update_config: {{{bad}}}\n")
        assert f"update_config.{bad.split(':')[0]}" in str(raised.value)
    alone = load(tmp_path, "services:\n  web:\n    image: x\n    deploy:\n      update_config: {x-hold: 1m}\n")
    assert any("x-hold has no effect without x-blue-green" in w for w in alone.warnings)


def test_swarmkit_endpoint_checks(tmp_path):
    issues = issues_of(tmp_path, "services:\n  web:\n    image: x\n    ports: ['80:80', '80:81']\n"
                                 "  dns:\n    image: x\n    ports: ['53:53']\n    deploy: {endpoint_mode: dnsrr}\n")
    assert [(i.path, i.line) for i in issues] == [("services.web.ports", 4), ("services.dns.ports", 7)]
    assert "port 80/tcp is published twice" in issues[0].message
    assert "cannot be used with endpoint_mode dnsrr" in issues[1].message


# --- healthcheck, restart and container options ---------------------------------------------

def test_a_healthcheck_without_test_keeps_the_images_test_and_timings(tmp_path):
    from swarmlet.api.specs import HealthCheck
    result = load(tmp_path, "services:\n  web:\n    image: x\n    healthcheck:\n      interval: 20s\n"
                            "      start_interval: 1s\n")
    assert result.stack.services["web"].container.healthcheck == HealthCheck(interval=20.0, start_interval=1.0)
    disabled = load(tmp_path, "services:\n  web:\n    image: x\n    healthcheck: {disable: true}\n")
    assert disabled.stack.services["web"].container.healthcheck == HealthCheck(test=["NONE"])


def test_health_durations_below_a_millisecond_are_refused(tmp_path):
    (issue,) = issues_of(tmp_path, "services:\n  web:\n    image: x\n    healthcheck: {test: 'true', interval: 10us}\n")
    assert issue.path == "services.web.healthcheck.interval" and "0 or at least 1ms" in issue.message


@pytest.mark.parametrize("restart, condition, attempts", [
    ("always", "any", 0), ("unless-stopped", "any", 0), ("on-failure", "on-failure", 0),
    ("on-failure:5", "on-failure", 5), ("'no'", "any", 0),
])
def test_restart_stands_in_for_a_missing_restart_policy(tmp_path, restart, condition, attempts):
    # docker/cli convertRestartPolicy; "no" is no policy, so the cluster's default.
    policy = load(tmp_path, f"services:\n  web:\n    image: x\n    restart: {restart}\n").stack.services["web"].restart_policy
    assert (policy.condition, policy.max_attempts, policy.delay) == (condition, attempts, 5.0)


def test_restart_policy_wins_over_restart_with_a_warning(tmp_path):
    result = load(tmp_path, "services:\n  web:\n    image: x\n    restart: on-failure:3\n"
                            "    deploy:\n      restart_policy: {condition: none}\n")
    assert result.stack.services["web"].restart_policy.condition == "none"
    (warning,) = result.warnings
    assert "compose.yml:4: services.web.restart: restart is ignored: deploy.restart_policy is set" in warning
    (issue,) = issues_of(tmp_path, "services:\n  web:\n    image: x\n    restart: sometimes\n")
    assert issue.path == "services.web.restart" and "on-failure[:max-retries]" in issue.message


def test_container_options_docker_stack_deploy_applies(tmp_path):
    from swarmlet.api.specs import LogDriver
    container = load(tmp_path, "services:\n  web:\n    image: x\n    tty: true\n    stdin_open: true\n"
                               "    dns_search: example.com\n    dns_opt: [ndots:2]\n    oom_score_adj: -500\n"
                               "    isolation: default\n    logging:\n      options: {max-size: 10m}\n"
                               ).stack.services["web"].container
    assert (container.tty, container.stdin_open, container.oom_score_adj, container.isolation) == \
        (True, True, -500, "default")
    assert (container.dns_search, container.dns_options) == (["example.com"], ["ndots:2"])
    assert container.logging == LogDriver(None, {"max-size": "10m"})  # no driver: the engine's default


def test_mount_options_and_stack_volume_options_reach_the_spec(tmp_path):
    from swarmlet.api.specs import Mount
    (tmp_path / "src").mkdir()
    mounts = load(tmp_path, "services:\n  web:\n    image: x\n    volumes:\n"
                            "      - {type: volume, source: data, target: /data, volume: {nocopy: true}}\n"
                            "      - {type: bind, source: ./src, target: /src, bind: {propagation: rslave}}\n"
                            "      - {type: tmpfs, target: /tmp, tmpfs: {size: 64m, mode: '1777'}}\n"
                            "      - shared:/shared\n"
                            "volumes:\n  data:\n    driver_opts: {type: nfs, o: addr=10.0.0.1}\n    labels: {a: b}\n"
                            "  shared:\n    external: true\n").stack.services["web"].container.mounts
    assert mounts == [
        Mount("volume", "/data", "data", volume_nocopy=True, volume_driver_opts={"type": "nfs", "o": "addr=10.0.0.1"},
              volume_labels={"a": "b"}),
        Mount("bind", "/src", str(tmp_path / "src"), bind_propagation="rslave"),
        Mount("tmpfs", "/tmp", tmpfs_size=64 << 20, tmpfs_mode=0o1777),
        Mount("volume", "/shared", "shared")]  # external: made elsewhere, no options


def test_duplicate_mount_points_and_file_targets_are_refused(tmp_path):
    issues = issues_of(tmp_path, "services:\n  db:\n    image: x\n    volumes: ['a:/var/lib/mysql', '/opt:/opt']\n"
                                 "    tmpfs: /var/lib/mysql\n    secrets: [s, {source: t, target: s}]\n"
                                 "secrets:\n  s: {environment: V}\n  t: {environment: V}\nvolumes:\n  a: {}\n", V="v")
    assert [(i.path, i.line) for i in issues] == [("services.db.secrets", 6), ("services.db.tmpfs[0]", 5)]
    assert "the same target /run/secrets/s" in issues[0].message
    assert "duplicate mount point /var/lib/mysql" in issues[1].message


def test_mount_types_swarmlet_cannot_mount_are_refused_where_they_are_written(tmp_path):
    (issue,) = issues_of(tmp_path, "services:\n  web:\n    image: x\n    volumes:\n"
                                   "      - {type: cluster, source: 'group:mygroup', target: /srv}\n")
    assert (issue.file, issue.path, issue.line) == (str(tmp_path / "compose.yml"), "services.web.volumes[0].type", 5)
    assert "cluster (CSI) volumes are not supported" in issue.message


def test_resources_below_swarmkits_minimums_are_refused(tmp_path):
    issues = issues_of(tmp_path, "services:\n  web:\n    image: x\n    deploy:\n      resources:\n"
                                 "        limits: {cpus: '0.0001', memory: 1M}\n")
    assert [i.path for i in issues] == ["services.web.deploy.resources.limits.cpus",
                                        "services.web.deploy.resources.limits.memory"]


def test_keys_without_effect_on_a_cluster_warn_with_dockers_hint(tmp_path):
    result = load(tmp_path, "services:\n  web:\n    image: x\n    mem_limit: 1g\n    networks:\n"
                            "      default: {ipv4_address: 10.0.0.5}\n")
    assert [w.split(": ", 2)[1:] for w in result.warnings] == [
        ["services.web.mem_limit", '"mem_limit" is ignored: it has no effect on a cluster; set '
                                   "deploy.resources.limits.memory instead (docker stack deploy refuses it)"],
        ["services.web.networks.default.ipv4_address", '"ipv4_address" is ignored: the cluster assigns task '
                                                       "addresses (docker stack deploy ignores it too)"]]


def test_missing_image_mentions_build_only_when_there_is_one(tmp_path):
    issues = issues_of(tmp_path, "services:\n  a: {build: .}\n  b: {command: x}\n")
    assert [i.message for i in issues] == ["missing required key image (build is ignored on a cluster)",
                                           "missing required key image"]


def test_stack_volumes_are_scoped_as_docker_stack_deploy_names_them(tmp_path):
    from swarmlet.manager.stacks import deploy_ops
    stack = load(tmp_path, "services:\n  web:\n    image: x\n    volumes: ['data:/a', 'named:/b', 'ext:/c', '/d']\n"
                           "volumes:\n  data: {}\n  named: {name: exact}\n  ext: {external: true}\n").stack
    (op,) = [op for op in deploy_ops("shop", stack.to_dict(), {}, False, {k: [] for k in
                                     ("service", "network", "secret", "config")}) if op["kind"] == "service"]
    assert [m["source"] for m in op["spec"]["container"]["mounts"]] == ["shop_data", "exact", "ext", None]


# --- extends and include (Compose spec; docker stack deploy refuses both) -----------------

def test_extends_a_service_of_this_file_or_another_with_the_merge_rules(tmp_path):
    (tmp_path / "common").mkdir()
    write(tmp_path / "common", "LEVEL=debug\n", "app.env")
    write(tmp_path / "common", "services:\n  base:\n    image: app:1\n    env_file: app.env\n"
                               "    environment: {TZ: utc, PORT: '80'}\n    volumes: ['./data:/data']\n"
                               "    cap_add: [NET_ADMIN]\n", "base.yml")
    result = load(tmp_path, "services:\n  web:\n    extends: {file: common/base.yml, service: base}\n"
                            "    environment: {PORT: '8080'}\n    cap_add: [SYS_TIME]\n"
                            "  worker:\n    extends: web\n    command: work\n")
    web, worker = result.stack.services["web"], result.stack.services["worker"]
    assert web.container.image == "app:1"
    assert web.container.env == {"LEVEL": "debug", "TZ": "utc", "PORT": "8080"}
    assert [m.source for m in web.container.mounts] == [str(tmp_path / "common" / "data")]  # the base file's folder
    assert web.container.cap_add == ["NET_ADMIN", "SYS_TIME"]
    assert (worker.container.image, worker.container.command) == ("app:1", ["work"])
    assert "extends" not in result.document["services"]["web"]


def test_extends_problems_are_located(tmp_path):
    issues = issues_of(tmp_path, "services:\n  a:\n    extends: b\n  b:\n    extends: a\n"
                                 "  c:\n    extends: {service: x, file: missing.yml}\n  d:\n    extends: nowhere\n")
    messages = {(i.path, i.line): i.message for i in issues}
    assert "extends cycle" in messages[("services.a.extends", 3)]
    assert messages[("services.c.extends.file", 7)].startswith("expected an existing compose file")
    assert messages[("services.d.extends.service", 9)].startswith('service "nowhere" is not defined')


def test_include_brings_in_another_project_with_its_own_folder_and_variables(tmp_path):
    (tmp_path / "db").mkdir()
    write(tmp_path / "db", "DB_TAG=16\n", ".env")
    write(tmp_path / "db", "services:\n  db:\n    image: postgres:${DB_TAG}\n    volumes: ['./init:/init']\n"
                           "  web:\n    image: other\nvolumes:\n  pgdata: {}\n", "compose.yml")
    result = load(tmp_path, "include:\n  - db/compose.yml\nservices:\n  web:\n    image: web\n    depends_on: [db]\n")
    stack = result.stack
    assert stack.services["db"].container.image == "postgres:16"
    assert [m.source for m in stack.services["db"].container.mounts] == [str(tmp_path / "db" / "init")]
    assert stack.services["web"].container.image == "web"  # this file's wins, with a warning
    assert "pgdata" in stack.volumes
    (warning,) = result.warnings
    assert "include[0]: service 'web' of" in warning and "this file defines another of that name" in warning


def test_include_problems_are_located(tmp_path):
    write(tmp_path, "include: [compose.yml]\nservices:\n  x: {image: x}\n", "loop.yml")
    issues = issues_of(tmp_path, "include:\n  - loop.yml\n  - path: missing.yml\nservices:\n  web: {image: x}\n")
    missing, cycle = issues
    assert (missing.file, missing.path, missing.line) == (str(tmp_path / "compose.yml"), "include[1].path", 3)
    assert (cycle.file, cycle.path, cycle.line) == (str(tmp_path / "loop.yml"), "include[0]", 1)
    assert "include cycle" in cycle.message


# --- every key is applied, warned about, or refused where Docker refuses it ---------------

# The service keys of the Compose spec (schema/compose-spec.json) and docker/cli's
# config_schema_v3.13.json, together, and volume_driver (in docker/cli's ForbiddenProperties
# only, with a hint).
SPEC_AND_V3_SERVICE_KEYS = {
    "annotations", "attach", "blkio_config", "build", "cap_add", "cap_drop", "cgroup", "cgroup_parent",
    "cgroupns_mode", "command", "configs", "container_name", "cpu_count", "cpu_percent", "cpu_period", "cpu_quota",
    "cpu_rt_period", "cpu_rt_runtime", "cpu_shares", "cpus", "cpuset", "credential_spec", "depends_on", "deploy",
    "develop", "device_cgroup_rules", "devices", "dns", "dns_opt", "dns_search", "domainname", "entrypoint",
    "env_file", "environment", "expose", "extends", "external_links", "extra_hosts", "gpus", "group_add",
    "healthcheck", "hostname", "image", "init", "ipc", "isolation", "label_file", "labels", "links", "logging",
    "mac_address", "mem_limit", "mem_reservation", "mem_swappiness", "memswap_limit", "models", "network_mode",
    "networks", "oom_kill_disable", "oom_score_adj", "pid", "pids_limit", "platform", "ports", "post_start",
    "pre_stop", "privileged", "profiles", "provider", "pull_policy", "pull_refresh_after", "read_only", "restart",
    "runtime", "scale", "secrets", "security_opt", "shm_size", "stdin_open", "stop_grace_period", "stop_signal",
    "storage_opt", "sysctls", "tmpfs", "tty", "ulimits", "use_api_socket", "user", "userns_mode", "uts", "volumes",
    "volumes_from", "working_dir", "volume_driver",
}


def test_every_service_key_of_the_spec_and_v3_is_applied_or_warned_about():
    from swarmlet.compose.service import CLUSTER_IGNORED_KEYS, SERVICE_FIELDS
    assert not set(SERVICE_FIELDS) & set(CLUSTER_IGNORED_KEYS)
    assert SPEC_AND_V3_SERVICE_KEYS == set(SERVICE_FIELDS) | set(CLUSTER_IGNORED_KEYS)
