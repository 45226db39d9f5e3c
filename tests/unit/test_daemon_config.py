"""Daemon config files: loading, precedence (flag > env > file > default), errors that name the
file and the key, and `gfs admin init-node` writing them."""
from __future__ import annotations

import os
import stat
import tomllib

import click
import pytest
from click.testing import CliRunner

from cli.daemon_config import ConfigError, config_options, load_config
from cli.main import chunkserver, cli, master


def parse(command: click.Command, args: list[str]) -> dict:
    """The parameter values `gfs <command> ARGS` would run with (nothing is started)."""
    root = cli.make_context("gfs", [command.name], resilient_parsing=True)
    return command.make_context(command.name, args, parent=root).params


def write(tmp_path, text: str, name: str = "node.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_daemon_option_has_a_key_and_new_options_appear_automatically():
    keys = config_options(master)
    assert {"id", "raft", "peers", "grpc", "data", "metrics", "election-timeout", "balance",
            "balance-concurrency"} <= set(keys)
    assert "config" not in keys and "help" not in keys
    assert {"data", "masters", "bind", "advertise-host", "capacity", "cold-dir"} \
        <= set(config_options(chunkserver))
    extra = click.Command("master", params=list(master.params) + [
        click.Option(["--cluster-secret-file"], type=click.Path(dir_okay=False))])
    assert "cluster-secret-file" in config_options(extra)


def test_file_values_are_used_and_typed(tmp_path):
    path = write(tmp_path, '[master]\nid = 2\nraft = "10.0.0.2:7000"\ngrpc = "10.0.0.2:7100"\n'
                           'data = "state"\npeers = ["10.0.0.1:7000@a:1", "10.0.0.2:7000@b:1"]\n'
                           'election-timeout = 2\nbalance = false\nchunk-size = "16MiB"\n')
    p = parse(master, ["--config", str(path)])
    assert p["node_id"] == 2 and p["raft_addr"] == "10.0.0.2:7000"
    assert p["election_timeout"] == 2.0 and p["balance"] is False and p["chunk_size"] == "16MiB"
    assert p["peers"] == "10.0.0.1:7000@a:1,10.0.0.2:7000@b:1"
    assert p["data_dir"] == str(tmp_path / "state")       # relative to the file's directory
    assert p["heartbeat"] == 0.05                          # not in the file: the default


def test_precedence_flag_over_env_over_file_over_default(tmp_path, monkeypatch):
    path = write(tmp_path, '[chunkserver]\ndata = "/d"\nmasters = "file:1"\nrack = "file"\n'
                           'scrub-rate = "1MiB"\nheartbeat-interval = 3.0\n')
    monkeypatch.setenv("GFS_MASTERS", "env:1")
    monkeypatch.setenv("GFS_CHUNKSERVER_RACK", "env")
    monkeypatch.setenv("GFS_CHUNKSERVER_SCRUB_RATE", "2MiB")
    p = parse(chunkserver, ["--config", str(path), "--rack", "flag"])
    assert p["rack"] == "flag"                   # flag beats env and file
    assert p["masters_"] == "env:1"              # env beats file
    assert p["scrub_rate"] == "2MiB"
    assert p["heartbeat_interval"] == 3.0        # file beats default
    assert p["capacity"] == "0"                  # default


def test_config_file_from_gfs_config_env(tmp_path, monkeypatch):
    path = write(tmp_path, '[chunkserver]\ndata = "/d"\nmasters = "m:1"\n')
    monkeypatch.setenv("GFS_CONFIG", str(path))
    assert parse(chunkserver, [])["masters_"] == "m:1"


def test_required_options_can_come_from_the_file(tmp_path):
    with pytest.raises(click.MissingParameter):
        parse(chunkserver, [])
    path = write(tmp_path, '[chunkserver]\ndata = "/d"\nmasters = "m:1"\n')
    assert parse(chunkserver, ["--config", str(path)])["data_dir"] == "/d"


@pytest.mark.parametrize("text, message", [
    ('[master]\nelection-timout = 1\n', "unknown key 'election-timout' in [master] "
                                        "(did you mean 'election-timeout'?)"),
    ('[master]\nzzz = 1\n', "unknown key 'zzz' in [master]; known keys: "),
    ('[master]\nreplication = 99\n', "[master] replication: 99 is not in the range 1<=x<=16"),
    ('[master]\nelection-timeout = "soon"\n', "[master] election-timeout: 'soon' is not a "
                                              "valid float"),
    ('[master]\nbalance = "no"\n', "[master] balance: expected true or false"),
    ('[master]\ndefault-class = "warm"\n', "[master] default-class: 'warm' is not one of"),
    ('[master]\nraft = {host = "a"}\n', "[master] raft: expected a single value, got a table"),
    ('[chunkserver]\ndata = "/d"\n', "no [master] table (it has [chunkserver])"),
    ('id = 1\n[master]\n', "unknown table or key 'id' at the top level"),
    ('[master\n', "not valid TOML"),
])
def test_bad_files_name_the_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, "master", master)
    assert str(path) in err.value.message and message in err.value.message


