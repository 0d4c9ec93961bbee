"""virtnet.host's static surface (host/ipc.py, host/fastipc.py, host/procs.py) and the cost
of importing the package, which the thin client pays before every forwarded verb."""

from __future__ import annotations

import os
import subprocess
import sys

from virtnet.host import Host
from virtnet.host.process import Elsewhere


def test_every_static_effect_of_host_is_a_function_of_its_module() -> None:
    surface = {name: attr for klass in Host.__mro__ for name, attr in vars(klass).items()
               if isinstance(attr, Elsewhere)}
    assert {"connect_stream", "listen_unix", "send_fd", "recv_fds", "enter_netns"} <= set(surface)
    for name in surface:
        assert callable(getattr(Host, name)), name


def test_importing_the_package_loads_none_of_the_handle_modules() -> None:
    script = ("import sys; before = set(sys.modules); import virtnet.host; "
              "print(' '.join(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.split()
    # the handle-less surface (host/process.py) and nothing else: the handle loads when Host
    # is first named
    assert set(out) <= {"virtnet", "virtnet.host", "virtnet.host.process", "__future__"}, out


def test_the_namespace_identity_is_that_of_proc_self() -> None:
    st = os.stat("/proc/self/ns/net")
    assert Host.netns_identity() == (st.st_dev, st.st_ino)


def test_no_listener_means_no_connection(tmp_path) -> None:  # noqa: ANN001
    assert Host.connect_stream(str(tmp_path / "nobody.sock")) is None
