"""Flag spelling, shared by every subcommand: one dash or two, ``name=value`` or
``name value``, booleans alone or ``=false`` (``seaweed_rdma.flagparse``)."""

from __future__ import annotations

import argparse

import pytest

from seaweed_rdma.cli import build_parser
from seaweed_rdma.flagparse import FlagParser, go_spelling, parse_bool
from seaweed_rdma.mount import parse_mount_args


class TestGoSpelling:
    def test_one_dash_becomes_two(self) -> None:
        assert go_spelling(["-filer=h:1", "-dir", "/m"])[0] == ["--filer=h:1", "--dir", "/m"]

    def test_two_dashes_short_flags_numbers_and_positionals_stay(self) -> None:
        argv = ["--filer", "h:1", "-l", "-5", "-1.5", "-", "/path"]
        assert go_spelling(argv)[0] == argv

    def test_double_dash_ends_flags(self) -> None:
        assert go_spelling(["-aa=1", "--", "-weird"])[0] == ["--aa=1", "--", "-weird"]

    def test_value_of_a_value_flag_is_passed_untouched(self) -> None:
        out, _ = go_spelling(["-xx", "-odd"], kinds={"--xx": "value"})
        assert out == ["--xx", "-odd"]

    def test_bool_alone_with_equals_and_with_a_true_false_word(self) -> None:
        kinds = {"--bb": "bool", "-l": "bool"}
        assert go_spelling(["-bb"], kinds)[0] == ["--bb=true"]
        assert go_spelling(["-bb=false"], kinds)[0] == ["--bb=false"]
        assert go_spelling(["-bb", "FALSE", "/p"], kinds)[0] == ["--bb=FALSE", "/p"]
        assert go_spelling(["-l", "/p"], kinds)[0] == ["-l=true", "/p"]  # a path is not eaten
        assert go_spelling(["-l=0"], kinds)[0] == ["-l=0"]
        assert go_spelling(["-bb", "yes"], kinds)[0] == ["--bb=true", "yes"]

    def test_ignorable_flags_are_dropped_with_their_values(self) -> None:
        out, ignored = go_spelling(["-cacheDir", "/c", "-nonempty", "-ttl=3", "-aa=1"],
                                   ignorable={"cacheDir": True, "nonempty": False, "ttl": True})
        assert out == ["--aa=1"] and ignored == ["cacheDir", "nonempty", "ttl"]

    def test_stop_at_positional_leaves_the_subcommand_its_arguments(self) -> None:
        out, _ = go_spelling(["-log-level", "INFO", "cat", "-filer=x"],
                             kinds={"--log-level": "value"}, stop_at_positional=True)
        assert out == ["--log-level", "INFO", "cat", "-filer=x"]


@pytest.mark.parametrize("word,value", [("1", True), ("true", True), ("T", True), ("on", True),
                                        ("0", False), ("false", False), ("No", False)])
def test_parse_bool(word: str, value: bool) -> None:
    assert parse_bool(word) is value


def test_parse_bool_refuses_other_words() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="true or false"):
        parse_bool("maybe")


class TestFlagParser:
    def test_store_true_is_refused(self) -> None:
        with pytest.raises(ValueError, match="add_bool"):
            FlagParser().add_argument("--x", action="store_true")

    def test_no_abbreviations(self) -> None:
        p = FlagParser(prog="t")
        p.add_argument("--size-mib", type=int)
        with pytest.raises(SystemExit):
            p.parse_args(["--size", "3"])

    def test_help_explains_the_spelling(self) -> None:
        assert "one dash or two" in FlagParser(prog="t").format_help()


# Every subcommand that argparse parses, each spelling of a value flag and a boolean flag.
VALUE_SPELLINGS = [["-filer=h:9"], ["-filer", "h:9"], ["--filer=h:9"], ["--filer", "h:9"]]


@pytest.mark.parametrize("spelling", VALUE_SPELLINGS, ids=" ".join)
@pytest.mark.parametrize("command", ["cat", "stat", "ls"])
def test_client_subcommands_take_every_spelling(command: str, spelling: list[str]) -> None:
    a = build_parser().parse_args([command, *spelling, "/p"])
    assert (a.command, a.filer, a.path) == (command, "h:9", "/p")


