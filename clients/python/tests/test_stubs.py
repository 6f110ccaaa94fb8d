"""The checked-in gRPC stubs (src/credbroker/v1/) are exactly what
grpcio-tools 1.85.1 generates from proto/credbroker/v1/broker.proto now.
To update them after a proto change (from the repository root):

    python -m grpc_tools.protoc -I proto --python_out=clients/python/src \\
        --grpc_python_out=clients/python/src proto/credbroker/v1/broker.proto
"""

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from conftest import ROOT

STUBS = Path(__file__).resolve().parents[1] / "src" / "credbroker" / "v1"


def test_grpcio_tools_is_the_pinned_version():
    assert version("grpcio-tools") == "1.85.1"


def test_checked_in_stubs_match_the_proto(tmp_path):
    proto = ROOT / "proto"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(proto), f"--python_out={tmp_path}",
         f"--grpc_python_out={tmp_path}", str(proto / "credbroker" / "v1" / "broker.proto")],
        check=True)
    for name in ("broker_pb2.py", "broker_pb2_grpc.py"):
        fresh = (tmp_path / "credbroker" / "v1" / name).read_bytes()
        assert (STUBS / name).read_bytes() == fresh, (
            f"src/credbroker/v1/{name} differs from what grpcio-tools 1.85.1 generates from "
            "proto/credbroker/v1/broker.proto: regenerate it (see this file's docstring)")


def test_the_installed_package_carries_the_same_stubs():
    import credbroker.v1.broker_pb2 as installed
    assert Path(installed.__file__).read_bytes() == (STUBS / "broker_pb2.py").read_bytes()