def test_missing_file_is_one_line_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["chunkserver", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert f"cannot read config file {tmp_path / 'nope.toml'}" in result.output
    assert "Traceback" not in result.output


def test_a_file_with_both_tables_serves_both_daemons(tmp_path):
    path = write(tmp_path, '[master]\nid = 1\n[chunkserver]\ndata = "/d"\nmasters = "m:1"\n')
    assert load_config(path, "master", master) == {"node_id": 1}
    assert load_config(path, "chunkserver", chunkserver)["masters_"] == "m:1"


def test_init_node_writes_a_private_file_that_loads_back(tmp_path):
    out = tmp_path / "etc" / "master.toml"
    args = ["admin", "init-node", "master", "-o", str(out), "--id", "3",
            "--raft", "10.0.0.3:7000", "--grpc", "10.0.0.3:7100",
            "--peers", "10.0.0.1:7000@10.0.0.1:7100,10.0.0.3:7000@10.0.0.3:7100",
            "--metrics", "10.0.0.3:7300", "--no-balance", "--election-timeout", "1.5"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    values = load_config(out, "master", master)
    assert values == {"node_id": 3, "raft_addr": "10.0.0.3:7000", "grpc_addr": "10.0.0.3:7100",
                      "peers": "10.0.0.1:7000@10.0.0.1:7100,10.0.0.3:7000@10.0.0.3:7100",
                      "data_dir": "/var/lib/gfs/master", "metrics_addr": "10.0.0.3:7300",
                      "balance": False, "election_timeout": 1.5}
    text = out.read_text()
    # Every other option is there, commented out with its default and its variable.
    assert '# chunk-size = "64MiB"' in text and "GFS_MASTER_CHUNK_SIZE" in text
    assert set(tomllib.loads(text)) == {"master"}


def test_init_node_never_overwrites_without_force(tmp_path):
    out = tmp_path / "chunkserver.toml"
    base = ["admin", "init-node", "chunkserver", "-o", str(out), "--masters", "m:1",
            "--bind", "10.0.0.5:7200"]
    assert CliRunner().invoke(cli, base + ["--rack", "a"]).exit_code == 0
    result = CliRunner().invoke(cli, base + ["--rack", "b"])
    assert result.exit_code == 1 and "exists; use --force" in result.output
    assert load_config(out, "chunkserver", chunkserver)["rack"] == "a"
    assert CliRunner().invoke(cli, base + ["--rack", "b", "--force"]).exit_code == 0
    assert load_config(out, "chunkserver", chunkserver)["rack"] == "b"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["chunkserver.toml"]   # no temp left


def test_init_node_says_what_is_missing_and_checks_values(tmp_path):
    out = tmp_path / "m.toml"
    result = CliRunner().invoke(cli, ["admin", "init-node", "master", "-o", str(out),
                                      "--id", "1"])
    assert result.exit_code == 2 and "a master needs --raft, --grpc, --peers" in result.output
    result = CliRunner().invoke(cli, ["admin", "init-node", "chunkserver", "-o", str(out),
                                      "--masters", "m:1", "--bind", "h:1", "--scrub-interval",
                                      "often"])
    assert result.exit_code == 2 and "'often' is not a valid float" in result.output
    assert not out.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_init_node_owner_gives_the_file_to_the_daemon_user(tmp_path):
    import pwd
    out = tmp_path / "chunkserver.toml"
    base = ["admin", "init-node", "chunkserver", "-o", str(out), "--masters", "m:1",
            "--bind", "h:1"]
    result = CliRunner().invoke(cli, base + ["--owner", "no-such-user-gfs"])
    assert result.exit_code == 2 and "no user 'no-such-user-gfs'" in result.output
    assert not out.exists()
    assert CliRunner().invoke(cli, base + ["--owner", "nobody"]).exit_code == 0
    st = os.stat(out)
    assert st.st_uid == pwd.getpwnam("nobody").pw_uid and stat.S_IMODE(st.st_mode) == 0o600


def test_an_option_added_to_a_daemon_is_written_and_read_without_other_changes(tmp_path):
    from cli.init_node import make_init_command
    grown = click.Command("master", params=list(master.params) + [
        click.Option(["--cluster-secret-file"], type=click.Path(dir_okay=False)),
        click.Option(["--insecure-test-flag"], is_flag=True)])
    init = make_init_command("master", grown)
    required = ["--id", "1", "--raft", "a:1", "--grpc", "a:2", "--peers", "a:1@a:2"]
    out = tmp_path / "m.toml"
    result = CliRunner().invoke(init, ["-o", str(out), *required,
                                       "--cluster-secret-file", "/etc/gfs/cluster.secret"])
    assert result.exit_code == 0, result.output
    assert "# insecure-test-flag = false" in out.read_text()     # listed, not set
    values = load_config(out, "master", grown)
    assert values["cluster_secret_file"] == "/etc/gfs/cluster.secret"
    assert "insecure_test_flag" not in values
    result = CliRunner().invoke(init, ["-o", str(out), "--force", *required,
                                       "--insecure-test-flag"])
    assert result.exit_code == 0, result.output
    assert load_config(out, "master", grown)["insecure_test_flag"] is True