@pytest.mark.parametrize("argv,stats", [(["-stats"], True), (["--stats"], True),
                                        (["-stats=false"], False), (["--stats", "true"], True),
                                        ([], False)])
def test_cat_boolean_and_offsets(argv: list[str], stats: bool) -> None:
    a = build_parser().parse_args(["cat", *argv, "-offset", "10", "--size=5", "/p"])
    assert (a.stats, a.offset, a.size, a.path) == (stats, 10, 5, "/p")


@pytest.mark.parametrize("argv,long", [(["-l"], True), (["-long"], True), (["--long=0"], False),
                                       (["-l=false"], False), ([], False)])
def test_ls_long(argv: list[str], long: bool) -> None:
    a = build_parser().parse_args(["ls", *argv, "/d"])
    assert (a.long, a.path) == (long, "/d")


def test_client_flags_jwt_sidecar_transport() -> None:
    a = build_parser().parse_args(["stat", "-jwtKey=k", "-sidecar", ":18515",
                                   "-transport=tcp", "-master", "m:9333", "/p"])
    assert (a.jwt_key, a.sidecar, a.transport, a.master) == ("k", ":18515", "tcp", "m:9333")
    assert build_parser().parse_args(["stat", "--jwt-key", "k", "/p"]).jwt_key == "k"


def test_bench_flags() -> None:
    a = build_parser().parse_args(["bench", "-size-mib=8", "-chunk-mib", "1", "--rounds=2",
                                   "-random-reads", "50", "-out=o.json", "-plot", "p.png",
                                   "-quiet"])
    assert (a.size_mib, a.chunk_mib, a.rounds, a.random_reads) == (8, 1, 2, 50)
    assert (a.out, a.plot, a.quiet) == ("o.json", "p.png", True)


@pytest.mark.parametrize("argv,value", [(["-json"], True), (["--json=true"], True),
                                        (["-json=0"], False), ([], False)])
def test_doctor_json(argv: list[str], value: bool) -> None:
    assert build_parser().parse_args(["doctor", *argv]).json is value


@pytest.mark.parametrize("argv,value", [(["-keep"], True), (["--keep"], True),
                                        (["-keep=false"], False), ([], False)])
def test_demo_keep(argv: list[str], value: bool) -> None:
    assert build_parser().parse_args(["demo", *argv]).keep is value


def test_global_flag_before_the_subcommand() -> None:
    a = build_parser().parse_args(["-log-level=DEBUG", "ls", "-l", "/d"])
    assert (a.log_level, a.command, a.long) == ("DEBUG", "ls", True)


def test_sidecar_flags_are_passed_on_in_clap_spelling() -> None:
    a, rest = build_parser().parse_known_args(
        ["-log-level", "INFO", "sidecar", "-dir=/a", "-dir", "/b", "--listen", "h:1", "-h"])
    assert a.command == "sidecar"
    assert rest == ["--dir=/a", "--dir", "/b", "--listen", "h:1", "-h"]


def test_unknown_flag_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["cat", "-nosuch=1", "/p"])
    assert e.value.code == 2 and "--nosuch" in capsys.readouterr().err


