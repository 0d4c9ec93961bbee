"""The test kit: what tests/ and bench/ share (libvirt's corpus, hypothesis strategies, the fuzzers,
libvirtd and virtnetd runners, NIC emulators). It stays out of the installed package, which
never imports it (tests/structure measures that)."""
