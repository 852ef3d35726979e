"""The volume map a master's ``/dir/status`` answer gives (``master.volume_map``)."""

from __future__ import annotations

from seaweed_rdma.master import volume_map


def status(*nodes: tuple[str, str]) -> dict:
    """A ``/dir/status`` answer, shaped as SeaweedFS 4.48 writes it, with these
    (Url, VolumeIds) servers in one rack."""
    return {"Topology": {"Max": 30, "Free": 20, "DataCenters": [{"Id": "dc1", "Racks": [
        {"Id": "r1", "DataNodes": [{"Url": url, "PublicUrl": url, "Volumes": 0,
                                    "EcShards": 0, "Max": 30, "VolumeIds": ids}
                                   for url, ids in nodes]}]}]},
            "Version": "8000GB 4.48"}


def test_ranges_and_single_ids_map_to_their_servers() -> None:
    got = volume_map(status(("10.0.0.1:8080", " 1-3 7"), ("10.0.0.2:8080", " 3 9-10")))
    assert got == {1: ["http://10.0.0.1:8080"], 2: ["http://10.0.0.1:8080"],
                   3: ["http://10.0.0.1:8080", "http://10.0.0.2:8080"],
                   7: ["http://10.0.0.1:8080"], 9: ["http://10.0.0.2:8080"],
                   10: ["http://10.0.0.2:8080"]}


def test_a_list_cut_short_gives_nothing() -> None:
    # The master lists at most 100 ids per server and then "...": a volume on that server
    # and another would look as if it had one replica, so nothing is taken.
    assert volume_map(status(("a:1", " 1-100 ..."), ("b:1", " 5"))) is None


def test_a_server_with_no_volumes_and_an_empty_cluster() -> None:
    assert volume_map(status(("a:1", ""), ("b:1", " 4"))) == {4: ["http://b:1"]}
    assert volume_map({"Topology": {"DataCenters": None}}) == {}


def test_answers_of_another_shape_give_nothing() -> None:
    assert volume_map({}) is None
    assert volume_map({"Topology": []}) is None
    assert volume_map(status(("a:1", "one-two"))) is None
    assert volume_map(status(("", " 1"))) is None
