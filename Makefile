# virtnet: the two commands a fresh Debian 12 machine needs, as root: `make demo`, `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# libvirt's source test corpus is fetched at test time and cached here (never committed).
export VIRTNET_LIBVIRT_SRC_CACHE ?= $(HOME)/.cache/virtnet/libvirt-src
APT_PACKAGES := python3 python3-venv python3-dev gcc make iproute2 nftables dnsmasq-base \
	udhcpc dhcpcd-base isc-dhcp-client dpkg-dev xz-utils curl iptables graphviz \
	libvirt-daemon libvirt-daemon-system libvirt-clients qemu-system-x86

.PHONY: demo test deps venv corpus bench clean fuzz soak deb deb-check

deps: .stamp-apt
.stamp-apt:
	@if [ "$$(id -u)" != 0 ]; then echo "make: run as root (apt packages, network namespaces)"; exit 1; fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null
	@# the host's libvirt services are left as they are: the tests' own libvirtd runs in
	@# namespaces of its own (network and mount), beside a packaged one (tests/kit/libvirtd.py)
	touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml | .stamp-apt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@# nothing needs setuptools at run time (pip builds in an isolated environment), and its
	@# distutils-precedence.pth costs every `virtnet` command an import (~1.3 ms) at start-up
	$(PY) -m pip uninstall -q -y setuptools
	touch $@

corpus: venv
	$(PY) -m tests.kit.corpus --fetch

demo: venv
	bash scripts/demo.sh

test: venv corpus
	$(PY) -m pytest -q -m "not slow" tests

bench: venv corpus
	$(PY) bench/run_all.py

# hostile input: >= 100,000 definitions and command lines (bench/fuzz.py), then >= 100,000
# requests to a real virtnetd in namespaces of its own (bench/fuzz_api.py); seeded, replayable
fuzz: venv
	$(PY) bench/fuzz.py --count 100000
	$(PY) bench/fuzz_api.py --count 100000 --progress

# long runs in a namespace: 500 start/stop and 5000 port cycles, then no leak (bench/soak.py)
soak: venv
	$(PY) bench/soak.py --cycles 500 --port-cycles 5000

# the Debian package: dist/virtnet_<version>_<arch>.deb (debhelper; installs its build tools)
deb:
	bash scripts/build-deb.sh

# the package in a clean Debian 12 chroot (debootstrap, cached in build/chroot): install with
# apt from Debian 12 alone, check what it ships, purge, check nothing is left; not in `make test`
deb-check: deb
	bash scripts/deb-check.sh

clean:
	rm -rf $(VENV) .stamp-apt build *.egg-info