class TestMount:
    def test_weed_mount_line(self) -> None:
        o = parse_mount_args(["-filer=h:8888", "-dir=/mnt", "-filer.path=/sub",
                              "-rdma.enabled", "-rdma.sidecar=:18515", "-rdma.maxConcurrent",
                              "16", "-rdma.timeoutMs=900", "-cacheCapacityMB", "64",
                              "-rdma.busyPollUs=0"])
        assert (o.filer, o.dir, o.filer_path) == ("h:8888", "/mnt", "/sub")
        assert (o.rdma_enabled, o.rdma_sidecar, o.rdma_fallback) == (True, ":18515", True)
        assert (o.rdma_max_concurrent, o.rdma_timeout_ms, o.cache_capacity_mb) == (16, 900, 64)
        assert not o.rdma_verify
        assert o.rdma_busy_poll_us == 0
        with pytest.raises(SystemExit, match=r"-rdma\.busyPollUs=-5 must be 0 or more"):
            parse_mount_args(["-filer=h:1", "-dir=/m", "-rdma.busyPollUs=-5"])

    def test_native_read_flags(self) -> None:
        o = parse_mount_args(["-filer=h:1", "-dir=/m"])
        assert (o.rdma_native_reads, o.rdma_native_threads) == (True, 4)
        o = parse_mount_args(["-filer=h:1", "-dir=/m", "-rdma.nativeReads=false",
                              "-rdma.nativeThreads", "2"])
        assert (o.rdma_native_reads, o.rdma_native_threads) == (False, 2)
        with pytest.raises(SystemExit, match=r"-rdma\.nativeThreads=0 must be 1 or more"):
            parse_mount_args(["-filer=h:1", "-dir=/m", "-rdma.nativeThreads=0"])

    def test_two_dashes_and_booleans(self) -> None:
        o = parse_mount_args(["--filer", "h:1", "--dir", "/m", "--rdma.fallback=false",
                              "-allowOthers", "-autoUnmount", "false", "-debug=1"])
        assert (o.rdma_fallback, o.allow_others, o.auto_unmount, o.debug) == \
            (False, True, False, True)

    def test_unimplemented_weed_flags_are_ignored(self) -> None:
        o = parse_mount_args(["-filer=h:1", "-dir=/m", "-collectionQuotaMB=4", "-cacheDir",
                              "/c", "-nonempty", "-concurrentReaders", "8"])
        assert o.ignored == ["collectionQuotaMB", "cacheDir", "nonempty"]
        assert o.concurrent_readers == 8

    def test_read_write_by_default_like_weed_mount(self) -> None:
        assert not parse_mount_args(["-filer=h:1", "-dir=/m"]).read_only
        assert parse_mount_args(["-filer=h:1", "-dir=/m", "-readOnly"]).read_only

    def test_write_flags(self) -> None:
        o = parse_mount_args(["-filer=h:1", "-dir=/m", "-chunkSizeLimitMB=4",
                              "-concurrentWriters", "8", "-collection=c", "-replication=001",
                              "-ttl=60", "-disk=ssd", "-umask=027", "-dataCenter=dc1"])
        assert (o.chunk_size_limit_mb, o.concurrent_writers, o.collection, o.replication,
                o.ttl_sec, o.disk_type, o.umask_bits, o.data_center, o.ignored) == \
            (4, 8, "c", "001", 60, "ssd", 0o027, "dc1", [])
        assert parse_mount_args(["-filer=h:1", "-dir=/m"]).umask_bits == 0o022
        assert parse_mount_args(["-filer=h:1", "-dir=/m", "-diskType=hdd"]).disk_type == "hdd"

    def test_mount_subcommand_is_the_same_parser(self) -> None:
        a = build_parser().parse_args(["mount", "-filer=h:1", "-dir", "/m", "-rdma.enabled",
                                       "-ttl=3", "-nonempty"])
        assert (a.command, a.filer, a.dir, a.rdma_enabled, a.ttl_sec, a.ignored) == \
            ("mount", "h:1", "/m", True, 3, ["nonempty"])

    def test_help_lists_every_flag(self) -> None:
        from seaweed_rdma.mount.flags import build_parser as mount_parser

        text = mount_parser().format_help()
        for flag in ("--filer", "--dir", "--filer.path", "--rdma.enabled", "--rdma.sidecar",
                     "--rdma.fallback", "--rdma.maxConcurrent", "--rdma.timeoutMs",
                     "--rdma.busyPollUs", "--rdma.nativeReads", "--rdma.nativeThreads",
                     "--readOnly", "--cacheMetaTtlSec", "--concurrentReaders", "--allowOthers",
                     "--autoUnmount", "--readaheadMiB", "--cacheCapacityMB", "--master",
                     "--jwtKey", "--debug", "one dash or two"):
            assert flag in text, flag
